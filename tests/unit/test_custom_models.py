"""Custom models (served from local paths) as first-class: every missing key reported in one
``validate`` run, errors that point to ``placement.device`` for a host without GPUs, the
registrations a pass will make shown by ``plan`` (text and JSON), the commented example in
config.example.toml valid."""

from __future__ import annotations

import io
import json
import re
import sys
from pathlib import Path
from typing import Any

import pytest

from daemon.adapters.config_file import load_config
from daemon.adapters.state_file import StateStore
from daemon.cli import main
from daemon.errors import ConfigError
from daemon.reconciler import Options, reconcile_once
from daemon.testing.builders import gpu_worker
from daemon.testing.fake_cluster import FakeCluster
from tests.unit.builders import config, demands

if sys.version_info >= (3, 11):
    import tomllib
else:  # Python 3.10: the same parser, published as tomli
    import tomli as tomllib

REPO = Path(__file__).resolve().parents[2]
W1 = "127.0.0.1:30001"


def run(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = main(list(argv), stdout=out, stderr=err)
    return code, out.getvalue(), err.getvalue()


def problems(tmp_path: Path, text: str) -> list[str]:
    path = tmp_path / "c.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    return [p.location + ": " + p.message for p in info.value.problems]


def test_every_missing_key_is_reported_in_one_run(tmp_path: Path) -> None:
    found = problems(
        tmp_path,
        """
[policy]
mode = "sometimes"
[models.emb]
model_name = "my-emb"
model_type = "embedding"
model_engine = "sentence_transformers"
placement = { device = "cpu" }
[models.emb.custom]
spec = {}
[models.llm]
model_name = "my-llm"
model_engine = "Transformers"
placement = { device = "cpu" }
[models.llm.custom]
model_uri = "/models/llm"
""",
    )
    where = {p.split(":")[0] for p in found}
    assert where == {
        "policy.mode",
        "models.emb.custom.model_uri",
        "models.emb.custom.spec.dimensions",
        "models.emb.custom.spec.max_tokens",
        "models.llm.custom.spec.model_family",
        "models.llm.model_size_in_billions",
    }, found


def test_a_custom_model_on_the_default_device_is_pointed_to_placement_device(
    tmp_path: Path,
) -> None:
    found = problems(
        tmp_path,
        """
[models.emb]
model_name = "my-emb"
model_type = "embedding"
model_engine = "sentence_transformers"
[models.emb.custom]
model_uri = "/models/emb"
spec = { dimensions = 384, max_tokens = 256 }
""",
    )
    (problem,) = found
    assert 'placement.device = "cpu"' in problem
    assert "architecture.hf_config" in problem  # the GPU way stays explained


def test_a_catalogue_model_on_a_cluster_without_gpus_is_pointed_to_placement_device(
    tmp_path: Path,
) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text(
        '[models.e]\nmodel_name = "bge-small-en-v1.5"\nmodel_type = "embedding"\n'
        'model_engine = "sentence_transformers"\n'
    )
    snap = tmp_path / "s.json"
    snap.write_text(json.dumps({"format": 1, "workers": [{"address": W1}]}))
    _, out, _ = run("plan", str(cfg), "--observed", str(snap))
    assert 'placement.device = "cpu"' in out


CUSTOM: dict[str, Any] = {
    "model_name": "my-embedder",
    "model_type": "embedding",
    "model_engine": "sentence_transformers",
    "placement": {"device": "cpu"},
    "custom": {"model_uri": "/models/a", "spec": {"dimensions": 384, "max_tokens": 256}},
}


def test_plan_shows_the_registrations_the_pass_will_make(tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text(
        "[models.e1]\n"
        'model_name = "my-embedder"\nmodel_type = "embedding"\n'
        'model_engine = "sentence_transformers"\nplacement = { device = "cpu" }\n'
        'custom = { model_uri = "/models/a", spec = { dimensions = 384, max_tokens = 256 } }\n'
        "[models.e2]\n"
        'model_name = "my-embedder"\nmodel_type = "embedding"\n'
        'model_engine = "sentence_transformers"\nplacement = { device = "cpu" }\n'
        'custom = { model_uri = "/models/a", spec = { dimensions = 384, max_tokens = 256 } }\n'
    )
    snap = tmp_path / "s.json"
    snap.write_text(json.dumps({"format": 1, "workers": [{"address": W1}]}))
    _, out, _ = run("plan", str(cfg), "--observed", str(snap))
    (line,) = [x for x in out.splitlines() if x.startswith("  + register")]
    assert "+ register my-embedder (embedding) from /models/a" in line
    assert "for e1, e2" in line
    code, out, _ = run("plan", str(cfg), "--observed", str(snap), "--json")
    assert code == 0
    (registration,) = json.loads(out)["registrations"]
    assert registration["model_name"] == "my-embedder"
    assert registration["model_type"] == "embedding"
    assert registration["model_uri"] == "/models/a"
    assert registration["for"] == ["e1", "e2"]
    assert registration["reason"]


def test_a_snapshot_that_lists_the_registration_plans_none(tmp_path: Path) -> None:
    """A registration this tool made with the file's spec (the state file's digest) is kept."""
    store = StateStore(tmp_path / "state")
    fake = FakeCluster((gpu_worker(W1),), known_models=frozenset())
    cfg = config({"e1": CUSTOM})
    for _ in range(3):
        reconcile_once(
            config=cfg, demands=demands(cfg), cluster=fake, store=store, opts=Options(act=True)
        )
    assert ("embedding", "my-embedder") in fake.registrations
    two = config({"e1": CUSTOM, "e2": CUSTOM})
    report = reconcile_once(
        config=two, demands=demands(two), cluster=fake, store=store, opts=Options(act=False)
    )
    assert [a.uid for a in report.plan.actions] == ["e2"]
    assert report.plan.registrations == ()
    fake.registrations.clear()  # the server lost its registrations (a fresh server)
    report = reconcile_once(
        config=two, demands=demands(two), cluster=fake, store=store, opts=Options(act=False)
    )
    (registration,) = report.plan.registrations
    assert registration.reason == "not registered on the server"
    assert registration.uids == ("e2",)


def test_a_registration_changed_in_the_file_is_planned_again(tmp_path: Path) -> None:
    store = StateStore(tmp_path / "state")
    fake = FakeCluster((gpu_worker(W1),), known_models=frozenset())
    cfg = config({"e1": CUSTOM})
    for _ in range(3):
        reconcile_once(
            config=cfg, demands=demands(cfg), cluster=fake, store=store, opts=Options(act=True)
        )
    moved = config({"e1": {**CUSTOM, "custom": {**CUSTOM["custom"], "model_uri": "/models/b"}}})
    report = reconcile_once(
        config=moved, demands=demands(moved), cluster=fake, store=store, opts=Options(act=False)
    )
    (registration,) = report.plan.registrations
    assert "changed" in registration.reason
    assert report.plan.statuses[0].state == "changed"


def example_custom_block() -> str:
    """The commented-out custom-model tables of config.example.toml, uncommented (``## `` lines
    are prose)."""
    text = (REPO / "config.example.toml").read_text()
    block = text[text.index("# --- Custom models") :].splitlines()[1:]
    return "\n".join(re.sub(r"^# ?", "", x) for x in block if not x.startswith("##"))


def test_the_commented_custom_models_of_the_example_are_valid(tmp_path: Path) -> None:
    block = example_custom_block()
    doc = tomllib.loads(block)
    kinds = {spec.get("model_type", "LLM") for spec in doc["models"].values()}
    assert kinds == {"embedding", "rerank", "LLM"}
    assert all("model_uri" in spec["custom"] for spec in doc["models"].values())
    path = tmp_path / "c.toml"
    path.write_text(block)
    loaded = load_config(path)
    assert len(loaded.config.models) == 3


def readme_custom_example() -> str:
    """The worked example of README.md's "Custom models" section (its TOML block)."""
    text = (REPO / "README.md").read_text()
    section = text[text.index("## Custom models") :]
    return section.split("```toml\n", 1)[1].split("```", 1)[0]


def test_the_readme_custom_example_validates_and_plans_on_a_cpu_only_host(tmp_path: Path) -> None:
    cfg = tmp_path / "config.toml"
    cfg.write_text(readme_custom_example())
    assert run("validate", str(cfg))[0] == 0
    snap = tmp_path / "s.json"
    snap.write_text(json.dumps({"format": 1, "workers": [{"address": W1}]}))
    code, out, _ = run("plan", str(cfg), "--observed", str(snap), "--json")
    assert code == 0
    doc = json.loads(out)
    assert doc["refused"] == []
    assert {a["uid"] for a in doc["actions"]} == {"search-embed", "notes-embed", "chat"}
    assert len(doc["registrations"]) == 3
