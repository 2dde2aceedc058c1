"""A model whose launch always fails on the real server (its name is unknown): the failure is
reported with its backoff, the backoff doubles and is capped, a spec change retries it at once,
and the other model in the file is launched and never touched."""

from __future__ import annotations

import json
import os
import time

import pytest

from tests.faults.conftest import Scenario, embedding, ready, record, terminations
from tests.harness.daemon_process import event, seen_or_wait

pytestmark = pytest.mark.integration


def test_a_launch_that_always_fails_backs_off_capped_and_resets_on_a_spec_change(
    scenario: Scenario,
) -> None:
    base, state, suffix = scenario.base, scenario.state, scenario.suffix
    good, bad = scenario.uid("good"), scenario.uid("bad")
    models = {good: embedding(scenario.name), bad: embedding(f"no-such-embedding-{suffix}")}
    daemon = scenario.start_daemon(models, timeout=10)

    first = daemon.wait_for(event("model.launch.failed", uid=bad), timeout=60)
    assert (first["attempts"], first["retry_in_seconds"]) == (1, 15)
    # The retry comes at the end of its backoff, whether or not the good model is still loading.
    second = daemon.wait_for(event("model.launch.failed", uid=bad, attempts=2), timeout=90)
    assert second["retry_in_seconds"] == 30
    seen_or_wait(daemon, event("model.launch.succeeded", uid=good), timeout=120)
    created = ready(base)[good]
    failure = json.loads((state / "state.json").read_text())["failures"][bad]
    assert failure["attempts"] == 2
    assert failure["next_retry_at"] == pytest.approx(time.time() + 30, abs=10)

    # many failures later (written into the state file, which every pass re-reads): capped
    doc = json.loads((state / "state.json").read_text())
    doc["failures"][bad].update(attempts=9, next_retry_at=time.time())
    tmp = state / ".faults.tmp"
    tmp.write_text(json.dumps(doc))
    os.replace(tmp, state / "state.json")
    capped = daemon.wait_for(event("model.launch.failed", uid=bad), timeout=30)
    assert (capped["attempts"], capped["retry_in_seconds"]) == (10, 600)

    # a spec change resets the backoff: retried at once, counted from 1 again
    models[bad] = embedding(f"no-such-embedding-{suffix}-v2")
    edited = time.monotonic()
    scenario.write_config(models, timeout=10, atomically=True)
    reset = daemon.wait_for(event("model.launch.failed", uid=bad), timeout=30)
    assert (reset["attempts"], reset["retry_in_seconds"]) == (1, 15)
    retried_after = round(time.monotonic() - edited, 1)
    assert retried_after < 10

    assert ready(base)[good] == created
    assert terminations(daemon) == []
    record(
        "launch always fails",
        converge_seconds=None,
        spec_change_retried_after_seconds=retried_after,
        unintended_terminations=0,
    )
