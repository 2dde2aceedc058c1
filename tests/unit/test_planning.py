"""Drift, admission and planning on scripted clusters: each test states one behaviour."""

from __future__ import annotations

from types import MappingProxyType
from typing import Any

from daemon.core.observed import GpuRef, RunningModel
from daemon.core.ownership import LaunchRecord
from daemon.core.planning import Launch, Plan, Terminate
from daemon.core.units import GiB
from daemon.testing.simulator import run_to_completion
from tests.unit.builders import (
    cluster,
    config,
    demands,
    gpu_worker,
    llama_3_8b_hf_config,
    model,
    plan_for,
)

W1 = "127.0.0.1:30001"
W2 = "127.0.0.1:30002"


def launches(p: Plan) -> dict[str, Launch]:
    """Every launch the plan admitted: sent now, or waiting for a load on its GPU to finish."""
    return {a.uid: a for a in p.admitted}


def terminations(p: Plan) -> list[str]:
    return [a.uid for a in p.actions if isinstance(a, Terminate)]


def running(
    uid: str,
    name: str = "m",
    *,
    worker: str = W1,
    gpus: tuple[int, ...] = (0,),
    status: str = "READY",
    engine: str = "Transformers",
    **kw: Any,
) -> RunningModel:
    return RunningModel(
        uid=uid,
        model_name=name,
        model_engine=engine,
        worker=worker,
        gpu_indexes=gpus,
        status=status,
        **kw,
    )


def test_missing_models_are_launched_on_a_gpu_that_fits() -> None:
    p = plan_for(config({"a": model(gib=10)}), cluster(gpu_worker(W1, 24)))
    assert launches(p)["a"].gpu_indexes == (0,)
    assert launches(p)["a"].worker == W1
    assert not p.refused


def test_a_model_that_fits_nowhere_is_refused_with_the_numbers() -> None:
    p = plan_for(config({"big": model(gib=30)}), cluster(gpu_worker(W1, 24, used_gib=2)))
    assert not p.actions
    (refusal,) = p.refused
    assert "30.00 GiB" in refusal.reason
    assert "127.0.0.1:30001/gpu0" in refusal.reason
    assert "22.00 GiB available" in refusal.reason


def test_memory_used_by_unmanaged_processes_is_respected() -> None:
    p = plan_for(
        config({"a": model(gib=10)}),
        cluster(
            gpu_worker(W1, 24, 24, used_gib=0),
        ),
    )
    assert launches(p)["a"].gpu_indexes == (0,)
    busy = cluster(gpu_worker(W1, 24, used_gib=20))
    assert plan_for(config({"a": model(gib=10)}), busy).refused


def test_pinned_placement_is_honoured_even_when_another_gpu_fits_better() -> None:
    cfg = config({"a": model(gib=4, placement={"worker": W2, "gpu_indexes": [1]})})
    p = plan_for(cfg, cluster(gpu_worker(W1, 8), gpu_worker(W2, 80, 80)))
    assert (launches(p)["a"].worker, launches(p)["a"].gpu_indexes) == (W2, (1,))


def test_a_pin_to_a_missing_gpu_is_refused() -> None:
    cfg = config({"a": model(gib=4, placement={"worker": W1, "gpu_indexes": [3]})})
    (refusal,) = plan_for(cfg, cluster(gpu_worker(W1, 80))).refused
    assert "no GPU matches" in refusal.reason


def test_workers_can_be_pinned_by_ip_alone() -> None:
    cfg = config({"a": model(gib=4, placement={"worker": "127.0.0.1"})})
    assert launches(plan_for(cfg, cluster(gpu_worker(W1, 80))))["a"].worker == W1


def test_tensor_parallel_models_take_gpus_of_one_worker() -> None:
    cfg = config({"tp": model(gib=30, placement={"gpus": 2})})
    # one free GPU on each worker is not enough; W2 has two
    observed = cluster(gpu_worker(W1, 40, 8), gpu_worker(W2, 40, 40))
    launch = launches(plan_for(cfg, observed))["tp"]
    assert launch.worker == W2
    assert launch.gpu_indexes == (0, 1)
    assert launch.n_gpu == 2
    split = cluster(gpu_worker(W1, 40, 8), gpu_worker(W2, 40, 8))
    assert plan_for(cfg, split).refused


def test_priority_decides_who_is_refused() -> None:
    models = {"low": model(gib=15, priority=1), "high": model(gib=15, priority=9)}
    p = plan_for(config(models), cluster(gpu_worker(W1, 24)))
    assert set(launches(p)) == {"high"}
    assert [r.uid for r in p.refused] == ["low"]


def test_exhaustive_search_rescues_what_greedy_order_would_refuse() -> None:
    """Greedy by priority puts 'a' (10) on the 16 GiB GPU, leaving no room for 'b' (14); the
    search moves 'a' to the 12 GiB GPU."""
    models = {"a": model(gib=10, priority=5), "b": model(gib=14, priority=1)}
    p = plan_for(config(models), cluster(gpu_worker(W1, 12, 16)))
    assert not p.refused
    assert launches(p)["a"].gpu_indexes == (0,)
    assert launches(p)["b"].gpu_indexes == (1,)


def test_changed_spec_is_replaced_terminate_first() -> None:
    cfg = config({"a": model(gib=10)})
    observed = cluster(
        gpu_worker(W1, 24, used_gib=10),
        models=(running("a", "old-name"),),
        managed=MappingProxyType(
            {
                "a": LaunchRecord(
                    uid="a", spec_hash="old", claims={GpuRef(worker=W1, index=0): 10 * GiB}
                )
            }
        ),
    )
    p = plan_for(cfg, observed)
    kinds = [(type(a).__name__, a.uid) for a in p.actions]
    assert kinds == [("Terminate", "a"), ("Launch", "a")]
    assert launches(p)["a"].replaces
    assert any("model_name" in r for s in p.statuses for r in s.reasons)


def test_a_replacement_that_would_not_fit_keeps_the_old_model_running() -> None:
    cfg = config({"a": model(gib=30)})
    observed = cluster(gpu_worker(W1, 24, used_gib=10), models=(running("a", "old"),))
    p = plan_for(cfg, observed)
    assert not p.actions
    assert [r.uid for r in p.refused] == ["a"]


def test_protected_models_are_never_replaced() -> None:
    cfg = config({"a": model(gib=10, protected=True)})
    observed = cluster(gpu_worker(W1, 24, used_gib=10), models=(running("a", "other"),))
    p = plan_for(cfg, observed)
    assert not p.actions
    assert any("protected" in n for n in p.notes)


def test_prune_managed_terminates_only_what_this_tool_launched() -> None:
    observed = cluster(
        gpu_worker(W1, 24),
        models=(running("mine"), running("theirs")),
        managed=MappingProxyType({"mine": LaunchRecord(uid="mine", spec_hash="x")}),
    )
    cfg = config({"keep": model(gib=1)}, prune="managed")
    assert terminations(plan_for(cfg, observed)) == ["mine"]
    assert terminations(plan_for(config({"keep": model(gib=1)}, prune="all"), observed)) == [
        "mine",
        "theirs",
    ]
    assert terminations(plan_for(config({"keep": model(gib=1)}, prune="none"), observed)) == []


def test_an_empty_file_terminates_nothing_by_default() -> None:
    observed = cluster(
        gpu_worker(W1, 24),
        models=(running("mine"),),
        managed=MappingProxyType({"mine": LaunchRecord(uid="mine", spec_hash="x")}),
    )
    p = plan_for(config({}), observed)
    assert not p.actions
    assert any("on_empty_config" in n for n in p.notes)
    assert terminations(plan_for(config({}, on_empty_config="prune"), observed)) == ["mine"]


def test_action_cap_defers_the_rest_terminations_first() -> None:
    models = {f"m{i}": model(gib=10) for i in range(5)}  # one per GPU: none waits for another
    observed = cluster(
        gpu_worker(W1, 16, 16, 16, 16, 16),
        models=(running("old"),),
        managed=MappingProxyType({"old": LaunchRecord(uid="old", spec_hash="x")}),
    )
    p = plan_for(config(models, max_actions_per_pass=2), observed)
    assert [type(a).__name__ for a in p.actions] == ["Terminate", "Launch"]
    assert len(p.deferred) == 4


def test_failed_launch_is_retried_unless_backing_off() -> None:
    cfg = config({"a": model(gib=1)})
    failed = running("a", status="ERROR", error_message="CUDA out of memory")
    assert (
        "retry"
        in launches(plan_for(cfg, cluster(gpu_worker(W1, 24), models=(failed,))))["a"].reason
    )
    waiting = cluster(gpu_worker(W1, 24), models=(failed,), backing_off=frozenset({"a"}))
    assert not plan_for(cfg, waiting).actions


def test_launching_models_are_left_alone_hold_their_memory_and_block_their_gpu() -> None:
    cfg = config({"a": model(gib=10), "b": model(gib=10), "c": model(gib=10)})
    observed = cluster(gpu_worker(W1, 24, used_gib=0), models=(running("a", status="LOADING"),))
    p = plan_for(cfg, observed)
    assert p.actions == ()
    assert [(w.uid, w.reason) for w in p.waiting] == [("b", f"waiting: a is loading on {W1}/gpu0")]
    assert [r.uid for r in p.refused] == ["c"]  # a's 10 GiB count while it loads: 24 < 3 x 10


def test_a_launch_this_tool_sent_blocks_its_gpus_before_the_server_lists_them() -> None:
    record = LaunchRecord(
        uid="a", spec_hash="x", loading=True, claims={GpuRef(worker=W1, index=0): 10 * GiB}
    )
    observed = cluster(
        gpu_worker(W1, 24),
        models=(running("a", status="CREATING", gpus=()),),
        managed=MappingProxyType({"a": record}),
    )
    p = plan_for(config({"a": model(gib=10), "b": model(gib=10)}), observed)
    assert [w.uid for w in p.waiting] == ["b"]


def test_a_load_past_its_deadline_is_terminated_and_no_longer_blocks() -> None:
    record = LaunchRecord(
        uid="a", spec_hash="x", loading=True, claims={GpuRef(worker=W1, index=0): 10 * GiB}
    )
    observed = cluster(
        gpu_worker(W1, 24),
        models=(running("a", status="LOADING"),),
        managed=MappingProxyType({"a": record}),
        timed_out=frozenset({"a"}),
        backing_off=frozenset({"a"}),
    )
    p = plan_for(config({"a": model(gib=10), "b": model(gib=10)}), observed)
    assert terminations(p) == ["a"]
    assert list(launches(p)) == ["b"]
    assert p.waiting == ()


def test_unmanaged_models_are_only_reported() -> None:
    cfg = config({"a": model(gib=1, unmanaged=True)})
    p = plan_for(cfg, cluster(gpu_worker(W1, 24)))
    assert not p.actions
    assert p.statuses[0].state == "missing"


def test_cpu_models_need_no_gpu_and_a_pinned_worker_must_exist() -> None:
    cpu = model(gib=None, placement={"device": "cpu"})
    assert "a" in launches(plan_for(config({"a": cpu}), cluster()))
    pinned = model(placement={"device": "cpu", "worker": "10.9.9.9"})
    (refusal,) = plan_for(config({"a": pinned}), cluster(gpu_worker(W1, 8))).refused
    assert "not in the cluster" in refusal.reason


def test_vllm_gets_a_computed_utilization_that_leaves_room_for_its_neighbours() -> None:
    """The RAG-host pain: vLLM's default 0.9 would starve the embedding model."""
    arch = {
        "fields": llama_3_8b_hf_config(max_position_embeddings=4096),
        "weights_gib": 15.0,
    }
    llm = {
        "model_name": "llama",
        "model_engine": "vLLM",
        "architecture": arch,
        "memory": {"max_model_len": 32768},
    }
    cfg = config(
        {"llm": llm, "emb": model(gib=6, engine="sentence_transformers", model_type="embedding")}
    )
    p = plan_for(cfg, cluster(gpu_worker(W1, 47.5, used_gib=0.6)))
    util = launches(p)["llm"].launch_args["gpu_memory_utilization"]
    assert util < 0.9
    used = sum(a.claims[GpuRef(worker=W1, index=0)] for a in launches(p).values())
    assert used <= (47.5 - 0.6) * GiB
    assert launches(p)["llm"].launch_args["max_model_len"] == 32768


def test_passes_until_nothing_is_left_to_do() -> None:
    cfg = config({"a": model(gib=10), "b": model(gib=5), "c": model(gib=30)})
    observed = cluster(gpu_worker(W1, 24), gpu_worker(W2, 40))
    plans, _ = run_to_completion(cfg, demands(cfg), observed, rounds=5)
    assert len(plans) == 3  # a and c at once (two GPUs), then b after a loaded, then nothing
    assert not plans[-1].has_changes
    assert {s.state for s in plans[-1].statuses} == {"in_sync"}
