"""Lossless adoption: ``import`` writes the custom registrations it finds, keeps what this tool
launched in sync (no replace planned), and writes a ``#:schema`` line only when it points at a
schema that exists; the imported file rebuilds the cluster on a server that lost everything."""

from __future__ import annotations

import io
import sys
from pathlib import Path
from typing import Any

import pytest

from daemon.adapters.config_file import check_config
from daemon.adapters.state_file import StateStore
from daemon.cli import main
from daemon.core.adoption import imported_config
from daemon.core.custom import registration_json
from daemon.core.desired import Config
from daemon.core.drift import State
from daemon.core.observed import ObservedState
from daemon.core.planning import plan
from daemon.reconciler import Options, reconcile_once
from daemon.testing.builders import gpu_worker
from daemon.testing.fake_cluster import FakeCluster
from tests.unit.builders import config, demands, model

if sys.version_info >= (3, 11):
    import tomllib
else:  # Python 3.10: the same parser, published as tomli
    import tomli as tomllib

W1 = "127.0.0.1:30001"
CUSTOM_EMB: dict[str, Any] = {
    "model_name": "my-embedder",
    "model_type": "embedding",
    "model_engine": "sentence_transformers",
    "placement": {"device": "cpu"},
    "custom": {"model_uri": "/models/emb", "spec": {"dimensions": 384, "max_tokens": 256}},
}
CUSTOM_LLM: dict[str, Any] = {
    "model_name": "my-llm",
    "model_engine": "Transformers",
    "model_size_in_billions": 0.5,
    "placement": {"device": "cpu"},
    "memory": {"max_model_len": 2048},
    "custom": {
        "model_uri": "/models/llm",
        "spec": {"model_family": "qwen2.5-instruct", "stop": ["<|im_end|>"]},
    },
}
OURS = {
    "chat": {
        "model_name": "qwen2.5-instruct",
        "model_engine": "vLLM",
        "model_size_in_billions": 7,
        "memory": {"max_model_len": 8192, "gpu_memory_utilization": "minimum"},
        "engine_args": {"enable_prefix_caching": True},
    },
    "emb": CUSTOM_EMB,
    "llm": CUSTOM_LLM,
    "fixed": model(gib=4),
}


def converge(fake: FakeCluster, store: StateStore, cfg: Config) -> ObservedState:
    for _ in range(6):
        report = reconcile_once(
            config=cfg, demands=demands(cfg), cluster=fake, store=store, opts=Options(act=True)
        )
        if report.converged:
            return report.observed
    raise AssertionError(report.convergence)


def registrations_of(fake: FakeCluster, observed: ObservedState) -> dict[tuple[str, str], Any]:
    """What cmd_import gathers: the stored spec of every running model that is not built in."""
    out = {}
    for m in observed.models:
        stored = fake.registration(m.model_type or "", m.model_name)
        if stored is not None and stored.get("is_builtin") is False:
            out[(m.model_type or "", m.model_name)] = stored
    return out


@pytest.fixture
def rig(tmp_path: Path) -> tuple[FakeCluster, StateStore, ObservedState]:
    fake = FakeCluster(
        (gpu_worker(W1, 80),), known_models=frozenset({"qwen2.5-instruct", "m"}), polls_to_ready=1
    )
    fake.start_by_hand("theirs", model_name="m", model_type="LLM", engine="Transformers")
    store = StateStore(tmp_path / "state")
    observed = converge(fake, store, config(OURS, prune="none"))
    return fake, store, observed


def imported(rig: tuple[FakeCluster, StateStore, ObservedState]) -> Config:
    fake, store, observed = rig
    doc = imported_config(
        observed,
        endpoint="http://127.0.0.1:9997",
        auth={"mode": "none"},
        records=store.load().records,
        registrations=registrations_of(fake, observed),
    )
    loaded, _ = check_config(doc, name="imported", base_dir=Path("."))
    return loaded


def test_importing_over_models_this_tool_launched_plans_no_replace(
    rig: tuple[FakeCluster, StateStore, ObservedState],
) -> None:
    cfg = imported(rig)
    assert set(cfg.models) == {"chat", "emb", "llm", "fixed", "theirs"}
    p = plan(cfg, demands(cfg), rig[2])
    assert not p.actions, p.actions
    assert {s.uid: s.state for s in p.statuses} == dict.fromkeys(cfg.models, State.IN_SYNC)
    assert cfg.models["chat"].engine_args == {"enable_prefix_caching": True}


def test_import_writes_the_custom_registrations_it_finds(
    rig: tuple[FakeCluster, StateStore, ObservedState],
) -> None:
    cfg = imported(rig)
    fake = rig[0]
    for uid, (kind, name) in {
        "emb": ("embedding", "my-embedder"),
        "llm": ("LLM", "my-llm"),
    }.items():
        custom = cfg.models[uid].custom
        assert custom is not None
        assert custom.model_uri == fake.registrations[(kind, name)]["model_specs"][0]["model_uri"]
        assert registration_json(cfg.models[uid]) == fake.registrations[(kind, name)]


def test_a_hand_registered_custom_model_is_adopted_with_its_registration(tmp_path: Path) -> None:
    """Not launched by this tool: its registration comes from the server alone."""
    fake = FakeCluster((gpu_worker(W1),), known_models=frozenset())
    stored = {
        "version": 2,
        "model_name": "hand-emb",
        "dimensions": 384,
        "max_tokens": 256,
        "language": ["en"],
        "model_ability": [],
        "model_specs": [
            {
                "model_format": "pytorch",
                "model_hub": "huggingface",
                "model_id": None,
                "model_uri": "/models/hand",
                "model_revision": None,
                "quantization": "none",
            }
        ],
        "cache_config": None,
        "virtualenv": None,
    }
    fake.register("embedding", stored)
    fake.start_by_hand("h", model_name="hand-emb", model_type="embedding")
    workers, models = fake.observe()
    observed = ObservedState(workers=workers, models=models)
    doc = imported_config(
        observed,
        endpoint="http://127.0.0.1:9997",
        auth={"mode": "none"},
        registrations=registrations_of(fake, observed),
    )
    cfg, _ = check_config(doc, name="imported", base_dir=Path("."))
    custom = cfg.models["h"].custom
    assert custom is not None
    assert custom.model_uri == "/models/hand"
    assert custom.spec["dimensions"] == 384
    fresh = FakeCluster((gpu_worker(W1),), known_models=frozenset())
    enforce = Config.model_validate(
        {**cfg.model_dump(), "policy": {"mode": "enforce", "prune": "none"}}
    )
    converge(fresh, StateStore(tmp_path / "s2"), enforce)
    assert fresh.registrations[("embedding", "hand-emb")]["model_specs"][0]["model_uri"] == (
        "/models/hand"
    )


def test_the_imported_file_rebuilds_the_cluster_on_a_server_that_lost_everything(
    rig: tuple[FakeCluster, StateStore, ObservedState], tmp_path: Path
) -> None:
    cfg = imported(rig)
    enforce = Config.model_validate(
        {**cfg.model_dump(), "policy": {"mode": "enforce", "prune": "none"}}
    )
    fresh = FakeCluster((gpu_worker(W1, 80),), known_models=frozenset({"qwen2.5-instruct", "m"}))
    converge(fresh, StateStore(tmp_path / "fresh-state"), enforce)
    before = rig[0]
    assert set(fresh.instances) == set(before.instances)
    for uid, inst in before.instances.items():
        assert (fresh.instances[uid].model_name, fresh.instances[uid].body) == (
            inst.model_name,
            inst.body,
        ) or uid == "theirs"
    assert set(fresh.registrations) == set(before.registrations)


def import_cli(
    monkeypatch: pytest.MonkeyPatch, fake: FakeCluster, *argv: str
) -> tuple[int, str, str]:
    monkeypatch.setattr("daemon.cli.live.XinferenceAdapter", lambda **_: fake)
    out, err = io.StringIO(), io.StringIO()
    code = main(["import", "--endpoint", "http://127.0.0.1:9997", *argv], stdout=out, stderr=err)
    return code, out.getvalue(), err.getvalue()


def test_the_schema_directive_is_written_only_when_it_points_at_a_schema(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    fake = FakeCluster((gpu_worker(W1),), known_models=frozenset({"m"}))
    fake.start_by_hand("a", model_name="m", model_type="embedding")
    state = ["--state-dir", str(tmp_path / "state")]
    bare = tmp_path / "bare"
    bare.mkdir()
    code, _, err = import_cli(monkeypatch, fake, "-o", str(bare / "config.toml"), *state)
    assert code == 0, err
    text = (bare / "config.toml").read_text()
    assert not text.startswith("#:schema"), "it would point at a file that does not exist"
    assert "xinference-reconciler schema > schemas/config.schema.json" in text
    tomllib.loads(text)
    repo = tmp_path / "repo"
    (repo / "schemas").mkdir(parents=True)
    (repo / "schemas" / "config.schema.json").write_text("{}")
    code, _, err = import_cli(monkeypatch, fake, "-o", str(repo / "config.toml"), *state)
    assert code == 0, err
    first = (repo / "config.toml").read_text().splitlines()[0]
    assert first == "#:schema ./schemas/config.schema.json"


def test_import_reads_this_tools_state_to_keep_its_launches_in_sync(
    monkeypatch: pytest.MonkeyPatch,
    rig: tuple[FakeCluster, StateStore, ObservedState],
    tmp_path: Path,
) -> None:
    fake, store, _ = rig
    out_file = tmp_path / "imported.toml"
    code, _, err = import_cli(
        monkeypatch, fake, "-o", str(out_file), "--state-dir", str(store.path.parent)
    )
    assert code == 0, err
    doc = tomllib.loads(out_file.read_text())
    assert doc["models"]["chat"]["memory"]["gpu_memory_utilization"] == "minimum"
    assert doc["models"]["emb"]["custom"]["model_uri"] == "/models/emb"
