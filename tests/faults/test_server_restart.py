"""The real server is stopped and started again (same port, same home) while the daemon waits for a
launch to become READY: the daemon keeps running, terminates nothing, and launches the model again
once the server is back."""

from __future__ import annotations

import time
from typing import Any

import pytest

from tests.faults.conftest import (
    Scenario,
    embedding,
    named,
    ready,
    record,
    terminations,
)
from tests.harness import server as xh
from tests.harness.daemon_process import event

pytestmark = pytest.mark.integration


def test_server_restarted_while_a_launch_is_loading(
    scenario: Scenario, tiny_models: dict[str, Any]
) -> None:
    base, name = scenario.base, scenario.name
    uid = scenario.uid("restart")
    # launch_timeout_seconds: a realistic deadline for a big model; the tiny one loads in ~10 s
    daemon = scenario.start_daemon(
        {uid: embedding(name)}, timeout=5, policy={"launch_timeout_seconds": 600}
    )
    daemon.wait_for(event("model.launch.started", uid=uid), timeout=60)
    time.sleep(1.0)  # the server accepted it and is loading it
    scenario.server.server.restart()
    xh.register_custom_models(base, None, tiny_models)  # idempotent: they persist in its home
    cleared = time.monotonic()
    try:
        daemon.wait_for(
            lambda e: bool(
                e.get("event") == "pass.finished" and e.get("converged") and uid in ready(base)
            ),
            timeout=90,
        )
    finally:
        seconds = round(time.monotonic() - cleared, 1)
        record(
            "server restarted during a launch",
            converge_seconds=seconds if uid in ready(base) else None,
            unintended_terminations=len(terminations(daemon)),
            launch_failed=[e["error"] for e in named(daemon, "model.launch.failed")],
        )
    assert terminations(daemon) == []
    assert daemon.proc.poll() is None
    if named(daemon, "cluster.unreachable"):
        assert named(daemon, "cluster.recovered")
