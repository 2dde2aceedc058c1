"""Fault scenarios: the daemon (a subprocess, as systemd runs it) against a real Xinference 4.1.0,
with faults injected by tests/harness/proxy.py, the harness (stop/kill/restart servers and
workers) or the file system. Helpers shared by the scenario modules live here.

Set ``XR_FAULTS_REPORT=/path/file.jsonl`` to have every scenario append its measurements (time
to converge after the fault cleared, unintended terminations) to that file; docs/reliability.md
is filled from it.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import signal
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from tests.harness import server as xh
from tests.harness.daemon_process import DaemonProcess, event
from tests.harness.proxy import FaultProxy

EMBED = "embedding"
REPORT_ENV = "XR_FAULTS_REPORT"


def record(scenario: str, **fields: Any) -> None:
    """Append one measurement to $XR_FAULTS_REPORT (when set)."""
    path = os.environ.get(REPORT_ENV)
    if not path:
        return
    with open(path, "a", encoding="utf-8") as handle:
        handle.write(json.dumps({"scenario": scenario, **fields}) + "\n")


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    return str(value)


def embedding(name: str, **extra: Any) -> dict[str, Any]:
    """A CPU embedding model spec (the cheapest real launch: ~9 s on this machine)."""
    return {
        "model_name": name,
        "model_type": "embedding",
        "model_engine": "sentence_transformers",
        "placement": {"device": "cpu", **extra.pop("placement", {})},
        **extra,
    }


def config_text(
    endpoint: str,
    models: Mapping[str, Mapping[str, Any]],
    *,
    timeout: float = 10.0,
    policy: Mapping[str, Any] | None = None,
    auth: Mapping[str, Any] | None = None,
) -> str:
    lines = ["[cluster]", f"endpoint = {toml_value(endpoint)}", f"timeout_seconds = {timeout}"]
    if auth:
        lines.append("[cluster.auth]")
        lines += [f"{k} = {toml_value(v)}" for k, v in auth.items()]
    lines.append("[policy]")
    for k, v in {"mode": "enforce", "prune": "managed", **(policy or {})}.items():
        lines.append(f"{k} = {toml_value(v)}")
    for uid, spec in models.items():
        lines.append(f'[models."{uid}"]')
        lines += [f"{k} = {toml_value(v)}" for k, v in spec.items() if not isinstance(v, dict)]
        for name, table in spec.items():
            if isinstance(table, dict):
                lines.append(f'[models."{uid}".{name}]')
                lines += [f"{k} = {toml_value(v)}" for k, v in table.items()]
    return "\n".join(lines) + "\n"


def drain(daemon: DaemonProcess) -> list[dict[str, Any]]:
    """Move every event already read into ``daemon.seen``; returns all events seen so far."""
    while True:
        try:
            daemon.seen.append(daemon.events.get_nowait())
        except queue.Empty:
            return daemon.seen


def named(daemon: DaemonProcess, name: str) -> list[dict[str, Any]]:
    return [e for e in drain(daemon) if e.get("event") == name]


def terminations(daemon: DaemonProcess) -> list[dict[str, Any]]:
    return named(daemon, "model.terminated")


def stop_daemon(daemon: DaemonProcess, timeout: float = 30.0) -> int:
    """SIGTERM, wait, read the last events. Returns the exit code."""
    if daemon.proc.poll() is None:
        daemon.proc.send_signal(signal.SIGTERM)
        try:
            daemon.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            daemon.proc.kill()
            daemon.proc.wait(timeout=10)
    if daemon.proc.stderr is not None and not daemon.proc.stderr.closed:
        daemon.close()
    drain(daemon)
    return daemon.proc.returncode


def wait_converged(daemon: DaemonProcess, timeout: float) -> float:
    """Wait for a pass that ends converged; the seconds it took."""
    started = time.monotonic()
    daemon.wait_for(event("pass.finished", converged=True), timeout=timeout)
    return round(time.monotonic() - started, 1)


def ready(base_url: str, token: str | None = None) -> dict[str, float]:
    """uid -> instance_created_ts of the READY instances (a relaunch changes the timestamp)."""
    return {
        i["model_uid"]: i.get("instance_created_ts", 0)
        for i in xh.instances(base_url, token)
        if i.get("status") == "READY"
    }


@pytest.fixture
def suffix() -> str:
    return uuid.uuid4().hex[:6]


@pytest.fixture
def daemons() -> Iterator[Callable[..., DaemonProcess]]:
    """Start daemons; every one still running at teardown is stopped (SIGTERM, then SIGKILL)."""
    started: list[DaemonProcess] = []

    def start(config: Path, state: Path, env: Mapping[str, str] | None = None) -> DaemonProcess:
        daemon = DaemonProcess(config, state, env=env)
        started.append(daemon)
        return daemon

    yield start
    for daemon in started:
        stop_daemon(daemon)
        assert daemon.proc.poll() is not None


@pytest.fixture
def proxies() -> Iterator[Callable[[str], FaultProxy]]:
    """A fault proxy in front of a server's base URL; all stopped at teardown."""
    made: list[FaultProxy] = []

    def make(base_url: str) -> FaultProxy:
        port = int(base_url.rsplit(":", 1)[1])
        proxy = FaultProxy(port)
        made.append(proxy)
        return proxy

    yield make
    for proxy in made:
        proxy.stop()


@pytest.fixture
def launched() -> Iterator[list[tuple[str, str | None, str]]]:
    """(base_url, token, uid) of models a scenario may have launched: terminated at teardown
    (the session's servers are shared)."""
    uids: list[tuple[str, str | None, str]] = []
    yield uids
    for base, token, uid in uids:
        with contextlib.suppress(xh.HarnessError, OSError):
            xh.terminate_model(base, token, uid)


def watch(daemon: DaemonProcess, seconds: float) -> list[dict[str, Any]]:
    """Read events for ``seconds`` while asserting the daemon keeps running; returns them."""
    mark = len(drain(daemon))
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        assert daemon.proc.poll() is None, f"daemon exited with {daemon.proc.returncode}"
        try:
            daemon.seen.append(daemon.events.get(timeout=0.2))
        except queue.Empty:
            continue
    return daemon.seen[mark:]
