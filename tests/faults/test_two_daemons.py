"""Two daemons started at the same moment on one state directory: exactly one runs, the other
exits 1 with daemon.start_failed, and the model is launched once."""

from __future__ import annotations

import time

import pytest

from tests.faults.conftest import Scenario, embedding, named, record, stop_daemon
from tests.harness.daemon_process import event

pytestmark = pytest.mark.integration


def test_two_daemons_started_at_once_on_one_state_dir(scenario: Scenario) -> None:
    uid = scenario.uid("twice")
    scenario.write_config({uid: embedding(scenario.name)}, timeout=10)
    pair = [scenario.start_daemon(), scenario.start_daemon()]
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and all(d.proc.poll() is None for d in pair):
        time.sleep(0.1)
    (loser,) = [d for d in pair if d.proc.poll() is not None]
    (winner,) = [d for d in pair if d is not loser]
    assert stop_daemon(loser) == 1
    (failed,) = named(loser, "daemon.start_failed")
    assert "holds" in failed["error"]
    assert named(loser, "model.launch.started") == []
    winner.wait_for(event("pass.finished", converged=True), timeout=120)
    assert len(named(winner, "model.launch.started")) == 1
    assert named(winner, "model.terminated") == []
    record("two daemons at once", converge_seconds=None, unintended_terminations=0)
