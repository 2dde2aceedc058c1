"""Run ``xinference-reconciler run`` as a subprocess the way systemd does, and read its JSON events.

Shared by the end-to-end tests, the fault scenarios and the daemon benchmark.
"""

from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]


class DaemonProcess:
    """``env`` adds to (or overrides) the defaults: NOTIFY_SOCKET, a 3 s resync, JSON events."""

    def __init__(
        self,
        config: Path,
        state: Path,
        notify: str | None = None,
        env: Mapping[str, str] | None = None,
    ) -> None:
        env = {
            **os.environ,
            "XINFERENCE_RECONCILER_RESYNC_INTERVAL_SECONDS": "3",
            "XINFERENCE_RECONCILER_DEBOUNCE_SECONDS": "0.1",
            "XINFERENCE_RECONCILER_LOG_FORMAT": "json",
            **({"NOTIFY_SOCKET": notify} if notify else {}),
            **(env or {}),
        }
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "daemon", "run", str(config), "--state-dir", str(state)],
            cwd=REPO,
            env=env,
            stderr=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            text=True,
        )
        self.events: queue.Queue[dict[str, Any]] = queue.Queue()
        self.seen: list[dict[str, Any]] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def close(self) -> None:
        """After the process exited: let the reader reach EOF, then close the pipe."""
        self._reader.join(10)
        if self.proc.stderr is not None:
            self.proc.stderr.close()

    def stop(self, timeout: float = 30.0) -> int:
        """SIGTERM, wait up to ``timeout`` s for the exit, close; returns the exit code.

        A daemon still running after ``timeout`` (it finishes a launch in progress before it
        exits) is killed before ``subprocess.TimeoutExpired`` is raised: the caller fails, but
        leaves no process behind (nor a Popen whose ``__del__`` warns in a later test)."""
        if self.proc.poll() is None:
            self.proc.terminate()
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)
            raise
        finally:
            self.close()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            try:
                self.events.put(json.loads(line))
            except json.JSONDecodeError:
                self.events.put({"event": "non-json", "line": line})

    def wait_for(
        self, match: Callable[[dict[str, Any]], bool], timeout: float = 120.0
    ) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                event = self.events.get(timeout=0.5)
            except queue.Empty:
                assert self.proc.poll() is None, f"daemon exited with {self.proc.returncode}"
                continue
            self.seen.append(event)
            if match(event):
                return event
        raise AssertionError(
            f"no matching event in {timeout} s; saw {[e['event'] for e in self.seen[-30:]]}"
        )


def seen_or_wait(
    daemon: DaemonProcess, match: Callable[[dict[str, Any]], bool], timeout: float = 120.0
) -> dict[str, Any]:
    """An event that may already have gone by while the test waited for another (passes do not
    wait for loads, so events of different models interleave in any order)."""
    for seen in daemon.seen:
        if match(seen):
            return seen
    return daemon.wait_for(match, timeout)


def event(name: str, **fields: Any) -> Callable[[dict[str, Any]], bool]:
    return lambda e: e.get("event") == name and all(e.get(k) == v for k, v in fields.items())


def write_atomically(path: Path, text: str) -> None:
    """How editors and deploy tools save: a temporary file renamed over the old one."""
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:6]}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def cpu_embedding_config(base_url: str, model_name: str, uids: list[str]) -> str:
    """A config enforcing one CPU embedding model per uid (what the benchmarks and the soak churn)."""
    lines = [
        "[cluster]",
        f'endpoint = "{base_url}"',
        "timeout_seconds = 30",
        "[policy]",
        'mode = "enforce"',
    ]
    for uid in uids:
        lines += [
            f'[models."{uid}"]',
            f'model_name = "{model_name}"',
            'model_type = "embedding"',
            'model_engine = "sentence_transformers"',
            f'[models."{uid}".placement]',
            'device = "cpu"',
        ]
    return "\n".join(lines) + "\n"


def rss_bytes(pid: int) -> int:
    """Resident memory of a process (VmRSS)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")
