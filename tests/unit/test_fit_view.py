"""``fit``: each bar's segments are labelled (a legend per model), CPU models are listed, and the
reserve is broken down into gpu_reserve_gib and the part above gpu_max_fraction."""

from __future__ import annotations

import io
import json
import re
from pathlib import Path

from daemon.cli import main
from daemon.core.units import GiB

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = str(REPO / "config.example.toml")
SNAPSHOT = str(REPO / "examples" / "observed-rag-host.json")


def run(*argv: str) -> tuple[int, str]:
    out = io.StringIO()
    code = main(list(argv), stdout=out, stderr=io.StringIO())
    return code, out.getvalue()


def test_every_model_segment_of_a_bar_is_labelled_and_has_a_legend_line() -> None:
    code, out = run("fit", EXAMPLE, "--observed", SNAPSHOT, "--width", "60")
    assert code == 0
    lines = out.splitlines()
    at = next(i for i, line in enumerate(lines) if line.strip().startswith("["))
    bar, labels = lines[at].strip()[1:-1], lines[at + 1]
    assert len(bar) == 60
    # the label row sits under the bar, one letter per model over that model's characters
    row = labels[3 : 3 + 60]
    assert re.fullmatch(r"A+B+C+ *", row), labels
    for letter in "ABC":
        span = [i for i, c in enumerate(row) if c == letter]
        assert all(bar[i] in "#=+" for i in span), (letter, bar, row)
    legend = {line.split()[0]: line.split()[1] for line in lines[at + 2 : at + 5]}
    assert legend == {"A": "chat", "B": "embed", "C": "rerank"}


def test_cpu_models_are_listed() -> None:
    _, out = run("fit", EXAMPLE, "--observed", SNAPSHOT)
    assert "CPU models" in out
    cpu = out[out.index("CPU models") :]
    assert "embed-cpu" in cpu
    assert "bge-small-en-v1.5" in cpu


def test_cpu_models_are_listed_on_a_cluster_without_gpus(tmp_path: Path) -> None:
    snap = tmp_path / "s.json"
    snap.write_text('{"format": 1, "workers": [{"address": "127.0.0.1:30001"}]}')
    cfg = tmp_path / "c.toml"
    cfg.write_text(
        '[models.e]\nmodel_name = "bge-small-en-v1.5"\nmodel_type = "embedding"\n'
        'model_engine = "sentence_transformers"\nplacement = { device = "cpu" }\n'
    )
    _, out = run("fit", str(cfg), "--observed", str(snap))
    assert "No GPUs" in out
    assert "  e " in out


def test_the_reserve_is_broken_down() -> None:
    _, out = run("fit", EXAMPLE, "--observed", SNAPSHOT)
    total = json.loads(Path(SNAPSHOT).read_text())["workers"][0]["gpus"][0]["total_bytes"]
    above = total - int(total * 0.95)
    fixed = 1.0 * GiB  # config.example.toml: gpu_reserve_gib = 1.0, gpu_max_fraction = 0.95
    assert (
        f"reserve {(fixed + above) / GiB:.2f} GiB = gpu_reserve_gib {fixed / GiB:.2f} GiB "
        f"+ {above / GiB:.2f} GiB above gpu_max_fraction 0.95" in out
    )


def test_plan_json_splits_the_reserve_and_lists_cpu_models() -> None:
    _, out = run("plan", EXAMPLE, "--observed", SNAPSHOT, "--json")
    doc = json.loads(out)
    (gpu,) = doc["gpus"]
    assert gpu["reserve_gpu_reserve_bytes"] == GiB
    assert (
        gpu["reserve_gpu_reserve_bytes"] + gpu["reserve_above_max_fraction_bytes"]
        == gpu["reserve_bytes"]
    )
    assert [m["uid"] for m in doc["cpu_models"]] == ["embed-cpu"]
