"""Config validation: every bad input gets a specific message (file, key path, expectation) and no
traceback; secrets are never echoed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from daemon.adapters.config_file import load_config
from daemon.errors import ConfigError, ConfigSyntaxError, ConfigValidationError

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "config.example.toml"

MINIMAL = """
[models.chat]
model_name = "qwen2.5-instruct"
model_engine = "vLLM"
model_size_in_billions = 7
"""


def write(tmp_path: Path, text: str | bytes, name: str = "config.toml") -> Path:
    path = tmp_path / name
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text)
    return path


def problems(path: Path) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_config(path)
    return [str(p) for p in info.value.problems]


def test_the_example_is_valid_and_resolves_every_model() -> None:
    loaded = load_config(EXAMPLE)
    assert set(loaded.demands) == {"chat", "embed", "rerank", "embed-cpu"}
    assert loaded.config.policy.mode == "enforce"


def test_minimal_config_gets_safe_defaults(tmp_path: Path) -> None:
    loaded = load_config(write(tmp_path, MINIMAL))
    policy = loaded.config.policy
    assert (policy.mode, policy.prune, policy.on_empty_config) == ("observe", "managed", "keep")


def test_toml_syntax_error_has_line_and_column(tmp_path: Path) -> None:
    path = write(tmp_path, MINIMAL + "\nbroken = = 2\nmore = 1\n")
    with pytest.raises(ConfigSyntaxError) as info:
        load_config(path)
    text = str(info.value)
    assert str(path) in text
    assert "line" in text
    assert "column" in text


def test_schema_error_names_the_key_path_and_the_expectation(tmp_path: Path) -> None:
    text = MINIMAL + '[models.chat.memory]\nmax_model_len = "long"\n'
    found = problems(write(tmp_path, text))
    assert any("models.chat.memory.max_model_len" in p and "valid integer" in p for p in found)


def test_unknown_key_lists_the_expected_ones(tmp_path: Path) -> None:
    found = problems(write(tmp_path, MINIMAL + "[models.chat.memory]\nmax_len = 4096\n"))
    assert any("models.chat.memory.max_len" in p and "max_model_len" in p for p in found)


def test_every_problem_is_reported_at_once(tmp_path: Path) -> None:
    text = MINIMAL + 'replicas = 0\n[policy]\nmode = "yolo"\n'
    found = problems(write(tmp_path, text))
    assert any("models.chat.replicas" in p for p in found)
    assert any("policy.mode" in p and "'observe'" in p for p in found)


@pytest.mark.parametrize(
    ("extra", "path", "message"),
    [
        (
            "[models.chat.memory]\ngpu_memory_utilization = 1.5\n",
            "models.chat.memory.gpu_memory_utilization",
            "(0, 1]",
        ),
        (
            "[models.chat.memory]\ngpu_memory_utilization = 0.0\n",
            "models.chat.memory.gpu_memory_utilization",
            "(0, 1]",
        ),
        (
            '[models.chat.placement]\ndevice = "cpu"\n',
            "models.chat.placement.device",
            "needs a GPU",
        ),
        (
            "[models.chat.placement]\ngpu_indexes = [0, 1]\n",
            "models.chat.placement.gpu_indexes",
            "expected 1 indexes",
        ),
        (
            "[models.chat.engine_args]\ngpu_memory_utilization = 0.5\n",
            "models.chat.engine_args.gpu_memory_utilization",
            "memory.gpu_memory_utilization",
        ),
        ("[models.chat.placement]\ngpus = 3\n", "models.chat.placement.gpus", "must divide"),
        ('quantization = "Q9_Z"\n', "models.chat.quantization", "unknown quantization"),
    ],
)
def test_cross_field_rules(tmp_path: Path, extra: str, path: str, message: str) -> None:
    found = problems(write(tmp_path, MINIMAL + extra))
    assert any(path in p and message in p for p in found), found


def test_engine_must_serve_the_model_type(tmp_path: Path) -> None:
    text = MINIMAL.replace('"vLLM"', '"llama.cpp"') + 'model_type = "rerank"\n'
    found = problems(write(tmp_path, text))
    assert any("models.chat.model_engine" in p and "does not serve rerank" in p for p in found)


def test_llm_without_engine_is_refused(tmp_path: Path) -> None:
    found = problems(write(tmp_path, '[models.x]\nmodel_name = "qwen2.5-instruct"\n'))
    assert any("models.x.model_engine" in p and "required for LLMs" in p for p in found)


def test_unknown_model_without_architecture_says_how_to_fix_it(tmp_path: Path) -> None:
    text = '[models.x]\nmodel_name = "my-private-llm"\nmodel_engine = "vLLM"\n'
    found = problems(write(tmp_path, text))
    assert any("models.x.architecture" in p and "hf_config" in p for p in found)


def test_hf_config_path_is_read_relative_to_the_config(tmp_path: Path) -> None:
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "config.json").write_text(
        '{"model_type": "llama", "num_hidden_layers": 2, "hidden_size": 64, '
        '"num_attention_heads": 4, "intermediate_size": 128, "vocab_size": 1000}'
    )
    text = (
        '[models.x]\nmodel_name = "tiny"\nmodel_engine = "Transformers"\n'
        '[models.x.architecture]\nhf_config = "m/config.json"\n'
    )
    assert load_config(write(tmp_path, text)).demands["x"].architecture is not None
    broken = text.replace("m/config.json", "m/missing.json")
    assert any(
        "architecture.hf_config" in p and "not found" in p
        for p in problems(write(tmp_path, broken))
    )


@pytest.mark.parametrize(
    ("uid", "message"),
    [("chat-rep1", "-rep<N>"), ("x" * 101, "at most 100")],
)
def test_xinference_uid_rules(tmp_path: Path, uid: str, message: str) -> None:
    text = MINIMAL.replace("[models.chat]", f'[models."{uid}"]')
    assert any(message in p for p in problems(write(tmp_path, text)))


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "empty"),
        (b"   \n\n", "empty"),
        (b"\x00\x01\x02binary", "binary"),
        (b'[models.x]\nmodel_name = "\xff\xfe"\n', "not valid UTF-8"),
    ],
)
def test_unusable_files_get_a_clear_message(tmp_path: Path, content: bytes, message: str) -> None:
    found = problems(write(tmp_path, content))
    assert any(message in p for p in found)


def test_missing_file_and_directory(tmp_path: Path) -> None:
    assert any("file not found" in p for p in problems(tmp_path / "nope.toml"))
    assert any("is a directory" in p for p in problems(tmp_path))


def test_secrets_in_the_file_are_refused_without_echoing_them(tmp_path: Path) -> None:
    secret = "hunter2-marker-9f1c"
    text = MINIMAL + f'[cluster.auth]\nmode = "password"\nusername = "u"\npassword = "{secret}"\n'
    with pytest.raises(ConfigValidationError) as info:
        load_config(write(tmp_path, text))
    message = str(info.value)
    assert "cluster.auth.password" in message
    assert "password_env" in message
    assert secret not in message


def test_credentials_in_the_endpoint_url_are_refused_without_echoing_them(tmp_path: Path) -> None:
    secret = "s3cr3t-marker-77"
    text = f'[cluster]\nendpoint = "http://admin:{secret}@127.0.0.1:9997"\n' + MINIMAL
    message = "\n".join(problems(write(tmp_path, text)))
    assert "cluster.endpoint" in message
    assert secret not in message


def test_password_mode_needs_exactly_one_secret_source(tmp_path: Path) -> None:
    text = MINIMAL + '[cluster.auth]\nmode = "password"\nusername = "u"\n'
    assert any("exactly one of" in p for p in problems(write(tmp_path, text)))


def test_enforce_with_an_api_key_is_refused_with_the_reason(tmp_path: Path) -> None:
    text = (
        MINIMAL
        + '[policy]\nmode = "enforce"\n[cluster.auth]\nmode = "api_key"\napi_key_env = "XR_KEY"\n'
    )
    found = problems(write(tmp_path, text))
    assert any("policy.mode" in p and "API keys only read" in p for p in found)
    observe = text.replace('mode = "enforce"', 'mode = "observe"')
    assert load_config(write(tmp_path, observe)).config.cluster.auth.mode == "api_key"


@pytest.mark.parametrize(
    ("text", "where", "message"),
    [
        (
            '[cluster]\nvllm_version = "latest"\n',
            "cluster.vllm_version",
            "expected a vLLM release such as '0.11.0'",
        ),
        (
            "[cluster]\nvllm_version = 0.11\n",
            "cluster.vllm_version",
            'write the version as a quoted string, e.g. vllm_version = "0.11.0"',
        ),
        (
            '[cluster.workers."10.0.0.5"]\nvllm_version = "0.11.x"\n',
            "cluster.workers.10.0.0.5.vllm_version",
            "expected a vLLM release",
        ),
        (
            '[cluster.workers."10.0.0.5"]\nvlm_version = "0.11.0"\n',
            "cluster.workers.10.0.0.5.vlm_version",
            "unknown key; expected one of: vllm_version",
        ),
        (
            '[cluster.workers."a b"]\nvllm_version = "0.11.0"\n',
            "cluster.workers.a b",
            "expected a worker address",
        ),
    ],
)
def test_vllm_versions_are_checked_with_their_key_path(
    tmp_path: Path, text: str, where: str, message: str
) -> None:
    (problem,) = problems(write(tmp_path, text))
    assert f"{where}: " in problem
    assert message in problem
    assert "Traceback" not in problem


def test_declared_vllm_versions_are_accepted(tmp_path: Path) -> None:
    text = (
        '[cluster]\nvllm_version = "0.10.2rc1"\n'
        '[cluster.workers."10.0.0.5:30001"]\nvllm_version = "0.11.0"\n'
    )
    loaded = load_config(write(tmp_path, text))
    assert loaded.config.cluster.workers["10.0.0.5:30001"].vllm_version == "0.11.0"


def test_a_multimodal_config_whose_text_config_leaves_out_class_defaults_resolves(
    tmp_path: Path,
) -> None:
    """Gemma 3's real config.json: its text_config has no vocab_size (the class default 262208)
    and, for the 4B model, no head counts. It used to be refused: "missing 'vocab_size'"."""
    (tmp_path / "config.json").write_text(
        json.dumps(
            {
                "architectures": ["Gemma3ForConditionalGeneration"],
                "model_type": "gemma3",
                "mm_tokens_per_image": 256,
                "text_config": {
                    "hidden_size": 2560,
                    "intermediate_size": 10240,
                    "model_type": "gemma3_text",
                    "num_hidden_layers": 34,
                    "rope_scaling": {"factor": 8.0, "rope_type": "linear"},
                    "sliding_window": 1024,
                },
                "torch_dtype": "bfloat16",
                "vision_config": {"hidden_size": 1152, "model_type": "siglip_vision_model"},
            }
        )
    )
    text = """
[models.g]
model_name = "gemma-3-it"
model_engine = "vLLM"
[models.g.architecture]
hf_config = "config.json"
"""
    (demand,) = load_config(write(tmp_path, text)).demands.values()
    arch = demand.architecture
    assert arch is not None
    assert (arch.vocab_size, arch.num_attention_heads, arch.num_kv_heads, arch.head_dim) == (
        262208,
        8,
        4,
        256,
    )
    assert (arch.sliding_layers, arch.full_attention_layers) == (29, 5)
    assert arch.is_multimodal
