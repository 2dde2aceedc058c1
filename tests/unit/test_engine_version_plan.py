"""The plan knows each worker's vLLM: where the version comes from, and what it changes at launch."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from daemon.core.desired import ClusterConfig, Config
from daemon.core.footprint import kv_layout
from daemon.core.observed import ObservedState, Worker
from daemon.core.units import GiB
from daemon.core.vllm_rules import UNKNOWN, rules_for
from daemon.core.worker_versions import worker_vllm
from daemon.testing.builders import gpu_worker
from tests.unit.builders import TINY_ARCH, demands, plan_for

W1 = "10.0.0.5:30001"


def cluster_config(**cluster: Any) -> ClusterConfig:
    return ClusterConfig.model_validate(cluster)


def test_a_running_models_report_wins_over_the_declarations_and_disagreement_is_noted() -> None:
    worker = Worker(address=W1, vllm_version="0.11.2")
    known = worker_vllm(cluster_config(vllm_version="0.10.1"), worker)
    assert (known.version, known.rules.key) == ("0.11.2", "R6")
    assert known.note is not None
    assert "cluster.vllm_version says vLLM 0.10.1" in known.note


def test_a_workers_declaration_beats_the_clusters_and_the_full_address_beats_the_host() -> None:
    cfg = cluster_config(
        vllm_version="0.8.5",
        workers={"10.0.0.5": {"vllm_version": "0.10.2"}, W1: {"vllm_version": "0.11.0"}},
    )
    assert worker_vllm(cfg, Worker(address=W1)).version == "0.11.0"
    assert worker_vllm(cfg, Worker(address="10.0.0.5:30002")).version == "0.10.2"
    assert worker_vllm(cfg, Worker(address="10.0.0.6:30001")).version == "0.8.5"
    assert worker_vllm(cfg, Worker(address=W1)).source.startswith("declared")


def test_no_version_anywhere_is_unknown_and_a_release_outside_the_table_is_noted() -> None:
    assert worker_vllm(cluster_config(), Worker(address=W1)).rules is UNKNOWN
    future = worker_vllm(cluster_config(vllm_version="0.40.0"), Worker(address=W1))
    assert future.rules is UNKNOWN
    assert future.note is not None
    assert "outside the releases" in future.note


def vllm_model(length: int = 4096, **memory: Any) -> dict[str, Any]:
    return {
        "model_name": "llm",
        "model_engine": "vLLM",
        "architecture": {"fields": dict(TINY_ARCH), "weights_gib": 2.0},
        "memory": {"max_model_len": length, "gpu_memory_utilization": "minimum", **memory},
    }


def config_with(version: str | None = None, **models: dict[str, Any]) -> Config:
    cluster = {"vllm_version": version} if version else {}
    return Config.model_validate(
        {
            "cluster": cluster,
            "policy": {"mode": "enforce", "gpu_reserve_gib": 0.0, "gpu_max_fraction": 1.0},
            "models": models,
        }
    )


def launch_args(cfg: Config, observed: ObservedState, uid: str = "llm") -> dict[str, Any]:
    plan = plan_for(cfg, observed)
    (launch,) = [a for a in plan.admitted if a.uid == uid]
    return dict(launch.launch_args)


@pytest.mark.parametrize("version", ["0.10.2", "0.11.0", "0.21.0", "0.33.0"])
def test_versions_that_take_it_get_the_exact_kv_bytes_the_plan_computed(version: str) -> None:
    cfg = config_with(version, llm=vllm_model(8192, concurrent_sequences=2))
    observed = ObservedState(workers=(gpu_worker(W1, 24),))
    args = launch_args(cfg, observed)
    kv = args["kv_cache_memory_bytes"]
    assert type(kv) is int
    (demand,) = demands(cfg).values()
    assert demand.architecture is not None
    layout = kv_layout(demand.architecture, sliding_window_capped=True)
    assert kv >= layout.bytes_for_sequences(8192, 2, chunk=2048)
    # the utilization sent is the gate's: weights + overhead + that KV cache, within the GPU
    assert 0 < args["gpu_memory_utilization"] * 24 * GiB < 24 * GiB


@pytest.mark.parametrize("version", [None, "0.8.5", "0.10.1"])
def test_older_or_unknown_versions_get_a_utilization_only(version: str | None) -> None:
    cfg = config_with(version, llm=vllm_model())
    args = launch_args(cfg, ObservedState(workers=(gpu_worker(W1, 24),)))
    assert "kv_cache_memory_bytes" not in args
    assert args["gpu_memory_utilization"] > 0


def test_the_reported_version_is_what_the_plan_uses() -> None:
    cfg = config_with("0.8.5", llm=vllm_model())
    worker = replace(gpu_worker(W1, 24), vllm_version="0.11.0")
    args = launch_args(cfg, ObservedState(workers=(worker,)))
    assert "kv_cache_memory_bytes" in args
    notes = plan_for(cfg, ObservedState(workers=(worker,))).notes
    assert any("a running model reports 0.11.0" in n for n in notes)


def test_an_unknown_version_is_said_in_the_plan() -> None:
    plan = plan_for(
        config_with(None, llm=vllm_model()), ObservedState(workers=(gpu_worker(W1, 24),))
    )
    assert any("vLLM version unknown" in n for n in plan.notes)


def test_a_global_budget_version_gets_what_already_resides_added_to_its_utilization() -> None:
    """vLLM 0.6.4 charges every other process's memory to the new instance (R2): 6 GiB in use on a
    24 GiB GPU is a quarter more utilization, while the claim stays the model's own."""
    cfg = config_with("0.6.4", llm=vllm_model())
    idle = launch_args(cfg, ObservedState(workers=(gpu_worker(W1, 24),)))
    busy = launch_args(cfg, ObservedState(workers=(gpu_worker(W1, 24, used_gib=6),)))
    assert busy["gpu_memory_utilization"] == pytest.approx(idle["gpu_memory_utilization"] + 0.25)
    per_instance = config_with("0.7.0", llm=vllm_model())
    assert (
        launch_args(per_instance, ObservedState(workers=(gpu_worker(W1, 24, used_gib=6),)))[
            "gpu_memory_utilization"
        ]
        == launch_args(per_instance, ObservedState(workers=(gpu_worker(W1, 24),)))[
            "gpu_memory_utilization"
        ]
    )


def test_workers_with_different_versions_are_planned_with_their_own_rules() -> None:
    cfg = Config.model_validate(
        {
            "cluster": {"workers": {"10.0.0.7": {"vllm_version": "0.11.0"}}},
            "policy": {"mode": "enforce", "gpu_reserve_gib": 0.0, "gpu_max_fraction": 1.0},
            "models": {
                "old": {**vllm_model(), "placement": {"worker": W1}},
                "new": {**vllm_model(), "placement": {"worker": "10.0.0.7"}},
            },
        }
    )
    observed = ObservedState(workers=(gpu_worker(W1, 24), gpu_worker("10.0.0.7:30001", 24)))
    plan = plan_for(cfg, observed)
    launched = {a.uid: a for a in plan.admitted}
    assert "kv_cache_memory_bytes" in launched["new"].launch_args
    assert "kv_cache_memory_bytes" not in launched["old"].launch_args
    # the unknown worker's claim is the larger: it counts graphs and context on both sides
    assert max(launched["old"].claims.values()) > max(launched["new"].claims.values())
    assert rules_for("0.11.0").key == "R6"
