"""Find (and end) the processes a test run started and left behind.

A run is marked with a unique ``XR_TEST_RUN`` in ``os.environ`` (:func:`mark_run`, called when the
fixture registry is configured), which every child process inherits: daemons, Xinference servers,
their model processes, anything ``subprocess`` starts. Model processes rewrite their environment
block (setproctitle), so processes are also claimed by session: every harness server starts in a
session of its own, recorded in ``tests.harness.server.STARTED_SESSIONS``. The kernel does not hand
out a pid that is still some process's session id, so a live process in one of those sessions is
one of ours -- unless the session's leader is alive and unmarked (the pid was reused after the
session emptied), which :func:`run_processes` checks.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

RUN_ENV = "XR_TEST_RUN"


@dataclass(frozen=True)
class Proc:
    pid: int
    sid: int
    environ: frozenset[bytes]
    command: str

    def __str__(self) -> str:
        return f"pid {self.pid} ({self.command[:160]})"


def mark_run() -> str:
    """Give this run a fresh id that every process started from now on inherits."""
    run_id = uuid.uuid4().hex
    os.environ[RUN_ENV] = run_id
    return run_id


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError:
        return b""


def _live() -> dict[int, int]:
    """pid -> session id of every live, non-zombie process."""
    out = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        fields = _read(entry / "stat").rsplit(b")", 1)[-1].split()
        if len(fields) > 3 and fields[0] not in (b"Z", b"X"):
            out[int(entry.name)] = int(fields[3])
    return out


def _ancestors() -> set[int]:
    pids, pid = set(), os.getpid()
    while pid > 1:
        pids.add(pid)
        fields = _read(Path(f"/proc/{pid}/stat")).rsplit(b")", 1)[-1].split()
        pid = int(fields[1]) if len(fields) > 1 else 0
    return pids


def run_processes(
    run_id: str, sessions: Iterable[int], *, spare: Callable[[Proc], bool] = lambda _p: False
) -> list[Proc]:
    """Live processes of this run (marked, or in one of ``sessions``) that ``spare`` does not
    keep; never this process or its ancestors."""
    needle = f"{RUN_ENV}={run_id}".encode()
    live = _live()
    own = _ancestors()
    environs = {pid: frozenset(_read(Path(f"/proc/{pid}/environ")).split(b"\0")) for pid in live}
    ours = {pid for pid, env in environs.items() if needle in env}
    claimed = {s for s in sessions if s not in live or s in ours}  # leader gone, or ours
    found = []
    for pid, sid in sorted(live.items()):
        if pid in own or not (pid in ours or sid in claimed):
            continue
        argv = _read(Path(f"/proc/{pid}/cmdline")).replace(b"\0", b" ").strip()
        proc = Proc(pid, sid, environs[pid], argv.decode(errors="replace"))
        if not spare(proc):
            found.append(proc)
    return found


def settle(find: Callable[[], list[Proc]], seconds: float = 3.0) -> list[Proc]:
    """``find()`` until it is empty or ``seconds`` have passed (a process may be on its way out)."""
    deadline = time.monotonic() + seconds
    found = find()
    while found and time.monotonic() < deadline:
        time.sleep(0.2)
        found = find()
    return found


def kill(procs: Iterable[Proc], grace: float = 5.0) -> None:
    """SIGTERM, wait up to ``grace`` seconds, then SIGKILL whatever is left."""
    pids = {p.pid for p in procs}
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and pids & _live().keys():
        time.sleep(0.1)
    for pid in pids & _live().keys():
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)
