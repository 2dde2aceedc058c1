"""The daemon loop in-process, against the fake cluster: passes on request, bad files never acted on,
notices once, systemd notifications over a real AF_UNIX datagram socket, the watchdog, the lock."""

from __future__ import annotations

import io
import json
import os
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from daemon.adapters.systemd import InstanceLock, Notifier
from daemon.app import Daemon
from daemon.core.desired import ClusterConfig
from daemon.events import configure
from daemon.exit_codes import Exit
from daemon.settings import Settings
from daemon.testing.builders import gpu_worker
from daemon.testing.fake_cluster import FakeCluster
from tests.unit.builders import DAEMON_CONFIG

W1 = "127.0.0.1:30001"
GOOD = DAEMON_CONFIG


class Events:
    """Captures the JSON event lines the daemon writes."""

    def __init__(self) -> None:
        self.buffer = io.StringIO()
        configure(fmt="json", stream=self.buffer)

    def all(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.buffer.getvalue().splitlines() if line.strip()]

    def named(self, name: str) -> list[dict[str, Any]]:
        return [e for e in self.all() if e["event"] == name]


@pytest.fixture
def events() -> Events:
    return Events()


def make(
    tmp_path: Path,
    text: str = GOOD,
    *,
    cluster: FakeCluster | None = None,
    clock: Any = time.time,
    monotonic: Any = time.monotonic,
    notifier: Notifier | None = None,
    **settings: Any,
) -> tuple[Daemon, FakeCluster, Path]:
    config = tmp_path / "config.toml"
    config.write_text(text)
    fake = cluster or FakeCluster((gpu_worker(W1, 24),), known_models=frozenset({"m"}))
    built = Settings(
        state_dir=tmp_path / "state",
        resync_interval_seconds=settings.pop("resync", 3600.0),
        **settings,
    )

    def factory(cluster_config: ClusterConfig, endpoint: str | None) -> FakeCluster:
        del cluster_config, endpoint
        return fake

    daemon = Daemon(
        config_path=config,
        settings=built,
        cluster_factory=factory,
        notifier=notifier or Notifier(environ={}),
        clock=clock,
        monotonic=monotonic,
    )
    return daemon, fake, config


def first_pass(daemon: Daemon) -> None:
    daemon.load()
    daemon.run_pass({"start"})


def test_an_invalid_first_config_exits_78_so_systemd_does_not_restart_loop(
    tmp_path: Path, events: Events
) -> None:
    daemon, _, _ = make(tmp_path, "[policy]\nmode = 'maybe'\n")
    assert daemon.run() == Exit.CONFIG
    (invalid,) = events.named("config.invalid")
    assert any("policy.mode" in p for p in invalid["problems"])


def test_a_second_daemon_on_the_same_state_dir_refuses_to_start(
    tmp_path: Path, events: Events
) -> None:
    lock = InstanceLock(tmp_path / "state" / "daemon.lock")
    lock.acquire()
    try:
        daemon, _, _ = make(tmp_path)
        assert daemon.run() == Exit.ERROR
        assert "holds" in events.named("daemon.start_failed")[0]["error"]
    finally:
        lock.release()


def test_an_invalid_file_at_run_time_changes_nothing_and_is_reported_once(
    tmp_path: Path, events: Events
) -> None:
    daemon, fake, config = make(tmp_path)
    first_pass(daemon)
    assert set(fake.instances) == {"a"}
    config.write_text(
        GOOD.replace("[models.a]", '[models.b]\nmodel_name = "m"\n[models.a]') + "\nbroken = ["
    )
    for _ in range(3):
        daemon.run_pass({"file"})
    assert set(fake.instances) == {"a"}
    assert len(events.named("config.invalid")) == 1
    # fixing it is picked up by the next pass
    config.write_text(
        GOOD + '\n[models.b]\nmodel_name = "m"\nmodel_engine = "Transformers"\n'
        "[models.b.memory]\nestimate_gib = 4.0\n"
    )
    daemon.run_pass({"file"})
    assert set(fake.instances) == {"a", "b"}
    assert events.named("config.loaded")


@pytest.mark.parametrize("how", ["delete", "empty", "truncate"])
def test_a_deleted_emptied_or_truncated_file_terminates_nothing_by_default(
    tmp_path: Path, events: Events, how: str
) -> None:
    daemon, fake, config = make(tmp_path)
    first_pass(daemon)
    if how == "delete":
        config.unlink()
    elif how == "empty":
        config.write_text("")
    else:
        config.write_text(GOOD[: len(GOOD) // 2])
    daemon.run_pass({"file"})
    assert set(fake.instances) == {"a"}
    assert events.named("config.invalid")


def test_a_deleted_file_prunes_only_when_the_policy_says_so(tmp_path: Path, events: Events) -> None:
    daemon, fake, config = make(
        tmp_path, GOOD.replace('mode = "enforce"', 'mode = "enforce"\non_empty_config = "prune"')
    )
    first_pass(daemon)
    config.unlink()
    daemon.run_pass({"file"})
    assert fake.instances == {}
    assert events.named("config.emptied")


def test_drift_is_reported_once_reminded_and_resolved(tmp_path: Path, events: Events) -> None:
    now = [1000.0]
    daemon, fake, _ = make(
        tmp_path,
        GOOD.replace('mode = "enforce"', 'mode = "observe"'),
        clock=lambda: now[0],
        monotonic=lambda: now[0],
        drift_reminder_seconds=600.0,
    )
    first_pass(daemon)
    for _ in range(3):
        now[0] += 60
        daemon.run_pass({"resync"})
    assert len(events.named("drift.detected")) == 1
    assert events.named("drift.detected")[0]["kind"] == "missing"
    now[0] += 600
    daemon.run_pass({"resync"})
    assert len(events.named("drift.reminder")) == 1
    fake.start_by_hand("a", engine="Transformers")
    daemon.run_pass({"resync"})
    assert len(events.named("drift.resolved")) == 1
    for event in events.all():
        if event["event"].startswith("drift."):
            assert event["pass_id"]
            assert event["config_revision"]


def test_an_unreachable_cluster_is_reported_once_and_its_recovery_too(
    tmp_path: Path, events: Events
) -> None:
    daemon, fake, _ = make(tmp_path)
    fake.down = True
    first_pass(daemon)
    daemon.run_pass({"resync"})
    assert len(events.named("cluster.unreachable")) == 1
    fake.down = False
    daemon.run_pass({"resync"})
    assert len(events.named("cluster.recovered")) == 1
    assert set(fake.instances) == {"a"}


@pytest.fixture
def notify_socket(tmp_path: Path) -> Iterator[tuple[socket.socket, str]]:
    path = str(tmp_path / "notify.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(10)
    yield sock, path
    sock.close()


def received(sock: socket.socket, until: str, limit: float = 10.0) -> list[str]:
    messages: list[str] = []
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        try:
            messages.append(sock.recv(4096).decode())
        except TimeoutError:
            break
        if any(until in m for m in messages):
            break
    return messages


@pytest.mark.usefixtures("events")
def test_the_notify_protocol_over_a_real_datagram_socket(
    tmp_path: Path, notify_socket: tuple[socket.socket, str]
) -> None:
    sock, path = notify_socket
    notifier = Notifier(
        environ={"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "400000", "WATCHDOG_PID": str(os.getpid())}
    )
    daemon, _, _ = make(tmp_path, notifier=notifier)
    runner = threading.Thread(target=daemon.run)
    runner.start()
    try:
        ready = received(sock, "READY=1")
        # READY=1 as soon as the first pass has sent its launch: the model is still loading
        assert any("READY=1" in m and "STATUS=0/1 models in sync, 1 loading" in m for m in ready)
        # the pass the load requeued sees it READY
        assert any("STATUS=1/1 models in sync" in m for m in received(sock, "1/1 models"))
        assert any("WATCHDOG=1" in m for m in received(sock, "WATCHDOG=1"))
        daemon.request_pass("sighup")
        daemon._hup = True
        reload = received(sock, "READY=1")
        assert any("RELOADING=1" in m and "MONOTONIC_USEC=" in m for m in reload)
    finally:
        daemon.stop()
        runner.join(15)
    assert not runner.is_alive()
    assert any("STOPPING=1" in m for m in received(sock, "STOPPING=1"))


class StuckCluster(FakeCluster):
    """Observation hangs forever after the first pass (a wedged loop, not a slow server)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.wedged = threading.Event()
        self.release = threading.Event()

    def observe(self) -> Any:
        if self.wedged.is_set():
            self.release.wait()
        return super().observe()


@pytest.mark.usefixtures("events")
def test_a_stuck_loop_stops_petting_the_watchdog(
    tmp_path: Path, notify_socket: tuple[socket.socket, str]
) -> None:
    sock, path = notify_socket
    notifier = Notifier(environ={"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "400000"})
    stuck = StuckCluster((gpu_worker(W1, 24),), known_models=frozenset({"m"}))
    daemon, _, _ = make(tmp_path, notifier=notifier, cluster=stuck)
    runner = threading.Thread(target=daemon.run)
    runner.start()
    try:
        assert any("WATCHDOG=1" in m for m in received(sock, "WATCHDOG=1"))
        stuck.wedged.set()
        daemon.request_pass("resync")
        time.sleep(1.0)  # the loop is now inside observe(), making no progress
        while True:  # drain what was sent before it wedged
            try:
                sock.settimeout(0.05)
                sock.recv(4096)
            except TimeoutError:
                break
        sock.settimeout(1.5)
        quiet = received(sock, "WATCHDOG=1", limit=1.5)
        assert not any("WATCHDOG=1" in m for m in quiet), quiet
    finally:
        stuck.release.set()
        daemon.stop()
        runner.join(15)


def test_requests_during_a_pass_coalesce_into_one_more_pass(tmp_path: Path) -> None:
    daemon, _, _ = make(tmp_path)
    for reason in ("file", "file", "resync", "file"):
        daemon.request_pass(reason)
    assert daemon._take_requests() == {"file", "resync"}
    assert daemon._take_requests() == set()


def test_notify_never_blocks_on_a_manager_that_does_not_read(tmp_path: Path) -> None:
    path = str(tmp_path / "full.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    try:
        notifier = Notifier(environ={"NOTIFY_SOCKET": path})
        start = time.monotonic()
        sent = [notifier.notify(f"STATUS={'x' * 1000} {i}") for i in range(2000)]
        assert time.monotonic() - start < 5
        assert not all(sent)  # the buffer filled up; the sends were dropped, not blocked on
    finally:
        sock.close()
