"""Footprint of a full test run: peak memory, wall time and Xinference process trees at once.

Usage (from the repository root)::

    .venv/bin/python benchmarks/suite_footprint.py [--json out.json] [--log pytest.log] [-- ARGS]

runs ``<this python> -m pytest ARGS`` (no ARGS: the whole suite, as ``pyproject.toml`` configures it)
and samples ``/proc`` every second until it exits. The processes of the run are the pytest
process, its descendants, every process whose environment carries this run's marker
(``XR_FOOTPRINT_RUN``, inherited by every child, so servers re-parented to init still count) and
every process in a session led by one of those (a process that rewrites its environment block,
as setproctitle does, stays in its server's session). Other engineers' test runs on the same
machine are not counted.

Per sample: the sum of the resident set sizes of those processes (VmRSS from /proc/PID/statm;
pages shared between processes count once per process, as ``ps`` shows them) and the number of
Xinference process trees alive (processes running ``xinference-local``, ``xinference-supervisor``
or ``xinference-worker``; a supervisor + 2 workers cluster is 3). Proportional set sizes are not
sampled: reading smaps_rollup of ~20 Xinference processes takes over a second of CPU, which would
slow the run it measures. Prints a JSON summary (also written to ``--json``) with the peaks, the
wall time, pytest's exit code, the sampler's own CPU time and the load average of the machine
before, during and after the run. Exits with pytest's exit code. SIGTERM or Ctrl-C interrupts
pytest (SIGINT), which stops its servers before it exits.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

MARKER = "XR_FOOTPRINT_RUN"
TREE_ROOTS = ("xinference-local", "xinference-supervisor", "xinference-worker")
PAGE = os.sysconf("SC_PAGE_SIZE")
MIB = 2**20


@dataclass
class Proc:
    pid: int
    ppid: int
    sid: int


def _read(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except OSError:
        return None


def _proc(entry: Path) -> Proc | None:
    stat = _read(entry / "stat")
    if stat is None:
        return None
    fields = stat.rsplit(b")", 1)[-1].split()
    if fields[0] == b"Z":
        return None
    return Proc(int(entry.name), int(fields[1]), int(fields[3]))


def rss(pid: int) -> int:
    statm = _read(Path(f"/proc/{pid}/statm"))
    return int(statm.split()[1]) * PAGE if statm else 0


def is_tree_root(pid: int) -> bool:
    argv = (_read(Path(f"/proc/{pid}/cmdline")) or b"").split(b"\0")[:2]
    return any(Path(a.decode(errors="replace")).name in TREE_ROOTS for a in argv)


class Sampler:
    """Finds the run's processes; cheap enough to run every second beside the tests (one read of
    /proc/PID/stat per process, and of /proc/PID/environ once per new process)."""

    def __init__(self, root: int, marker: str) -> None:
        self.root = root
        self.needle = f"{MARKER}={marker}".encode()
        self.marked: set[int] = {root}
        self.unmarked: set[int] = set()  # a process's environment is read once
        self.sessions: set[int] = set()
        self.roots: dict[int, bool] = {}  # pid -> runs an Xinference tree's root command

    def ours(self) -> list[int]:
        procs = {}
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                p = _proc(entry)
                if p is not None:
                    procs[p.pid] = p
        for pid in procs.keys() - self.marked - self.unmarked:
            environ = _read(Path(f"/proc/{pid}/environ")) or b""
            (self.marked if self.needle in environ.split(b"\0") else self.unmarked).add(pid)
        self.marked &= procs.keys() | {self.root}
        self.unmarked &= procs.keys()
        self.sessions |= {pid for pid in self.marked if pid in procs and procs[pid].sid == pid}
        children: dict[int, list[int]] = {}
        for p in procs.values():
            children.setdefault(p.ppid, []).append(p.pid)
        found = {pid for pid in self.marked if pid in procs}
        found |= {p.pid for p in procs.values() if p.sid in self.sessions}
        todo = [self.root, *found]
        while todo:  # and every descendant of those
            for child in children.get(todo.pop(), []):
                if child not in found:
                    found.add(child)
                    todo.append(child)
        found.discard(os.getpid())
        return sorted(pid for pid in found if pid in procs)

    def trees(self, pids: list[int]) -> int:
        self.roots = {
            pid: self.roots[pid] if pid in self.roots else is_tree_root(pid) for pid in pids
        }
        return sum(self.roots.values())


def loadavg() -> list[float]:
    return [float(x) for x in Path("/proc/loadavg").read_text().split()[:3]]


def machine() -> dict[str, Any]:
    cpuinfo = Path("/proc/cpuinfo").read_text()
    model = next(
        (line.split(":", 1)[1].strip() for line in cpuinfo.splitlines() if "model name" in line),
        platform.processor(),
    )
    mem = next(
        int(line.split()[1])
        for line in Path("/proc/meminfo").read_text().splitlines()
        if line.startswith("MemTotal:")
    )
    return {
        "cpus": os.cpu_count(),
        "cpu_model": model,
        "mem_total_gib": round(mem / 2**20, 1),
        "python": platform.python_version(),
        "kernel": platform.release(),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", type=Path, help="also write the summary here")
    parser.add_argument("--log", type=Path, help="pytest's output goes here (default: inherited)")
    parser.add_argument("--interval", type=float, default=1.0)
    parser.add_argument("pytest_args", nargs="*", help="after --: passed to pytest")
    args = parser.parse_args()

    marker = uuid.uuid4().hex
    env = {**os.environ, MARKER: marker}
    command = [sys.executable, "-m", "pytest", *args.pytest_args]
    log = args.log.open("wb") if args.log else None
    load_before = loadavg()
    started_at = time.strftime("%Y-%m-%d %H:%M:%S %Z")
    t0 = time.monotonic()
    proc = subprocess.Popen(
        command,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT if log else None,
        # a background job of a non-interactive shell ignores SIGINT; pytest must not
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),  # noqa: PLW1509
    )

    def interrupt(_signum: int, _frame: Any) -> None:
        proc.send_signal(signal.SIGINT)  # pytest tears down (stops its servers), then exits

    signal.signal(signal.SIGTERM, interrupt)
    signal.signal(signal.SIGINT, interrupt)
    sampler = Sampler(proc.pid, marker)
    peak: dict[str, Any] = {"rss": 0, "trees": 0}

    samples = 0
    load_1min: list[float] = []
    try:
        while proc.poll() is None:
            tick = time.monotonic()
            ours = sampler.ours()
            total = sum(rss(pid) for pid in ours)
            trees = sampler.trees(ours)
            samples += 1
            load_1min.append(loadavg()[0])
            at = round(tick - t0)
            if total > peak["rss"]:
                peak.update(rss=total, rss_at_s=at, rss_processes=len(ours))
            if trees > peak["trees"]:
                peak.update(trees=trees, trees_at_s=at)
            time.sleep(max(0.0, args.interval - (time.monotonic() - tick)))
    finally:
        if proc.poll() is None:
            proc.terminate()
        proc.wait()
        if log:
            log.close()
    wall = time.monotonic() - t0
    summary = {
        "command": " ".join(command),
        "cwd": os.getcwd(),
        "started": started_at,
        "machine": machine(),
        "pytest_exit_code": proc.returncode,
        "wall_seconds": round(wall, 1),
        "samples": samples,
        "peak_rss_sum_mib": round(peak["rss"] / MIB),
        "peak_rss_at_seconds": peak.get("rss_at_s"),
        "processes_at_peak_rss": peak.get("rss_processes"),
        "max_xinference_trees_at_once": peak["trees"],
        "max_trees_at_seconds": peak.get("trees_at_s"),
        "sampler_cpu_seconds": round(time.process_time(), 1),
        "load_average_before": load_before,
        "load_average_after": loadavg(),
        "load_average_1min_during": {
            "mean": round(sum(load_1min) / len(load_1min), 2) if load_1min else None,
            "max": max(load_1min, default=None),
        },
    }
    text = json.dumps(summary, indent=2)
    print(text, flush=True)
    if args.json:
        args.json.write_text(text + "\n")
    return proc.returncode


if __name__ == "__main__":
    sys.exit(main())
