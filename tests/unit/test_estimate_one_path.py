"""`estimate` and a config's model are one estimator (issue 9, item 6). Each test failed before the
estimate command went through resolve_model/claim_on."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest

from daemon.adapters.config_file import load_config
from daemon.cli import main
from daemon.core.demand import claim_on
from daemon.core.units import GiB

GPU_GIB = "47.5"


def estimate(*argv: str) -> tuple[int, dict[str, Any], str]:
    out, err = io.StringIO(), io.StringIO()
    code = main(["estimate", *argv, "--gpu-total-gib", GPU_GIB, "--json"], stdout=out, stderr=err)
    return code, (json.loads(out.getvalue()) if code == 0 else {}), err.getvalue()


def config_claim(tmp_path: Path, table: str, vllm: str | None = None) -> Any:
    path = tmp_path / "config.toml"
    path.write_text(table)
    loaded = load_config(path)
    (demand,) = loaded.demands.values()
    total = round(float(GPU_GIB) * GiB)
    if vllm is None:
        return claim_on(demand, total)
    from daemon.core.vllm_rules import rules_for  # imported here: the other tests also ran on main

    return claim_on(demand, total, rules=rules_for(vllm))


def test_llama_cpp_gguf_answers_the_same_in_estimate_and_in_a_config(tmp_path: Path) -> None:
    """Before: `estimate` guessed GGUF from the quantization name and answered, while the same
    model in a config was refused ("unknown quantization 'Q4_K_M' for format 'pytorch')."""
    claim = config_claim(
        tmp_path,
        """
[models.q]
model_name = "qwen2.5-instruct"
model_engine = "llama.cpp"
model_size_in_billions = 7
quantization = "Q4_K_M"
""",
    )
    code, doc, err = estimate(
        "--model",
        "qwen2.5-instruct",
        "--size",
        "7",
        "--engine",
        "llama.cpp",
        "--quantization",
        "Q4_K_M",
    )
    assert code == 0, err
    assert doc["holds_bytes"] == claim.bytes
    assert doc["weights_bytes"] == claim.footprint.weights_bytes


def test_an_encoder_gets_the_same_overhead_in_estimate_and_in_fit(tmp_path: Path) -> None:
    """Before: bge-m3 on sentence_transformers got vLLM's batch limits in `estimate` (23.6 GiB of
    overhead) and a batch of 32 texts in `fit` (2.3 GiB)."""
    claim = config_claim(
        tmp_path,
        """
[models.embed]
model_name = "bge-m3"
model_type = "embedding"
model_engine = "sentence_transformers"
""",
    )
    code, doc, err = estimate("--model", "bge-m3", "--engine", "sentence_transformers")
    assert code == 0, err
    assert doc["overhead_bytes"] == claim.footprint.overhead_bytes
    assert doc["overhead_bytes"] < 3 * GiB
    assert doc["model_type"] == "embedding"
    assert doc["holds_bytes"] == claim.bytes


@pytest.mark.parametrize("engine", ["transformers", "llama.cpp", "sentence_transformers"])
def test_engines_without_a_utilization_are_not_given_one(engine: str) -> None:
    """Before: `estimate` printed a required gpu_memory_utilization for every engine."""
    model = (
        ["--model", "bge-m3"]
        if engine == "sentence_transformers"
        else [
            "--model",
            "qwen2.5-instruct",
            "--size",
            "0.5",
        ]
    )
    quant = ["--quantization", "Q8_0"] if engine == "llama.cpp" else []
    code, doc, err = estimate(*model, *quant, "--engine", engine, "--max-model-len", "2048")
    assert code == 0, err
    assert not [k for k in doc if "utilization" in k]
    assert doc["holds_bytes"] > doc["weights_bytes"]


def test_a_utilization_for_such_an_engine_is_refused_as_the_config_refuses_it() -> None:
    out, err = io.StringIO(), io.StringIO()
    code = main(
        [
            "estimate",
            "--model",
            "qwen2.5-instruct",
            "--size",
            "0.5",
            "--engine",
            "transformers",
            "--gpu-total-gib",
            GPU_GIB,
            "--gpu-memory-utilization",
            "0.5",
        ],
        stdout=out,
        stderr=err,
    )
    assert code == 1
    assert "--gpu-memory-utilization: only vLLM and SGLang take a utilization" in err.getvalue()
    assert "Traceback" not in err.getvalue()


def test_vllm_in_estimate_and_in_a_config_claim_the_same_for_each_version(tmp_path: Path) -> None:
    table = """
[models.chat]
model_name = "qwen2.5-instruct"
model_engine = "vLLM"
model_format = "awq"
model_size_in_billions = 32
quantization = "Int4"
[models.chat.memory]
max_model_len = 32768
gpu_memory_utilization = "minimum"
"""
    for version in (None, "0.8.5", "0.11.0", "0.30.0"):
        claim = config_claim(tmp_path, table, version)
        extra = ["--vllm-version", version] if version else []
        code, doc, err = estimate(
            "--model",
            "qwen2.5-instruct",
            "--size",
            "32",
            "--model-format",
            "awq",
            "--quantization",
            "Int4",
            "--max-model-len",
            "32768",
            *extra,
        )
        assert code == 0, err
        assert doc["required_gpu_memory_utilization"] == claim.utilization, version
        assert doc["overhead_bytes"] == claim.footprint.overhead_bytes, version
        assert doc.get("kv_cache_memory_bytes") == claim.kv_cache_bytes, version
        assert doc["vllm_rules"] == claim.rules.key


def test_a_bad_vllm_version_is_a_clear_error(capsys: pytest.CaptureFixture[str]) -> None:
    out, err = io.StringIO(), io.StringIO()
    code = main(
        [
            "estimate",
            "--model",
            "qwen2.5-instruct",
            "--size",
            "7",
            "--gpu-total-gib",
            "24",
            "--vllm-version",
            "latest",
        ],
        stdout=out,
        stderr=err,
    )
    assert code == 1
    said = err.getvalue() + capsys.readouterr().err  # argparse writes to sys.stderr itself
    assert "--vllm-version: expected a vLLM release such as '0.11.0'" in said
