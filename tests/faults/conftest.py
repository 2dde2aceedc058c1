"""Fault scenarios: the daemon (a subprocess, as systemd runs it) against a real Xinference 4.1.0,
with faults injected by tests/harness/proxy.py, the harness (stop/kill/restart servers and
workers) or the file system. Helpers shared by the scenario modules live here, and the
``scenario`` fixtures (``scenario``, ``auth_scenario``, ``cluster_scenario``: one per server) that
do the setup every scenario repeats -- unique uids, a config file, the daemon, fault proxies -- and
undo it at teardown, so that a test body shows only what its scenario injects.

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
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from tests.harness import server as xh
from tests.harness.daemon_process import DaemonProcess, event, write_atomically
from tests.harness.fixtures import ServerInfo
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


class Scenario:
    """One fault scenario against one of the run's servers (``server``): its files, daemons,
    proxies and models, all undone at teardown (daemons stopped first, so that none relaunches a
    model while the models it launched are terminated)."""

    def __init__(self, server: ServerInfo, tmp_path: Path, suffix: str) -> None:
        self.server = server
        self.base: str = server.base_url
        self.token: str | None = server.token
        self.name: str = server.models[EMBED]  # the registered tiny embedding model
        self.suffix = suffix
        self.config = tmp_path / "config.toml"
        self.state = tmp_path / "state"
        self.daemons: list[DaemonProcess] = []
        self.proxies: list[FaultProxy] = []
        self.uids: list[str] = []

    def uid(self, label: str) -> str:
        """A uid of this scenario (unique in the run); terminated at teardown."""
        uid = f"f-{label}-{self.suffix}"
        self.uids.append(uid)
        return uid

    def proxy(self) -> FaultProxy:
        """A fault proxy in front of the server; stopped at teardown."""
        proxy = FaultProxy(int(self.base.rsplit(":", 1)[1]))
        self.proxies.append(proxy)
        return proxy

    def write_config(
        self,
        models: Mapping[str, Mapping[str, Any]],
        *,
        endpoint: str | None = None,
        timeout: float = 10.0,
        policy: Mapping[str, Any] | None = None,
        auth: Mapping[str, Any] | None = None,
        atomically: bool = False,
    ) -> str:
        """Write ``self.config`` (for the server, or ``endpoint``: a proxy's url); its text."""
        text = config_text(endpoint or self.base, models, timeout=timeout, policy=policy, auth=auth)
        if atomically:
            write_atomically(self.config, text)
        else:
            self.config.write_text(text)
        return text

    def start_daemon(
        self,
        models: Mapping[str, Mapping[str, Any]] | None = None,
        *,
        state: Path | None = None,
        env: Mapping[str, str] | None = None,
        **config: Any,
    ) -> DaemonProcess:
        """Start a daemon on ``self.config`` (written first from ``models`` and ``config``, see
        :meth:`write_config`, unless ``models`` is None) and ``state`` (``self.state``)."""
        if models is not None:
            self.write_config(models, **config)
        daemon = DaemonProcess(self.config, state or self.state, env=env)
        self.daemons.append(daemon)
        return daemon

    def close(self) -> None:
        try:
            for daemon in self.daemons:
                stop_daemon(daemon)
        finally:
            for proxy in self.proxies:
                proxy.stop()
            for uid in self.uids:
                with contextlib.suppress(xh.HarnessError, OSError):
                    xh.terminate_model(self.base, self.token, uid)
        for daemon in self.daemons:
            assert daemon.proc.poll() is not None


@contextlib.contextmanager
def _scenario(server: ServerInfo, tmp_path: Path) -> Iterator[Scenario]:
    scenario = Scenario(server, tmp_path, uuid.uuid4().hex[:6])
    try:
        yield scenario
    finally:
        scenario.close()


@pytest.fixture
def scenario(xinference_server: ServerInfo, tmp_path: Path) -> Iterator[Scenario]:
    """A scenario against the one-node server (auth off)."""
    with _scenario(xinference_server, tmp_path) as s:
        yield s


@pytest.fixture
def auth_scenario(xinference_server_auth: ServerInfo, tmp_path: Path) -> Iterator[Scenario]:
    """A scenario against the one-node server with auth on (``server.username``/``password``)."""
    with _scenario(xinference_server_auth, tmp_path) as s:
        yield s


@pytest.fixture
def cluster_scenario(xinference_cluster: ServerInfo, tmp_path: Path) -> Iterator[Scenario]:
    """A scenario against the supervisor + 2 workers cluster (``server.cluster``)."""
    with _scenario(xinference_cluster, tmp_path) as s:
        yield s


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
