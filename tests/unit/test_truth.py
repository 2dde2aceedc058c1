"""The report tells the truth, and time is honest (issue 10): one definition of "in sync" for plan,
status, apply and the daemon; late resyncs run late, never not at all; a backoff schedules its own
pass; a fixed file is announced; a second reconciler only observes. Against the in-memory fake."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest

from daemon.adapters.systemd import InstanceLock, Notifier
from daemon.app import Daemon
from daemon.cli import main
from daemon.events import configure
from daemon.exit_codes import Exit
from daemon.settings import Settings
from daemon.testing.builders import gpu_worker
from daemon.testing.fake_cluster import FakeCluster
from tests.unit.builders import DAEMON_CONFIG

W1 = "127.0.0.1:30001"


class Clock:
    def __init__(self) -> None:
        self.wall = 1_700_000_000.0
        self.mono = 100.0

    def advance(self, seconds: float) -> None:
        self.wall += seconds
        self.mono += seconds


class Rig:
    def __init__(self, tmp: Path, fake: FakeCluster, *, name: str = "d", text: str = DAEMON_CONFIG):
        self.buffer = io.StringIO()
        configure(fmt="json", stream=self.buffer)
        self.clock = Clock()
        self.config = tmp / f"{name}.toml"
        self.config.write_text(text)
        self.fake = fake
        self.daemon = Daemon(
            config_path=self.config,
            settings=Settings(state_dir=tmp / f"state-{name}", resync_interval_seconds=30.0),
            cluster_factory=lambda _c, _e: fake,
            notifier=Notifier(environ={}),
            clock=lambda: self.clock.wall,
            monotonic=lambda: self.clock.mono,
        )
        self.daemon.load()

    def events(self, name: str) -> list[dict[str, Any]]:
        lines = [json.loads(x) for x in self.buffer.getvalue().splitlines() if x.strip()]
        return [e for e in lines if e["event"] == name]


def fake() -> FakeCluster:
    return FakeCluster((gpu_worker(W1, 24),), known_models=frozenset({"m"}))


def test_a_resync_missed_while_the_process_was_stopped_runs_at_once(tmp_path: Path) -> None:
    """SIGSTOP for longer than the resync interval, then SIGCONT: the loop finds the resync
    overdue and runs it now, not at the next tick (the monotonic clock counts the stop)."""
    rig = Rig(tmp_path, fake())
    rig.daemon.run_pass({"start"})
    rig.daemon.run_pass({"requeue"})
    assert rig.daemon._take_requests() == set()
    rig.clock.advance(35)  # stopped 35 s: nothing ran meanwhile
    assert rig.daemon._take_requests() == {"resync"}


def test_a_wall_clock_step_neither_fires_nor_silences_resyncs(tmp_path: Path) -> None:
    rig = Rig(tmp_path, fake())
    rig.daemon.run_pass({"start"})
    rig.daemon.run_pass({"requeue"})
    rig.clock.wall -= 3600  # an NTP step backwards
    rig.clock.mono += 31
    assert "resync" in rig.daemon._take_requests()
    rig.daemon.run_pass({"resync"})
    rig.clock.wall += 7200  # and forwards
    assert rig.daemon._take_requests() == set()


def test_a_backoff_deadline_schedules_its_own_pass(tmp_path: Path) -> None:
    cluster = fake()
    cluster.fail["a"] = "CUDA out of memory"
    rig = Rig(tmp_path, cluster)
    rig.daemon.run_pass({"start"})
    rig.daemon.run_pass({"requeue"})  # sees the ERROR: backoff 15 s
    assert rig.daemon._take_requests() == set()
    rig.clock.advance(15.5)
    assert rig.daemon._take_requests() == {"requeue"}  # 15 s, not the 30 s resync


def test_a_loading_model_is_not_in_sync_and_a_pass_asks_to_look_again_soon(
    tmp_path: Path,
) -> None:
    cluster = fake()
    cluster.hang.add("a")
    rig = Rig(tmp_path, cluster)
    report = rig.daemon.run_pass({"start"})
    assert report is not None
    assert not report.converged
    rig.clock.advance(2)
    assert rig.daemon._take_requests() == {"requeue"}
    rig.daemon.run_pass({"requeue"})
    (finished,) = rig.events("pass.finished")[-1:]
    assert finished["converged"] is False
    assert finished["loading"] == ["a"]
    assert finished["pending"] == ["a: loading: creating"]
    assert "1 loading" in rig.daemon.summary()
    ok, why = rig.daemon.readiness()
    assert not ok
    assert "a (loading)" in why


def test_fixing_a_bad_file_is_announced_and_shown_meanwhile(tmp_path: Path) -> None:
    rig = Rig(tmp_path, fake())
    rig.daemon.run_pass({"start"})
    rig.daemon.run_pass({"requeue"})
    good = rig.config.read_text()
    rig.config.write_text("[policy]\nmode = 'sometimes'\n")
    rig.daemon.run_pass({"file"})
    assert rig.events("config.invalid")
    assert b"xr_config_file_valid 0.0" in rig.daemon.metrics.render()
    ok, why = rig.daemon.readiness()
    assert not ok
    assert "config file on disk is invalid" in why
    rig.config.write_text(good)
    rig.daemon.run_pass({"file"})
    (valid,) = rig.events("config.valid")
    assert rig.daemon.good is not None
    assert valid["revision"] == rig.daemon.good.revision
    assert b"xr_config_file_valid 1.0" in rig.daemon.metrics.render()
    assert rig.daemon.readiness()[0]


def test_a_second_reconciler_on_the_same_cluster_only_observes(tmp_path: Path) -> None:
    cluster = fake()
    first = Rig(tmp_path, cluster, name="one")
    first.daemon.run_pass({"start"})
    assert first.events("cluster.lease.acquired")
    second = Rig(tmp_path, cluster, name="two", text=DAEMON_CONFIG.replace("models.a", "models.b"))
    second.daemon.run_pass({"start"})
    (held,) = second.events("cluster.lease.held_elsewhere")
    assert "pid" in held["holder"]
    assert "b" not in cluster.instances  # it acted on nothing
    assert "observing only" in second.daemon.summary()
    # the first stops cleanly and gives the lease back: the second takes over at once
    first.daemon.lease.release(cluster)
    second.daemon.run_pass({"resync"})
    assert second.events("cluster.lease.acquired")
    assert "b" in cluster.instances


def test_an_abandoned_lease_is_taken_over_after_its_ttl(tmp_path: Path) -> None:
    cluster = fake()
    first = Rig(tmp_path, cluster, name="one")
    first.daemon.run_pass({"start"})  # then it dies without releasing
    second = Rig(tmp_path, cluster, name="two")
    second.daemon.run_pass({"start"})
    assert second.events("cluster.lease.held_elsewhere")
    second.clock.advance(second.daemon.lease.ttl + 1)
    second.daemon.run_pass({"resync"})
    (taken,) = second.events("cluster.lease.acquired")
    assert "not renewed" in taken["reason"]


def test_a_restarted_daemon_takes_its_own_lease_back_at_once(tmp_path: Path) -> None:
    cluster = fake()
    Rig(tmp_path, cluster, name="one").daemon.run_pass({"start"})  # killed: lease left behind
    again = Rig(tmp_path, cluster, name="one")  # same host and state directory
    again.daemon.run_pass({"start"})
    (taken,) = again.events("cluster.lease.acquired")
    assert "this host and state directory" in taken["reason"]


def test_a_malformed_or_busy_metrics_address_exits_78_without_a_traceback(
    tmp_path: Path,
) -> None:
    buffer = io.StringIO()
    configure(fmt="json", stream=buffer)
    config = tmp_path / "c.toml"
    config.write_text(DAEMON_CONFIG)
    daemon = Daemon(
        config_path=config,
        # the settings refuse it up front (tests/unit/test_settings.py); the daemon too, unchecked
        settings=Settings.model_construct(
            **{
                **Settings().model_dump(),
                "state_dir": tmp_path / "s",
                "metrics_listen": "localhost",
            }
        ),
        cluster_factory=lambda _c, _e: fake(),
        notifier=Notifier(environ={}),
    )
    assert daemon.run() == Exit.CONFIG
    (failed,) = [json.loads(x) for x in buffer.getvalue().splitlines() if "start_failed" in x]
    assert "expected HOST:PORT" in failed["error"]
    assert "Traceback" not in buffer.getvalue()


def test_apply_refuses_to_run_beside_a_daemon_on_the_same_state(tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    config.write_text(DAEMON_CONFIG)
    lock = InstanceLock(tmp_path / "state" / "daemon.lock")
    lock.acquire()
    try:
        out, err = io.StringIO(), io.StringIO()
        code = main(
            ["apply", str(config), "--yes", "--state-dir", str(tmp_path / "state")],
            stdout=out,
            stderr=err,
        )
    finally:
        lock.release()
    assert code == Exit.ERROR
    assert "A daemon manages this state directory" in err.getvalue()
    assert "Traceback" not in err.getvalue()


SNAPSHOT_BASE: dict[str, Any] = {
    "format": 1,
    "workers": [
        {"address": W1, "gpus": [{"index": 0, "total_bytes": 24 * 2**30, "used_bytes": 0}]}
    ],
}


def plan_exit(tmp_path: Path, config_text: str, snapshot: dict[str, Any]) -> tuple[int, str]:
    config = tmp_path / "c.toml"
    config.write_text(config_text)
    snap = tmp_path / "snap.json"
    snap.write_text(json.dumps({**SNAPSHOT_BASE, **snapshot}))
    out, err = io.StringIO(), io.StringIO()
    code = main(
        ["plan", str(config), "--observed", str(snap), "--detailed-exitcode"],
        stdout=out,
        stderr=err,
    )
    return code, out.getvalue()


RUNNING_A = {
    "uid": "a",
    "model_name": "m",
    "model_type": "LLM",
    "model_engine": "Transformers",
    "worker": W1,
    "gpu_indexes": [0],
}


@pytest.mark.parametrize(
    ("case", "snapshot", "config_text"),
    [
        (
            "failing and backing off",
            {"models": [{**RUNNING_A, "status": "ERROR"}], "backing_off": ["a"]},
            DAEMON_CONFIG,
        ),
        ("loading", {"models": [{**RUNNING_A, "status": "LOADING"}]}, DAEMON_CONFIG),
        (
            "protected, spec changed",
            {"models": [{**RUNNING_A, "model_engine": "vLLM"}]},
            DAEMON_CONFIG.replace(
                'model_engine = "Transformers"', 'model_engine = "Transformers"\nprotected = true'
            ),
        ),
    ],
)
def test_plan_never_says_in_sync_when_it_is_not(
    tmp_path: Path, case: str, snapshot: dict[str, Any], config_text: str
) -> None:
    code, out = plan_exit(tmp_path, config_text, snapshot)
    assert code == Exit.NOT_CONVERGED, case
    assert "No changes: the cluster matches the file." not in out, case
    assert "The cluster does not match the file" in out, case


def test_plan_says_in_sync_and_exits_0_when_it_is(tmp_path: Path) -> None:
    code, out = plan_exit(tmp_path, DAEMON_CONFIG, {"models": [RUNNING_A]})
    assert code == Exit.OK
    assert "No changes: the cluster matches the file." in out


def test_the_revision_is_the_same_in_the_cli_the_daemon_and_the_state_file(
    tmp_path: Path,
) -> None:
    rig = Rig(tmp_path, fake())
    rig.daemon.run_pass({"start"})
    state = json.loads((tmp_path / "state-d" / "state.json").read_text())
    revision = state["launched"]["a"]["config_revision"]
    assert revision.startswith(("sha256:", "git:"))
    snap = tmp_path / "snap.json"
    snap.write_text(json.dumps(SNAPSHOT_BASE))
    out, err = io.StringIO(), io.StringIO()
    main(["plan", str(rig.config), "--observed", str(snap), "--json"], stdout=out, stderr=err)
    assert json.loads(out.getvalue())["config"]["revision"] == revision
    out = io.StringIO()
    main(["plan", str(rig.config), "--observed", str(snap)], stdout=out, stderr=err)
    assert f"(revision {revision})" in out.getvalue()
    assert rig.events("pass.finished")[0]["config_revision"] == revision


class MovingCluster(FakeCluster):
    """A colleague launches a model by hand between the plan apply shows and its first pass."""

    credentials = type("Creds", (), {"can_write": True})()

    def __init__(self) -> None:
        super().__init__((gpu_worker(W1, 24),), known_models=frozenset({"m"}))
        self.looks = 0

    def observe(self) -> Any:
        self.looks += 1
        if self.looks == 2:  # "a" itself, by hand, with another engine
            self.start_by_hand("a", model_name="m", engine="vLLM")
        return super().observe()


def test_apply_carries_out_the_confirmed_plan_or_aborts_when_the_cluster_moved(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The plan shown launches "a"; by the time apply acts, someone started "a" by hand with
    another engine: the plan would now replace it, which nobody confirmed, so apply does nothing
    and says why."""
    from daemon.cli import live

    config = tmp_path / "c.toml"
    config.write_text(DAEMON_CONFIG)
    cluster = MovingCluster()
    monkeypatch.setattr(live, "adapter_for", lambda *_a, **_k: cluster)
    out, err = io.StringIO(), io.StringIO()
    code = main(
        ["apply", str(config), "--yes", "--state-dir", str(tmp_path / "state")],
        stdout=out,
        stderr=err,
    )
    assert code == Exit.ERROR
    assert "the cluster changed since the plan was shown" in err.getvalue()
    assert cluster.instances["a"].engine == "vLLM"  # nothing was done
    assert [what for what, _ in cluster.log].count("launch") == 0


def test_apply_converges_with_the_confirmed_plan(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from daemon.cli import live

    config = tmp_path / "c.toml"
    config.write_text(DAEMON_CONFIG)
    cluster = fake()
    # a plain FakeCluster has no credentials; apply asks whether they may write
    cluster.credentials = MovingCluster.credentials  # type: ignore[attr-defined]
    monkeypatch.setattr(live, "adapter_for", lambda *_a, **_k: cluster)
    out, err = io.StringIO(), io.StringIO()
    code = main(
        ["apply", str(config), "--yes", "--poll-interval", "0", "--state-dir", str(tmp_path / "s")],
        stdout=out,
        stderr=err,
    )
    assert code == Exit.OK, err.getvalue()
    assert "No changes: the cluster matches the file." in out.getvalue()
    assert cluster.instances["a"].status == "READY"


def test_a_drift_is_resolved_when_the_model_is_in_sync_not_when_its_launch_is_sent(
    tmp_path: Path,
) -> None:
    cluster = fake()
    rig = Rig(tmp_path, cluster)
    rig.daemon.run_pass({"start"})  # missing: detected, launch sent
    assert rig.events("drift.detected")
    assert not rig.events("drift.resolved")  # loading is not in sync
    rig.daemon.run_pass({"requeue"})
    (resolved,) = rig.events("drift.resolved")
    assert resolved["uid"] == "a"
