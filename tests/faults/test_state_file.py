"""The ownership state file goes missing, is overwritten with garbage, or cannot be written. The
daemon never crashes, never terminates a model it cannot prove it launched, and reports
state.write_failed when a write fails. A state directory that cannot be created stops the
start-up with daemon.start_failed (exit 1)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.faults.conftest import (
    Scenario,
    embedding,
    named,
    ready,
    record,
    stop_daemon,
    terminations,
    wait_converged,
)
from tests.harness.daemon_process import event

pytestmark = pytest.mark.integration


def test_state_file_missing_or_corrupt(scenario: Scenario) -> None:
    base, state = scenario.base, scenario.state
    uid = scenario.uid("state")
    daemon = scenario.start_daemon({uid: embedding(scenario.name)}, timeout=10)
    daemon.wait_for(event("model.launch.succeeded", uid=uid), timeout=120)
    wait_converged(daemon, timeout=30)
    created = ready(base)[uid]

    (state / "state.json").unlink()  # missing: an empty state; the model is still in sync
    cleared = time.monotonic()
    wait_converged(daemon, timeout=30)
    missing_converge = round(time.monotonic() - cleared, 1)
    wait_converged(daemon, timeout=30)

    (state / "state.json").write_bytes(b"\x00garbage{{{not json")  # corrupt: moved aside
    cleared = time.monotonic()
    wait_converged(daemon, timeout=30)
    corrupt_converge = round(time.monotonic() - cleared, 1)
    assert (state / "state.json.corrupt").read_bytes() == b"\x00garbage{{{not json"
    assert ready(base)[uid] == created

    # the model left the file, but nothing proves it is ours any more: never terminated
    scenario.write_config({}, timeout=10, policy={"on_empty_config": "prune"}, atomically=True)
    daemon.wait_for(event("config.loaded"), timeout=30)
    wait_converged(daemon, timeout=30)
    wait_converged(daemon, timeout=30)
    assert ready(base)[uid] == created
    assert terminations(daemon) == []
    assert daemon.proc.poll() is None
    record(
        "state file missing / corrupt",
        converge_seconds={"missing": missing_converge, "corrupt": corrupt_converge},
        unintended_terminations=0,
    )


def test_state_file_unwritable(scenario: Scenario) -> None:
    """Tests run as root, where chmod does not stop writes: ``state.json`` is made a directory."""
    base, state = scenario.base, scenario.state
    uid = scenario.uid("rostate")
    (state / "state.json").mkdir(parents=True)
    daemon = scenario.start_daemon({uid: embedding(scenario.name)}, timeout=10)
    failed = daemon.wait_for(event("state.write_failed"), timeout=60)
    assert "state.json" in failed["error"]
    daemon.wait_for(event("model.launch.succeeded", uid=uid), timeout=120)
    cleared = time.monotonic()
    wait_converged(daemon, timeout=30)
    converge = round(time.monotonic() - cleared, 1)
    wait_converged(daemon, timeout=30)
    created = ready(base)[uid]
    wait_converged(daemon, timeout=30)
    assert ready(base)[uid] == created
    assert terminations(daemon) == []
    assert len(named(daemon, "model.launch.started")) == 1
    record(
        "state file unwritable",
        converge_seconds=converge,
        unintended_terminations=0,
        write_failed_events=len(named(daemon, "state.write_failed")),
    )


def test_an_unusable_state_directory_stops_the_start(scenario: Scenario, tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a regular file where the state directory's parent should be\n")
    daemon = scenario.start_daemon({}, state=blocker / "state", timeout=10)
    assert daemon.proc.wait(timeout=30) == 1
    stop_daemon(daemon)
    (failed,) = named(daemon, "daemon.start_failed")
    assert "not-a-dir" in failed["error"]
    assert named(daemon, "pass.finished") == []
    record("state directory unusable", converge_seconds=None, unintended_terminations=0)
