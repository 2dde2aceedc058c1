"""Reconcile passes against the in-memory fake cluster: level-triggered launches, ownership, backoff,
one load per GPU across passes, registrations, the report's truth."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from daemon.adapters.state_file import StateStore
from daemon.core.desired import Config
from daemon.core.planning import Terminate
from daemon.errors import RequestRejected, ServerUnavailable
from daemon.reconciler import Options, PassReport, reconcile_once
from daemon.testing.builders import gpu_worker
from daemon.testing.fake_cluster import FakeCluster
from tests.unit.builders import config, demands, model

W1, W2 = "127.0.0.1:30001", "127.0.0.1:30002"
KNOWN = frozenset({"m", "emb", "llm"})


class Clock:
    """Wall and monotonic time for passes, moved by hand."""

    def __init__(self) -> None:
        self.now = 1_000_000.0
        self.mono = 500.0

    def __call__(self) -> float:
        return self.now

    def monotonic(self) -> float:
        return self.mono

    def advance(self, seconds: float) -> None:
        self.now += seconds
        self.mono += seconds


class Rig:
    """A fake cluster, a state store and the options one daemon would keep between passes."""

    def __init__(self, store: StateStore, cluster: FakeCluster) -> None:
        self.store, self.cluster, self.clock = store, cluster, Clock()
        self.sent: dict[str, float] = {}
        self.events: list[tuple[str, dict[str, Any]]] = []

    def run(self, cfg: Config, *, act: bool = True, **kw: Any) -> PassReport:
        return reconcile_once(
            config=cfg,
            demands=demands(cfg),
            cluster=self.cluster,
            store=self.store,
            opts=Options(
                act=act,
                clock=self.clock,
                monotonic=self.clock.monotonic,
                sent=self.sent,
                events=lambda event, **f: self.events.append((event, f)),
                **kw,
            ),
        )

    def converge(self, cfg: Config, *, passes: int = 10) -> list[PassReport]:
        """Passes until the cluster matches the file, 2 s apart (the daemon's requeue)."""
        reports = []
        for _ in range(passes):
            reports.append(self.run(cfg))
            if reports[-1].converged:
                return reports
            self.clock.advance(2)
        raise AssertionError(f"not converged after {passes} passes: {reports[-1].convergence}")

    def named(self, event: str) -> list[dict[str, Any]]:
        return [f for e, f in self.events if e == event]


@pytest.fixture
def store(tmp_path: Path) -> StateStore:
    return StateStore(tmp_path / "state")


def rig(store: StateStore, *workers: Any, **kw: Any) -> Rig:
    return Rig(store, FakeCluster(workers or (gpu_worker(W1, 24),), known_models=KNOWN, **kw))


def test_a_pass_sends_launches_and_returns_a_later_pass_sees_them_ready(
    store: StateStore,
) -> None:
    r = rig(store, gpu_worker(W1, 24), gpu_worker(W2, 24))
    cfg = config(
        {"a": model(gib=8, placement={"worker": W1}), "b": model(gib=8, placement={"worker": W2})}
    )
    first = r.run(cfg)
    assert {(x.uid, x.message) for x in first.results} == {
        ("a", "sent; loading"),
        ("b", "sent; loading"),
    }
    assert not first.converged
    assert first.requeue_after == pytest.approx(2.0)
    records = store.load().records
    assert records["a"].loading
    assert records["a"].sent_at == r.clock.now
    assert records["a"].timeout_seconds == 900
    second = r.run(cfg)
    assert second.results == ()
    assert {o.uid: o.result for o in second.settlement.outcomes} == {"a": "ready", "b": "ready"}
    assert [f["uid"] for f in r.named("model.launch.succeeded")] == ["a", "b"]
    assert second.converged
    assert not store.load().records["a"].loading
    assert r.run(cfg).plan.actions == ()


def test_one_load_per_gpu_across_passes(store: StateStore) -> None:
    """Two models for one GPU: the second waits while the first loads, in this pass and the next,
    and is sent only once the first is READY."""
    r = rig(store, gpu_worker(W1, 24), polls_to_ready=3)
    cfg = config({"a": model(gib=8, priority=1), "b": model(gib=8)})
    first = r.run(cfg)
    assert [x.uid for x in first.results] == ["a"]
    assert [w.uid for w in first.plan.waiting] == ["b"]
    assert "a is launched first" in first.plan.waiting[0].reason
    second = r.run(cfg)  # a still loading (CREATING in the server)
    assert second.results == ()
    assert "a is loading on" in second.plan.waiting[0].reason
    r.run(cfg)
    third = r.run(cfg)  # a READY now: b goes
    assert [x.uid for x in third.results] == ["b"]


def test_a_loading_model_of_another_process_blocks_its_gpu_and_counts_its_estimate(
    store: StateStore,
) -> None:
    r = rig(store, gpu_worker(W1, 24))
    r.cluster.start_by_hand("theirs", model_name="m", engine="Transformers")
    inst = r.cluster.instances["theirs"]
    inst.status, inst.gpu_indexes = "CREATING", (0,)
    r.cluster.hang.add("theirs")
    cfg = config({"theirs": model(gib=20), "mine": model(gib=8)})
    report = r.run(cfg)
    assert report.results == ()
    refused_or_waiting = {w.uid for w in report.plan.waiting} | {x.uid for x in report.plan.refused}
    assert "mine" in refused_or_waiting  # 20 GiB counted for the loading model: 8 more do not fit
    assert not report.converged


def test_a_restart_keeps_the_one_load_per_gpu_rule(store: StateStore) -> None:
    """A new daemon (empty in-memory state) finds the loading record in the state file."""
    r = rig(store, gpu_worker(W1, 24))
    r.cluster.hang.add("a")
    cfg = config({"a": model(gib=8, priority=1), "b": model(gib=8)})
    r.run(cfg)
    restarted = Rig(store, r.cluster)
    restarted.clock = r.clock
    report = restarted.run(cfg)
    assert report.results == ()
    assert [w.uid for w in report.plan.waiting] == ["b"]


def test_a_load_past_its_deadline_is_terminated_backed_off_and_retried(store: StateStore) -> None:
    r = rig(store)
    r.cluster.hang.add("a")
    cfg = config({"a": model(gib=4)}, launch_timeout_seconds=30)
    r.run(cfg)
    r.clock.advance(20)
    assert r.run(cfg).results == ()
    r.clock.advance(11)
    late = r.run(cfg)
    assert [(x.kind, x.uid) for x in late.results] == [("terminate", "a")]
    assert r.named("model.launch.failed")[0]["error"] == "not READY after 30 s"
    assert "a" not in r.cluster.instances
    assert store.load().failures["a"].attempts == 1
    r.cluster.hang.clear()
    r.clock.advance(16)  # the first backoff is 15 s
    assert [x.uid for x in r.run(cfg).results] == ["a"]


def test_deadlines_follow_the_monotonic_clock_not_the_wall_clock(store: StateStore) -> None:
    r = rig(store)
    r.cluster.hang.add("a")
    cfg = config({"a": model(gib=4)}, launch_timeout_seconds=30)
    r.run(cfg)
    r.clock.now += 3600  # the wall clock jumps an hour ahead; no time passed
    assert r.run(cfg).results == ()
    assert "a" in r.cluster.instances


def test_after_a_restart_the_persisted_send_time_bounds_the_load(store: StateStore) -> None:
    r = rig(store)
    r.cluster.hang.add("a")
    cfg = config({"a": model(gib=4)}, launch_timeout_seconds=30)
    r.run(cfg)
    restarted = Rig(store, r.cluster)  # no monotonic reading of that launch
    restarted.clock.now = r.clock.now + 31
    assert [(x.kind, x.uid) for x in restarted.run(cfg).results] == [("terminate", "a")]


def test_a_launch_the_server_forgot_is_relaunched_at_once_after_a_grace_period(
    store: StateStore,
) -> None:
    r = rig(store)
    r.cluster.hang.add("a")
    cfg = config({"a": model(gib=4)})
    r.run(cfg)
    r.cluster.kill("a")  # the server restarted empty
    r.clock.advance(5)
    assert r.run(cfg).settlement.outcomes[0].result == "loading"
    r.clock.advance(30)
    report = r.run(cfg)
    assert report.settlement.outcomes[0].result == "vanished"
    assert store.load().failures["a"].attempts == 1
    # not the model's fault: relaunched in the same pass, no backoff
    assert [(x.uid, x.kind) for x in report.results] == [("a", "launch")]


def test_removed_models_are_terminated_only_if_ours(store: StateStore) -> None:
    r = rig(store)
    r.converge(config({"a": model(gib=4), "b": model(gib=4)}))
    r.cluster.start_by_hand("theirs")  # a colleague's click
    report = r.run(config({"a": model(gib=4)}))
    assert [x.uid for x in report.results if x.kind == "terminate"] == ["b"]
    assert "theirs" in r.cluster.instances
    assert "b" not in store.load().records


def test_a_changed_spec_is_replaced_and_the_reason_names_the_keys(store: StateStore) -> None:
    r = rig(store)
    r.converge(config({"a": model(gib=8)}))
    before = store.load().records["a"].spec_hash
    report = r.run(config({"a": model(gib=9)}))
    assert [(x.kind, x.ok) for x in report.results] == [("terminate", True), ("replace", True)]
    launch = next(a for a in report.plan.actions if a.uid == "a" and hasattr(a, "replaces"))
    assert "memory.estimate_gib: 8.0 -> 9.0" in launch.reason
    assert store.load().records["a"].spec_hash != before


def test_observe_mode_and_dry_runs_change_nothing(store: StateStore) -> None:
    r = rig(store)
    report = r.run(config({"a": model(gib=8)}, mode="observe"))
    assert report.plan.actions
    assert not report.acted
    dry = r.run(config({"a": model(gib=8)}), act=False)
    assert not dry.acted
    assert r.cluster.instances == {}
    assert not store.path.exists()


def test_an_out_of_band_termination_is_relaunched(store: StateStore) -> None:
    r = rig(store)
    cfg = config({"a": model(gib=4)})
    r.converge(cfg)
    r.cluster.kill("a")
    assert [(x.uid, x.ok) for x in r.run(cfg).results] == [("a", True)]


def test_a_failing_launch_backs_off_and_does_not_block_others(store: StateStore) -> None:
    r = rig(store, gpu_worker(W1, 80), gpu_worker(W2, 80))
    r.cluster.fail["bad"] = "CUDA out of memory"
    cfg = config(
        {
            "bad": model(gib=4, placement={"worker": W1}),
            "good": model(gib=4, placement={"worker": W2}),
        }
    )
    r.run(cfg)
    settled = r.run(cfg)
    assert {o.uid: o.result for o in settled.settlement.outcomes} == {
        "bad": "failed",
        "good": "ready",
    }
    assert not settled.converged
    assert settled.requeue_after == pytest.approx(15, abs=0.5)  # the backoff schedules a pass
    failure = store.load().failures["bad"]
    assert failure.attempts == 1
    assert "CUDA out of memory" in failure.last_error
    r.clock.advance(5)  # within the backoff: no retry
    assert r.run(cfg).results == ()
    delays = []
    for _ in range(8):  # after it: retried, and the delay doubles up to the cap
        r.clock.now = store.load().failures["bad"].next_retry_at + 0.1
        r.run(cfg)
        r.run(cfg)
        f = store.load().failures["bad"]
        delays.append(f.next_retry_at - r.clock.now)
    assert delays[0] == pytest.approx(2 * 15, abs=1)
    assert delays[-1] == pytest.approx(600, abs=1)
    assert delays == sorted(delays)
    r.cluster.fail.clear()  # a spec change resets the backoff: retried at once
    changed = config(
        {
            "bad": model(gib=5, placement={"worker": W1}),
            "good": model(gib=4, placement={"worker": W2}),
        }
    )
    assert ("bad", True) in {(x.uid, x.ok) for x in r.run(changed).results}
    r.run(changed)
    assert "bad" not in store.load().failures


def test_a_model_removed_from_the_file_loses_its_failure_record(store: StateStore) -> None:
    """Re-added later, it starts at attempt 1, not where it left off."""
    r = rig(store)
    r.cluster.fail["a"] = "boom"
    cfg = config({"a": model(gib=4)})
    for _ in range(3):
        r.run(cfg)
        r.run(cfg)
        r.clock.now = store.load().failures["a"].next_retry_at + 1
    assert store.load().failures["a"].attempts == 3
    r.run(config({}, on_empty_config="prune"))
    assert "a" not in store.load().failures
    r.cluster.fail.clear()
    assert [x.uid for x in r.run(cfg).results if x.kind == "launch"] == ["a"]


def refuse(*args: Any, **kwargs: Any) -> None:
    """A server that refuses the request (HTTP 400)."""
    del args, kwargs
    raise RequestRejected("Invalid model URI /models/a.", method="POST", path="/", status=400)


def test_a_refused_launch_request_is_a_failure_and_leaves_no_record(
    store: StateStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    r = rig(store)
    monkeypatch.setattr(r.cluster, "launch", refuse)
    report = r.run(config({"a": model(gib=4)}))
    assert [(x.uid, x.ok) for x in report.results] == [("a", False)]
    assert "a" not in store.load().records
    assert store.load().failures["a"].attempts == 1
    assert r.named("model.launch.failed")[0]["result"] == "refused"


def test_a_launch_whose_answer_is_lost_stays_ours_and_loading(
    store: StateStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    r = rig(store)
    real_launch = r.cluster.launch

    def lost(launch: Any) -> None:
        real_launch(launch)
        raise ServerUnavailable("no answer within 10 s", method="POST", path="/v1/models")

    monkeypatch.setattr(r.cluster, "launch", lost)
    cfg = config({"a": model(gib=4)})
    report = r.run(cfg)
    assert report.results[0].ok
    assert store.load().records["a"].loading
    monkeypatch.setattr(r.cluster, "launch", real_launch)
    assert r.run(cfg).converged  # settled READY by the next pass, never launched twice
    assert [what for what, _ in r.cluster.log].count("launch") == 1


def test_an_unreachable_cluster_raises_a_temporary_error_and_acts_on_nothing(
    store: StateStore,
) -> None:
    r = rig(store)
    r.cluster.down = True
    with pytest.raises(ServerUnavailable):
        r.run(config({"a": model(gib=4)}))
    assert store.load().records == {}


CUSTOM: dict[str, Any] = {
    "model_name": "my-embedder",
    "model_type": "embedding",
    "model_engine": "sentence_transformers",
    "placement": {"device": "cpu"},
    "custom": {"model_uri": "/models/a", "spec": {"dimensions": 384, "max_tokens": 256}},
}


def test_custom_models_are_registered_before_launch_and_again_when_changed(
    store: StateStore,
) -> None:
    r = rig(store)
    r.converge(config({"e": CUSTOM}))
    registered = r.cluster.registrations[("embedding", "my-embedder")]
    assert registered["model_specs"][0]["model_uri"] == "/models/a"
    assert r.named("model.registered") == [
        {"model_name": "my-embedder", "model_type": "embedding", "replaced": False}
    ]
    moved = {**CUSTOM, "custom": {**CUSTOM["custom"], "model_uri": "/models/b"}}
    r.converge(config({"e": moved}))
    registered = r.cluster.registrations[("embedding", "my-embedder")]
    assert registered["model_specs"][0]["model_uri"] == "/models/b"


def test_two_uids_of_one_custom_model_register_it_once_per_pass(store: StateStore) -> None:
    r = rig(store)
    report = r.run(config({"e1": CUSTOM, "e2": CUSTOM}))
    assert [x.kind for x in report.results].count("register") == 1
    assert {x.uid for x in report.results if x.kind == "launch"} == {"e1", "e2"}
    assert all(x.ok for x in report.results)
    assert [what for what, _ in r.cluster.log].count("register") == 1


def test_a_failed_registration_fails_its_launches_with_the_reason(
    store: StateStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    r = rig(store)
    monkeypatch.setattr(r.cluster, "register", refuse)
    report = r.run(config({"e": CUSTOM}))
    assert [(x.kind, x.ok) for x in report.results] == [("register", False), ("launch", False)]
    assert "Invalid model URI" in r.named("model.registration.failed")[0]["error"]
    assert "registering my-embedder failed" in store.load().failures["e"].last_error


def test_a_model_removed_while_it_loads_is_cancelled_not_forgotten(store: StateStore) -> None:
    """Xinference cannot terminate a loading model (DELETE says "not found", the load goes on):
    its launch is cancelled, and the record goes only once the model is really gone."""
    r = rig(store)
    r.cluster.hang.add("a")
    r.run(config({"a": model(gib=4)}))
    report = r.run(config({}, on_empty_config="prune"))
    (terminate,) = [a for a in report.plan.actions if a.uid == "a"]
    assert isinstance(terminate, Terminate)
    assert terminate.loading
    assert [(x.kind, x.ok, x.message) for x in report.results] == [
        ("terminate", True, "terminated")
    ]
    assert "a" not in r.cluster.instances
    assert "a" not in store.load().records


def test_a_launch_the_server_does_not_list_yet_is_not_sent_again(
    store: StateStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The answer was lost and the server lists the launch only later (a slow proxy): the next
    pass must not send it again (a duplicate uid is refused, and ownership would be lost)."""
    r = rig(store)
    real_launch = r.cluster.launch
    pending: list[Any] = []

    def slow(launch: Any) -> None:
        pending.append(launch)  # the server will get it later
        raise ServerUnavailable("no answer within 2 s", method="POST", path="/v1/models")

    monkeypatch.setattr(r.cluster, "launch", slow)
    cfg = config({"a": model(gib=4)})
    r.run(cfg)
    r.clock.advance(2)
    again = r.run(cfg)
    assert again.results == ()
    assert again.plan.statuses[0].reasons == ("sent; not listed yet",)
    real_launch(pending[0])  # now the server has it
    monkeypatch.setattr(r.cluster, "launch", real_launch)
    r.run(cfg)
    assert r.run(cfg).converged
    assert store.load().records["a"].spec_hash
    assert [f["uid"] for f in r.named("model.launch.succeeded")] == ["a"]


def test_an_unwritable_state_file_keeps_ownership_in_memory(tmp_path: Path) -> None:
    (tmp_path / "state" / "state.json").mkdir(parents=True)  # root writes anywhere: a directory
    store = StateStore(tmp_path / "state")
    r = rig(store)
    cfg = config({"a": model(gib=4)})
    first = r.run(cfg)
    assert any("cannot write state file" in w for w in first.warnings)
    second = r.run(cfg)  # the launch settles from the record kept in memory
    assert [o.result for o in second.settlement.outcomes] == ["ready"]
    assert r.named("model.launch.succeeded")
    assert "kept in memory" in " ".join(second.warnings)


def test_a_launch_the_server_answers_with_a_5xx_is_a_failure_with_backoff(
    store: StateStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    from daemon.errors import TemporaryClusterError

    def boom(*_a: Any, **_k: Any) -> None:
        raise TemporaryClusterError("boom", method="POST", path="/v1/models", status=500)

    r = rig(store)
    monkeypatch.setattr(r.cluster, "launch", boom)
    report = r.run(config({"a": model(gib=4)}))
    assert [(x.uid, x.ok) for x in report.results] == [("a", False)]
    (failed,) = r.named("model.launch.failed")
    assert (failed["attempts"], failed["retry_in_seconds"]) == (1, 15.0)
    assert "a" not in store.load().records
