"""Network faults between the daemon and a real Xinference, injected by the loopback fault proxy:
the server down at start-up (connection reset, then accepted but never answered), answers slower
than the configured timeout, 5xx bursts, and a launch whose answer is lost to a timeout."""

from __future__ import annotations

import json
import time
from datetime import datetime
from typing import Any

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
from tests.harness.proxy import DROP, PASS, RESET, delay, status

pytestmark = pytest.mark.integration


def stamp(e: dict[str, Any]) -> datetime:
    return datetime.fromisoformat(e["timestamp"].replace("Z", "+00:00"))


def test_server_down_when_the_daemon_starts(scenario: Scenario) -> None:
    base = scenario.base
    proxy = scenario.proxy()
    proxy.set(RESET)
    uid = scenario.uid("down")
    daemon = scenario.start_daemon({uid: embedding(scenario.name)}, endpoint=proxy.url, timeout=2)

    unreachable = daemon.wait_for(event("cluster.unreachable"), timeout=30)
    assert proxy.url in unreachable["endpoint"]
    assert "cannot connect" in unreachable["error"]
    watch(daemon, 4)  # connection resets at every resync
    proxy.set(DROP)  # now the port accepts but nothing ever answers: each call times out
    during = watch(daemon, 7)
    assert len(named(daemon, "cluster.unreachable")) == 1  # once until it recovers
    assert not [e for e in during if e["event"].startswith(("model.", "pass."))]
    assert any(" /status " in line for line in proxy.requests())

    proxy.set(PASS)
    cleared = time.monotonic()
    daemon.wait_for(event("cluster.recovered"), timeout=30)
    daemon.wait_for(event("model.launch.succeeded", uid=uid), timeout=120)
    wait_converged(daemon, timeout=30)
    converge = round(time.monotonic() - cleared, 1)
    assert uid in ready(base)
    assert terminations(daemon) == []
    record("server down at start", converge_seconds=converge, unintended_terminations=0)


def test_answers_slower_than_the_timeout(scenario: Scenario) -> None:
    base = scenario.base
    proxy = scenario.proxy()
    uid = scenario.uid("slow")
    daemon = scenario.start_daemon({uid: embedding(scenario.name)}, endpoint=proxy.url, timeout=1.5)
    daemon.wait_for(event("model.launch.succeeded", uid=uid), timeout=120)
    wait_converged(daemon, timeout=30)
    created = ready(base)[uid]

    proxy.set(delay(4))  # every answer arrives 4 s after the request, the timeout is 1.5 s
    unreachable = daemon.wait_for(event("cluster.unreachable"), timeout=30)
    assert "no answer within 1.5 s" in unreachable["error"]
    during = watch(daemon, 8)
    assert not [e for e in during if e["event"].startswith("model.")]
    assert len(named(daemon, "cluster.unreachable")) == 1

    proxy.set(PASS)
    cleared = time.monotonic()
    daemon.wait_for(event("cluster.recovered"), timeout=30)
    wait_converged(daemon, timeout=30)
    converge = round(time.monotonic() - cleared, 1)
    assert ready(base)[uid] == created  # the same instance: never terminated or relaunched
    assert terminations(daemon) == []
    record("answers slower than the timeout", converge_seconds=converge, unintended_terminations=0)


def test_5xx_bursts(scenario: Scenario) -> None:
    base, name = scenario.base, scenario.name
    proxy = scenario.proxy()
    first, second = scenario.uid("5xx-a"), scenario.uid("5xx-b")
    daemon = scenario.start_daemon({first: embedding(name)}, endpoint=proxy.url, timeout=5)
    daemon.wait_for(event("model.launch.succeeded", uid=first), timeout=120)
    wait_converged(daemon, timeout=30)
    created = ready(base)[first]

    # a burst of 503 on the model list: one observation fails, reported once, nothing done
    proxy.set(status(503, "Service Unavailable: busy"), match=r"^GET /v1/models ", count=3)
    unreachable = daemon.wait_for(event("cluster.unreachable"), timeout=30)
    assert "HTTP 503" in unreachable["error"]
    cleared = time.monotonic()
    daemon.wait_for(event("cluster.recovered"), timeout=30)
    wait_converged(daemon, timeout=30)
    burst_converge = round(time.monotonic() - cleared, 1)
    assert proxy.pending() == 0
    assert len(named(daemon, "cluster.unreachable")) == 1

    # a 500 on the launch itself: a failed launch with backoff (the server answered: nothing was
    # started); the first model is never touched
    proxy.set(status(500, "boom"), match=r"^POST /v1/models\?", count=1)
    scenario.write_config(
        {first: embedding(name), second: embedding(name)},
        endpoint=proxy.url,
        timeout=5,
        atomically=True,
    )
    failed = daemon.wait_for(event("model.launch.failed", uid=second), timeout=30)
    assert "HTTP 500" in failed["error"]
    assert failed["attempts"] == 1
    assert failed["retry_in_seconds"] == 15
    cleared = time.monotonic()
    retried = daemon.wait_for(event("model.launch.started", uid=second), timeout=60)
    waited = (stamp(retried) - stamp(failed)).total_seconds()
    assert waited >= 14, f"retried {waited:.1f} s after the failure, before its 15 s backoff"
    daemon.wait_for(event("model.launch.succeeded", uid=second), timeout=120)
    wait_converged(daemon, timeout=30)
    launch_converge = round(time.monotonic() - cleared, 1)
    assert len(named(daemon, "model.launch.failed")) == 1
    assert proxy.pending() == 0
    assert ready(base)[first] == created
    assert terminations(daemon) == []
    record(
        "5xx bursts",
        converge_seconds=burst_converge,
        launch_retry_converge_seconds=launch_converge,
        unintended_terminations=0,
    )


def test_a_launch_whose_answer_is_lost_to_a_timeout_is_still_ours(scenario: Scenario) -> None:
    """The server accepts the launch but its answer comes after the client's timeout: the model
    loads anyway. The daemon must neither launch it twice nor lose track of it: once it is READY it
    is recorded as launched by this tool, so removing it from the file terminates it
    (prune = "managed")."""
    base, name, state = scenario.base, scenario.name, scenario.state
    proxy = scenario.proxy()
    uid = scenario.uid("lost")
    proxy.set(delay(4), match=r"^POST /v1/models\?")  # every launch answer comes too late
    daemon = scenario.start_daemon({uid: embedding(name)}, endpoint=proxy.url, timeout=2)
    # A lost answer is not a failure: the launch is recorded as ours and loading before it is
    # sent, and later passes see it listed (after the proxy's delay) and READY.
    daemon.wait_for(event("model.launch.started", uid=uid), timeout=30)
    cleared = time.monotonic()
    wait_converged(daemon, timeout=120)
    converge = round(time.monotonic() - cleared, 1)
    assert not named(daemon, "model.launch.failed")
    assert uid in ready(base)
    posts = len(proxy.requests(r"^POST /v1/models\?"))
    owned = (state / "state.json").exists() and uid in json.loads(
        (state / "state.json").read_text()
    ).get("launched", {})
    record(
        "launch answer lost to a timeout",
        converge_seconds=converge,
        unintended_terminations=len(terminations(daemon)),
        recorded_as_ours=owned,
        launch_requests=posts,
    )
    assert owned, (
        "the model the daemon launched is READY but not recorded as its own: "
        "prune = 'managed' will never remove it"
    )
    assert posts == 1, f"launched {posts} times: the retry ignored the backoff"
