"""One worker of a two-worker cluster is killed (SIGKILL, a crashed host) and comes back: the model
pinned to the other worker is never touched, nothing is terminated, and the model that was on the
dead worker is launched there again once it has re-registered. While the worker is gone its
instance may still be listed without details: that must not read as a changed spec (a replace would
terminate a healthy model after a mere network partition)."""

from __future__ import annotations

import time

import pytest

from tests.faults.conftest import (
    Scenario,
    embedding,
    named,
    ready,
    record,
    terminations,
    wait_converged,
    watch,
)
from tests.harness.daemon_process import event

pytestmark = pytest.mark.integration


def test_a_worker_dies_and_comes_back(cluster_scenario: Scenario) -> None:
    cluster = cluster_scenario.server.cluster
    base, name = cluster_scenario.base, cluster_scenario.name
    stays, dies = cluster_scenario.uid("w0"), cluster_scenario.uid("w1")
    models = {
        stays: embedding(name, placement={"worker": cluster.worker_address(0)}),
        dies: embedding(name, placement={"worker": cluster.worker_address(1)}),
    }
    daemon = cluster_scenario.start_daemon(models, timeout=5)
    wait_converged(daemon, timeout=180)
    created = ready(base)[stays]

    cluster.kill_worker(1)
    daemon.wait_for(event("drift.detected", uid=dies), timeout=90)
    during = watch(daemon, 5)
    assert not [e for e in during if e["event"] == "model.terminated"]
    cluster.start_worker(1)
    cleared = time.monotonic()
    daemon.wait_for(
        lambda e: bool(
            e.get("event") == "pass.finished" and e.get("converged") and dies in ready(base)
        ),
        timeout=120,
    )
    converge = round(time.monotonic() - cleared, 1)
    now = ready(base)
    assert now[stays] == created  # the other worker's model was never touched
    attempts = [(e["uid"], e["error"]) for e in named(daemon, "model.terminate.failed")]
    record(
        "worker killed and restarted",
        converge_seconds=converge,
        unintended_terminations=len(terminations(daemon)),
        terminate_attempts=attempts,
        drift=[(e["uid"], e["kind"], e["reasons"]) for e in named(daemon, "drift.detected")],
    )
    assert terminations(daemon) == []
    assert stays not in {uid for uid, _ in attempts}
    changed = [e for e in named(daemon, "drift.detected") if e["kind"] == "changed"]
    why = "the spec never changed, yet the daemon planned to replace (terminate) the model"
    assert not changed, f"{why}: {changed[:1]}"
    assert not attempts, f"{why}: {attempts[:1]}"
