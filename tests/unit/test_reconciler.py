"""One reconcile pass against the in-memory fake cluster: acting, ownership, backoff, ordering."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from daemon.adapters.state_file import StateStore
from daemon.core.desired import Config
from daemon.core.observed import GpuRef
from daemon.core.planning import Launch
from daemon.errors import ServerUnavailable
from daemon.reconciler import Options, PassReport, _chains, reconcile_once
from daemon.testing.builders import gpu_worker
from daemon.testing.fake_cluster import FakeCluster
from tests.unit.builders import config, demands, model

W1, W2 = "127.0.0.1:30001", "127.0.0.1:30002"
KNOWN = frozenset({"m", "emb", "llm"})


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def run(
    cfg: Config, cluster: FakeCluster, store: StateStore, clock: Clock | None = None, **kw: Any
) -> PassReport:
    clock = clock or Clock()
    return reconcile_once(
        config=cfg,
        demands=demands(cfg),
        cluster=cluster,
        store=store,
        opts=Options(act=True, poll_interval=0.5, clock=clock, sleep=clock.sleep, **kw),
    )


@pytest.fixture
def store(tmp_path: Path) -> StateStore:
    return StateStore(tmp_path / "state")


def test_a_pass_converges_and_a_second_pass_has_nothing_to_do(store: StateStore) -> None:
    cluster = FakeCluster((gpu_worker(W1, 24),), known_models=KNOWN)
    cfg = config({"a": model(gib=8), "b": model(gib=8)})
    first = run(cfg, cluster, store)
    assert first.converged
    assert {r.uid for r in first.results if r.ok} == {"a", "b"}
    assert set(store.load().records) == {"a", "b"}
    second = run(cfg, cluster, store)
    assert second.plan.actions == ()
    assert second.converged


def test_observe_mode_and_dry_runs_change_nothing(store: StateStore) -> None:
    cluster = FakeCluster((gpu_worker(W1, 24),), known_models=KNOWN)
    observe_cfg = config({"a": model(gib=8)}, mode="observe")
    report = run(observe_cfg, cluster, store)
    assert report.plan.actions
    assert not report.acted
    assert cluster.instances == {}
    dry = reconcile_once(
        config=config({"a": model(gib=8)}),
        demands=demands(config({"a": model(gib=8)})),
        cluster=cluster,
        store=store,
        opts=Options(act=False),
    )
    assert not dry.acted
    assert cluster.instances == {}


def test_a_changed_spec_is_replaced(store: StateStore) -> None:
    cluster = FakeCluster((gpu_worker(W1, 24),), known_models=KNOWN)
    run(config({"a": model(gib=8)}), cluster, store)
    before = store.load().records["a"].spec_hash
    report = run(config({"a": model(gib=9)}), cluster, store)
    assert [(r.kind, r.ok) for r in report.results] == [("terminate", True), ("replace", True)]
    assert store.load().records["a"].spec_hash != before


def test_removed_models_are_terminated_only_if_ours(store: StateStore) -> None:
    cluster = FakeCluster((gpu_worker(W1, 24),), known_models=KNOWN)
    run(config({"a": model(gib=4), "b": model(gib=4)}), cluster, store)
    # a colleague launches "theirs" by hand
    cluster.start_by_hand("theirs")
    report = run(config({"a": model(gib=4)}), cluster, store)
    assert [r.uid for r in report.results if r.kind == "terminate"] == ["b"]
    assert "theirs" in cluster.instances
    assert "b" not in store.load().records


def test_an_out_of_band_termination_is_relaunched(store: StateStore) -> None:
    cluster = FakeCluster((gpu_worker(W1, 24),), known_models=KNOWN)
    cfg = config({"a": model(gib=4)})
    run(cfg, cluster, store)
    cluster.kill("a")
    report = run(cfg, cluster, store)
    assert [(r.uid, r.ok) for r in report.results] == [("a", True)]


def test_a_failing_launch_backs_off_and_does_not_block_others(store: StateStore) -> None:
    cluster = FakeCluster((gpu_worker(W1, 80),), known_models=KNOWN)
    cluster.fail["bad"] = "CUDA out of memory"
    cfg = config({"bad": model(gib=4), "good": model(gib=4)})
    clock = Clock()
    first = run(cfg, cluster, store, clock)
    assert {(r.uid, r.ok) for r in first.results} == {("bad", False), ("good", True)}
    assert not first.converged
    failure = store.load().failures["bad"]
    assert failure.attempts == 1
    assert "CUDA out of memory" in failure.last_error
    # within the backoff: no retry
    clock.now += 5
    assert run(cfg, cluster, store, clock).results == ()
    # after it: retried, and the delay doubles
    delays = []
    for _ in range(8):
        clock.now = store.load().failures["bad"].next_retry_at + 0.1
        run(cfg, cluster, store, clock)
        f = store.load().failures["bad"]
        delays.append(f.next_retry_at - clock.now)
    assert delays[0] == pytest.approx(2 * 15, abs=1)
    assert delays[-1] == pytest.approx(600, abs=1)  # capped
    assert delays == sorted(delays)
    # a spec change resets the backoff: retried at once
    cluster.fail.clear()
    changed = config({"bad": model(gib=5), "good": model(gib=4)})
    report = run(changed, cluster, store, clock)
    assert ("bad", True) in {(r.uid, r.ok) for r in report.results}
    assert "bad" not in store.load().failures


def test_a_launch_is_recorded_as_ours_before_it_is_ready(store: StateStore) -> None:
    """If the daemon dies while a model loads, the next run still knows it launched it."""
    cluster = FakeCluster((gpu_worker(W1, 24),), known_models=KNOWN, polls_to_ready=10**6)
    cfg = Config.model_validate(
        {
            **config({"a": model(gib=4)}).model_dump(),
            "policy": {"mode": "enforce", "launch_timeout_seconds": 3},
        }
    )
    report = run(cfg, cluster, store)
    assert not report.results[0].ok
    assert "not READY after 3 s" in report.results[0].message
    assert "a" in store.load().records


def test_launches_sharing_a_gpu_run_in_sequence_others_in_parallel() -> None:
    def launch(uid: str, *refs: GpuRef) -> Launch:
        return Launch(
            uid=uid,
            reason="",
            spec_hash="",
            model_name="m",
            model_type="LLM",
            worker=W1,
            gpu_indexes=(),
            n_gpu=1,
            replica=1,
            launch_args={},
            claims=dict.fromkeys(refs, 1),
        )

    g0, g1, g2 = (GpuRef(worker=W1, index=i) for i in range(3))
    chains = _chains(
        [launch("a", g0), launch("b", g1), launch("c", g0, g2), launch("d", g2), launch("cpu")]
    )
    as_uids = sorted(tuple(x.uid for x in chain) for chain in chains)
    assert as_uids == [("a", "c", "d"), ("b",), ("cpu",)]


def test_an_unreachable_cluster_raises_a_temporary_error_and_acts_on_nothing(
    store: StateStore,
) -> None:
    cluster = FakeCluster((gpu_worker(W1, 24),), known_models=KNOWN)
    cluster.down = True
    with pytest.raises(ServerUnavailable):
        run(config({"a": model(gib=4)}), cluster, store)
    assert store.load().records == {}


def test_custom_models_are_registered_before_launch_and_again_when_changed(
    store: StateStore,
) -> None:
    cluster = FakeCluster((gpu_worker(W1, 24),))
    spec = {
        "model_name": "my-embedder",
        "model_type": "embedding",
        "model_engine": "sentence_transformers",
        "placement": {"device": "cpu"},
        "custom": {"model_uri": "/models/a", "spec": {"dimensions": 384, "max_tokens": 256}},
    }
    assert run(config({"e": spec}), cluster, store).converged
    assert (
        cluster.registrations[("embedding", "my-embedder")]["model_specs"][0]["model_uri"]
        == "/models/a"
    )
    moved = {
        **spec,
        "custom": {"model_uri": "/models/b", "spec": {"dimensions": 384, "max_tokens": 256}},
    }
    assert run(config({"e": moved}), cluster, store).converged
    assert (
        cluster.registrations[("embedding", "my-embedder")]["model_specs"][0]["model_uri"]
        == "/models/b"
    )
