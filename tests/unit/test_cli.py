"""The command line as users and scripts see it: output, exit codes, and no tracebacks."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import pytest

from daemon.cli import main
from tests.unit.builders import llama_3_8b_hf_config

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = str(REPO / "config.example.toml")
SNAPSHOT = str(REPO / "examples" / "observed-rag-host.json")


def run(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = main(list(argv), stdout=out, stderr=err)
    return code, out.getvalue(), err.getvalue()


def test_validate_the_example() -> None:
    code, out, _ = run("validate", EXAMPLE)
    assert code == 0
    assert "valid; 4 model(s)" in out


def test_validate_an_invalid_file_exits_1_with_the_key_path(tmp_path: Path) -> None:
    bad = tmp_path / "c.toml"
    bad.write_text('[policy]\nmode = "sometimes"\n')
    code, _, err = run("validate", str(bad))
    assert code == 1
    assert "policy.mode" in err
    assert "Traceback" not in err


def test_validate_checks_every_file_it_is_given(tmp_path: Path) -> None:
    """pre-commit passes all the staged files at once: each is checked and reported."""
    bad = tmp_path / "c.toml"
    bad.write_text('[policy]\nmode = "sometimes"\n')
    code, out, err = run("validate", EXAMPLE, str(bad), str(tmp_path / "missing.toml"))
    assert code == 1
    assert "config.example.toml: valid; 4 model(s)" in out
    assert "policy.mode" in err
    assert "missing.toml: file not found" in err
    assert run("validate", EXAMPLE, EXAMPLE)[0] == 0


def test_plan_the_example_admits_everything() -> None:
    code, out, _ = run("plan", EXAMPLE, "--observed", SNAPSHOT)
    assert code == 0
    assert "All admitted." in out
    assert "+ launch   chat" in out


def test_plan_json_and_detailed_exit_code() -> None:
    code, out, _ = run("plan", EXAMPLE, "--observed", SNAPSHOT, "--json", "--detailed-exitcode")
    assert code == 2
    doc = json.loads(out)
    assert {a["uid"] for a in doc["actions"]} == {"chat", "embed-cpu"}
    # one load per GPU: the encoders wait for the LLM on their GPU
    assert {a["uid"]: a["waiting_for"] for a in doc["waiting"]} == {
        "embed": "waiting: chat is launched first on 127.0.0.1:30001/gpu0 (one load per GPU at a time)",
        "rerank": "waiting: chat is launched first on 127.0.0.1:30001/gpu0 (one load per GPU at a time)",
    }
    assert not doc["converged"]
    chat = next(a for a in doc["actions"] if a["uid"] == "chat")
    assert 0 < chat["launch_args"]["gpu_memory_utilization"] < 0.9
    assert chat["launch_args"]["max_model_len"] == 32768
    assert doc["refused"] == []


def test_detailed_exit_code_is_0_when_nothing_changes(tmp_path: Path) -> None:
    empty_cluster = tmp_path / "s.json"
    empty_cluster.write_text('{"format": 1, "workers": []}')
    cfg = tmp_path / "c.toml"
    cfg.write_text('[policy]\nmode = "observe"\n')
    code, out, _ = run("plan", str(cfg), "--observed", str(empty_cluster), "--detailed-exitcode")
    assert code == 0
    assert "No changes" in out


def test_plan_reports_a_broken_snapshot_without_a_traceback(tmp_path: Path) -> None:
    snap = tmp_path / "s.json"
    snap.write_text('{"workers": [{"address": 5}]}')
    code, _, err = run("plan", EXAMPLE, "--observed", str(snap))
    assert code == 1
    assert "workers.0.address" in err


def test_fit_draws_a_bar_per_gpu() -> None:
    code, out, _ = run("fit", EXAMPLE, "--observed", SNAPSHOT, "--width", "40")
    assert code == 0
    assert "127.0.0.1:30001/gpu0" in out
    bar = next(line for line in out.splitlines() if line.strip().startswith("["))
    assert len(bar.strip()) == 42
    assert "#" in bar
    assert "=" in bar


ESTIMATE = ["estimate", "--model", "llama-3.1-instruct", "--size", "8", "--gpu-total-gib", "79.2"]


def test_estimate_json_has_integer_byte_counts() -> None:
    code, out, _ = run(*ESTIMATE, "--json")
    assert code == 0
    doc = json.loads(out)
    for key in ("weights_bytes", "kv_bytes_per_token", "overhead_bytes"):
        assert isinstance(doc[key], int)
    assert doc["kv_bytes_per_token"] == 131072
    assert "kv_cache_tokens" not in doc


def test_estimate_both_directions(tmp_path: Path) -> None:
    cfg = tmp_path / "config.json"
    cfg.write_text(json.dumps(llama_3_8b_hf_config()))
    code, out, _ = run(
        "estimate",
        "--hf-config",
        str(cfg),
        "--gpu-total-gib",
        "79.2",
        "--weights-gib",
        "14.99",
        "--gpu-memory-utilization",
        "0.9",
        "--max-model-len",
        "131072",
        "--json",
    )
    assert code == 0
    doc = json.loads(out)
    assert doc["weights_bytes"] == round(14.99 * 1024**3)
    assert doc["kv_cache_tokens"] > 131072
    assert 0.3 < doc["required_gpu_memory_utilization"] < 0.9


@pytest.mark.parametrize(
    "argv",
    [
        ["estimate", "--model", "no-such-model", "--gpu-total-gib", "80"],
        ["estimate", "--hf-config", "/nonexistent/config.json", "--gpu-total-gib", "80"],
        [*ESTIMATE, "--gpu-memory-utilization", "1.5"],
        [*ESTIMATE, "--weights-gib", "1", "--params-billions", "8"],
        [*ESTIMATE, "--quantization", "q9_z"],
        ["plan", "/nonexistent.toml", "--observed", SNAPSHOT],
        ["frobnicate"],
    ],
)
def test_bad_arguments_exit_1_without_a_traceback(argv: list[str]) -> None:
    code, out, err = run(*argv)
    assert code == 1
    assert "Traceback" not in out + err


def test_schema_command_prints_the_committed_schema() -> None:
    code, out, _ = run("schema")
    assert code == 0
    assert out == (REPO / "schemas" / "config.schema.json").read_text()


def test_python_dash_m_daemon_runs_the_cli() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "daemon", "validate", EXAMPLE],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize(
    ("context", "gpu", "name", "tokens", "seqs"),
    [
        ("xinference", "79.2", "", 2048, 256),
        ("serve", "79.2", "NVIDIA H100 80GB HBM3", 8192, 1024),
        ("serve", "79.2", "NVIDIA A100-SXM4-80GB", 2048, 256),
        ("serve", "44.4", "NVIDIA L40S", 2048, 256),
        ("llm", "139.8", "NVIDIA H200", 16384, 1024),
        ("llm", "23.6", "NVIDIA GeForce RTX 4090", 8192, 256),
    ],
)
def test_estimate_knows_vllms_defaults_by_context_and_gpu(
    context: str, gpu: str, name: str, tokens: int, seqs: int
) -> None:
    code, out, _ = run(
        "estimate",
        "--model",
        "llama-3.1-instruct",
        "--size",
        "8",
        "--gpu-total-gib",
        gpu,
        "--gpu-name",
        name,
        "--vllm-context",
        context,
        "--json",
    )
    assert code == 0
    doc = json.loads(out)
    assert (doc["max_num_batched_tokens"], doc["max_num_seqs"]) == (tokens, seqs)


def test_version_prints_the_installed_version(capsys: pytest.CaptureFixture[str]) -> None:
    from importlib.metadata import version

    assert main(["--version"]) == 0
    assert capsys.readouterr().out == f"xinference-reconciler {version('xinference-reconciler')}\n"
