"""`xinference-reconciler reload` (the unit's ExecReload=) returns only once a pass that began after
its SIGHUP has ended, and fails when the new file is invalid; the daemon writes the receipt.
Under systemd 252 and 257 the same is checked end to end by tests/systemd/."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from daemon.adapters.reload_ack import ACK_FILE, read_ack, write_ack
from daemon.adapters.systemd import Notifier
from daemon.app import Daemon
from daemon.cli import main
from daemon.cli.reload import request_reload
from daemon.core.desired import ClusterConfig
from daemon.events import configure
from daemon.settings import Settings
from daemon.testing.builders import gpu_worker
from daemon.testing.fake_cluster import FakeCluster
from tests.unit.builders import DAEMON_CONFIG

REPO = Path(__file__).resolve().parents[2]


def later(seconds: float, action: Callable[[], None]) -> None:
    threading.Timer(seconds, action).start()


def test_it_waits_for_a_pass_that_began_after_the_signal(tmp_path: Path) -> None:
    write_ack(tmp_path, pass_started=time.monotonic() - 5, invalid=None)  # an earlier reload
    signals: list[int] = []

    def send(pid: int, sig: int) -> None:
        assert pid == os.getpid()
        signals.append(sig)
        if sig == signal.SIGHUP:
            later(0.3, lambda: write_ack(tmp_path, pass_started=time.monotonic(), invalid=None))

    t0 = time.monotonic()
    assert request_reload(os.getpid(), tmp_path, send=send, timeout=10) is None
    assert time.monotonic() - t0 >= 0.3
    assert signals[0] == signal.SIGHUP
    assert set(signals[1:]) == {0}  # then only "are you still there" probes


def no_signal(pid: int, sig: int) -> None:
    del pid, sig


def test_an_old_receipt_or_one_from_another_process_never_counts(tmp_path: Path) -> None:
    write_ack(tmp_path, pass_started=time.monotonic() - 1, invalid=None)
    problem = request_reload(os.getpid(), tmp_path, send=no_signal, timeout=0.3)
    assert problem is not None
    assert "did not acknowledge the reload within 0.3 s" in problem
    (tmp_path / ACK_FILE).write_text(
        json.dumps({"pid": os.getpid() + 1, "pass_started": time.monotonic() + 60, "invalid": None})
    )
    assert request_reload(os.getpid(), tmp_path, send=no_signal, timeout=0.3)


def test_an_invalid_file_fails_the_reload(tmp_path: Path) -> None:
    def send(pid: int, sig: int) -> None:
        del pid
        if sig == signal.SIGHUP:
            write_ack(tmp_path, pass_started=time.monotonic(), invalid="a.toml: x\na.toml: y")

    problem = request_reload(os.getpid(), tmp_path, send=send)
    assert (
        problem
        == "the new config is invalid, the last good one stays in force: a.toml: x; a.toml: y"
    )


def test_a_daemon_that_exits_fails_the_reload_at_once(tmp_path: Path) -> None:
    def send(pid: int, sig: int) -> None:
        del pid
        if sig == 0:
            raise ProcessLookupError

    assert request_reload(1234, tmp_path, send=send, timeout=30) == (
        "process 1234 exited before acknowledging the reload"
    )


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[tuple[Daemon, Path]]:
    configure(fmt="json", stream=io.StringIO())
    config = tmp_path / "config.toml"
    config.write_text(DAEMON_CONFIG)
    fake = FakeCluster((gpu_worker("127.0.0.1:30001", 24),), known_models=frozenset({"m"}))

    def factory(cluster_config: ClusterConfig, endpoint: str | None) -> FakeCluster:
        del cluster_config, endpoint
        return fake

    d = Daemon(
        config_path=config,
        settings=Settings(state_dir=tmp_path / "state", resync_interval_seconds=3600.0),
        cluster_factory=factory,
        notifier=Notifier(environ={}),
    )
    runner = threading.Thread(target=d.run)
    runner.start()
    try:
        deadline = time.monotonic() + 10
        while d.passes < 1 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert d.passes >= 1
        yield d, config
    finally:
        d.stop()
        runner.join(15)


def test_the_daemon_acknowledges_each_sighup_pass(daemon: tuple[Daemon, Path]) -> None:
    d, config = daemon
    state = d.settings.state_dir
    assert read_ack(state) == {"pid": os.getpid(), "pass_started": None, "invalid": None}

    def hup(pid: int, sig: int) -> None:
        del pid
        if sig == signal.SIGHUP:
            d._on_signal(signal.SIGHUP, None)  # what the real handler does

    before = d.passes
    assert request_reload(os.getpid(), state, send=hup, timeout=10) is None
    assert d.passes > before

    config.write_text(DAEMON_CONFIG + "\nbroken = [\n")
    problem = request_reload(os.getpid(), state, send=hup, timeout=10)
    assert problem is not None
    assert problem.startswith("the new config is invalid, the last good one stays in force: ")
    assert "TOML" in problem

    config.write_text(DAEMON_CONFIG)
    assert request_reload(os.getpid(), state, send=hup, timeout=10) is None


DAEMON_STANDIN = textwrap.dedent(
    """
    import signal, sys, time
    from pathlib import Path
    from daemon.adapters.reload_ack import write_ack
    state = Path(sys.argv[1])
    write_ack(state, pass_started=None, invalid=None)
    hups = []
    signal.signal(signal.SIGHUP, lambda *_: hups.append(1))
    print("ready", flush=True)
    while True:
        if hups:
            hups.clear()
            taken = time.monotonic()
            time.sleep(0.5)  # the pass
            write_ack(state, pass_started=taken, invalid=None)
        time.sleep(0.02)
    """
)


def test_the_command_signals_a_real_process_and_waits(tmp_path: Path) -> None:
    child = subprocess.Popen(
        [sys.executable, "-c", DAEMON_STANDIN, str(tmp_path)],
        stdout=subprocess.PIPE,
        text=True,
        cwd=REPO,
    )
    try:
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "ready"
        err = io.StringIO()
        t0 = time.monotonic()
        argv = ["reload", "--pid", str(child.pid), "--state-dir", str(tmp_path)]
        assert main(argv, stderr=err) == 0, err.getvalue()
        assert time.monotonic() - t0 >= 0.5
        assert err.getvalue() == ""
    finally:
        child.kill()
        child.communicate()
    err = io.StringIO()
    assert main([*argv, "--timeout", "1"], stderr=err) == 1
    event = json.loads(err.getvalue())
    assert event["event"] == "reload.failed"
    assert event["level"] == "error"
    assert event["error"] == f"no process {child.pid}"
