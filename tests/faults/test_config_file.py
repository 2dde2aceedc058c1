"""The config file goes bad while the daemon runs: deleted, emptied, truncated mid-write, invalid
UTF-8, larger than 4 MiB. Each is reported as config.invalid (naming the last good revision that
stays in force), nothing is launched or terminated, and restoring the file changes nothing."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.faults.conftest import (
    Scenario,
    drain,
    embedding,
    ready,
    record,
    terminations,
    wait_converged,
)
from tests.harness.daemon_process import event, write_atomically

pytestmark = pytest.mark.integration


def _delete(path: Path, good: str) -> None:
    del good
    path.unlink()


def _empty(path: Path, good: str) -> None:
    del good
    path.write_text("")


def _truncate(path: Path, good: str) -> None:
    # a writer that died halfway through the last line: `device = "`
    with path.open("r+b") as handle:
        handle.truncate(len(good.encode()) - 5)


def _not_utf8(path: Path, good: str) -> None:
    path.write_bytes(good.encode() + b"# caf\xe9 \xff\xfe\n")


def _huge(path: Path, good: str) -> None:
    path.write_bytes(good.encode() + (b"# padding" + b"." * 90 + b"\n") * 43_000)


FAULTS: list[tuple[str, Callable[[Path, str], None], str]] = [
    ("deleted", _delete, "file not found"),
    ("emptied", _empty, "the file is empty"),
    ("truncated mid-write", _truncate, "TOML syntax error"),
    ("invalid UTF-8", _not_utf8, "not valid UTF-8"),
    ("huge (> 4 MiB)", _huge, "refused"),
]


def test_a_bad_config_file_changes_nothing(scenario: Scenario) -> None:
    base, config = scenario.base, scenario.config
    uid = scenario.uid("cfg")
    good = scenario.write_config({uid: embedding(scenario.name)}, timeout=10)
    config.chmod(0o600)
    daemon = scenario.start_daemon()
    revision = daemon.wait_for(event("config.loaded"), timeout=30)["revision"]
    daemon.wait_for(event("model.launch.succeeded", uid=uid), timeout=120)
    wait_converged(daemon, timeout=30)
    created = ready(base)[uid]

    times = {}
    for label, fault, problem in FAULTS:
        mark = len(drain(daemon))
        fault(config, good)
        invalid = daemon.wait_for(event("config.invalid"), timeout=30)
        assert any(problem in p for p in invalid["problems"]), (label, invalid["problems"])
        assert invalid["keeping"] == revision, label
        daemon.wait_for(event("pass.finished"), timeout=30)  # a pass with the last good config
        daemon.wait_for(event("pass.finished"), timeout=30)  # and a resync later: reported once
        write_atomically(config, good)
        config.chmod(0o600)
        restored = time.monotonic()
        wait_converged(daemon, timeout=30)
        times[label] = round(time.monotonic() - restored, 1)
        after = drain(daemon)[mark:]
        assert [e["event"] for e in after].count("config.invalid") == 1, label
        assert not [e for e in after if e["event"].startswith("model.")], label
        assert ready(base)[uid] == created, label

    assert terminations(daemon) == []
    assert daemon.proc.poll() is None
    record("config file faults", converge_seconds=times, unintended_terminations=0)
