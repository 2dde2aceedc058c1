"""Soak: the daemon against a real Xinference for a while, with config churn and out-of-band
terminations. Checks that memory stays flat, every drift is detected and resolved, and no action is
missed or duplicated.

Usage: python benchmarks/soak.py --minutes 10 (CI runs a 2-minute version: tests/integration/test_soak.py)

Every ``churn`` seconds one of the slot models is added to or removed from the file (atomic save);
every ``kill`` seconds one running, desired model is terminated behind the daemon's back. The
daemon resyncs every 5 s. Invariants checked from its events and the server:
- every launch request is for a uid that was desired and not running at that moment's last known
  state: no two launches of one uid without a termination (by us or out of band) between them;
- every out-of-band termination of a desired model is followed by drift.detected and a relaunch;
- after the last change the cluster converges to the file.
"""

from __future__ import annotations

import argparse
import json
import queue
import random
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.harness import server as xh
from tests.harness.daemon_process import (
    DaemonProcess,
    cpu_embedding_config,
    rss_bytes,
    write_atomically,
)

SLOTS = ("soak-a", "soak-b", "soak-c")


@dataclass
class SoakResult:
    seconds: float = 0.0
    edits: int = 0
    kills: int = 0
    launches: int = 0
    terminations: int = 0
    drift_detected: int = 0
    drift_resolved: int = 0
    duplicated: list[str] = field(default_factory=list)
    missed: list[str] = field(default_factory=list)
    unexpected_terminations: list[str] = field(default_factory=list)
    rss_mib: list[float] = field(default_factory=list)
    converged: bool = False

    @property
    def ok(self) -> bool:
        return self.converged and not (
            self.duplicated or self.missed or self.unexpected_terminations
        )

    def summary(self) -> dict[str, Any]:
        rss = self.rss_mib
        return {
            "seconds": round(self.seconds),
            "edits": self.edits,
            "out_of_band_kills": self.kills,
            "launches": self.launches,
            "terminations": self.terminations,
            "drift_detected": self.drift_detected,
            "drift_resolved": self.drift_resolved,
            "duplicated": self.duplicated,
            "missed": self.missed,
            "unexpected_terminations": self.unexpected_terminations,
            "converged": self.converged,
            "rss_mib": {
                "first": rss[0] if rss else None,
                "after_1_min": rss[min(6, len(rss) - 1)] if rss else None,
                "last": rss[-1] if rss else None,
                "max": max(rss) if rss else None,
                "median": statistics.median(rss) if rss else None,
            },
        }


class _Churn:
    """The faults of one soak run: file edits and out-of-band terminations on their schedules."""

    def __init__(
        self, base: str, name: str, config: Path, rng: random.Random, result: SoakResult
    ) -> None:
        self.base, self.name, self.config, self.rng, self.result = base, name, config, rng, result
        self.desired = [SLOTS[0]]
        self.running: set[str] = set()  # brought up by the daemon (its events) and not killed since
        self.killed: set[str] = set()  # killed out of band, relaunch not seen yet
        config.write_text(cpu_embedding_config(base, name, self.desired))

    def edit(self) -> None:
        slot = self.rng.choice(SLOTS)
        if slot in self.desired:
            self.desired = [s for s in self.desired if s != slot]
        else:
            self.desired = [*self.desired, slot]
        write_atomically(self.config, cpu_embedding_config(self.base, self.name, self.desired))
        self.result.edits += 1

    def kill(self) -> None:
        victims = sorted((self.running & set(self.desired)) - self.killed)
        if victims:
            victim = self.rng.choice(victims)
            xh.terminate_model(self.base, None, victim)
            self.running.discard(victim)
            self.killed.add(victim)
            self.result.kills += 1

    def converged(self) -> bool:
        ready = {i["model_uid"] for i in xh.instances(self.base, None) if i["status"] == "READY"}
        return ready & set(SLOTS) == set(self.desired)


def soak(
    base: str,
    name: str,
    workdir: Path,
    *,
    seconds: float,
    churn: float = 20.0,
    kill: float = 30.0,
    seed: int = 7,
) -> SoakResult:
    result = SoakResult()
    faults = _Churn(base, name, workdir / "soak.toml", random.Random(seed), result)
    daemon = DaemonProcess(
        faults.config,
        workdir / "soak-state",
        env={"XINFERENCE_RECONCILER_RESYNC_INTERVAL_SECONDS": "5"},
    )
    start = time.monotonic()
    schedule = {"edit": start + churn, "kill": start + kill, "rss": start}
    try:
        while time.monotonic() - start < seconds:
            now = time.monotonic()
            if now >= schedule["rss"]:
                result.rss_mib.append(rss_bytes(daemon.proc.pid) / 2**20)
                schedule["rss"] += 10
            if now >= schedule["edit"]:
                faults.edit()
                schedule["edit"] += churn
            if now >= schedule["kill"]:
                faults.kill()
                schedule["kill"] += kill
            _drain(daemon, result, faults, timeout=0.5)
        # Settle, then compare with the file. The server shows a relaunched model READY a pass
        # before the daemon reports it (its next pass settles the launch), so wait for both.
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not (
            result.converged and not faults.killed & set(faults.desired)
        ):
            _drain(daemon, result, faults, timeout=2.0)
            result.converged = faults.converged()
        _drain(daemon, result, faults, timeout=0.0)
        result.missed = sorted(faults.killed & set(faults.desired))
    finally:
        result.seconds = time.monotonic() - start
        try:
            daemon.stop(timeout=30)  # killed if it is not gone by then: never left running
        finally:
            for uid in SLOTS:
                xh.terminate_model(base, None, uid)
    return result


def _drain(daemon: DaemonProcess, result: SoakResult, faults: _Churn, *, timeout: float) -> None:
    """Account every event the daemon has written (waiting up to ``timeout`` for the first)."""
    wait = timeout
    while True:
        try:
            event = daemon.events.get(timeout=wait) if wait > 0 else daemon.events.get_nowait()
        except queue.Empty:
            assert daemon.proc.poll() is None, "the daemon died"
            return
        daemon.seen.append(event)
        _account(event, result, faults.running, faults.killed)
        wait = 0


def _account(
    event: dict[str, Any], result: SoakResult, running: set[str], killed: set[str]
) -> None:
    name, uid = event.get("event"), event.get("uid")
    if name == "model.launch.started":
        result.launches += 1
        if uid in running:
            result.duplicated.append(f"{uid} launched while running ({event.get('timestamp')})")
    elif name == "model.launch.succeeded" and uid is not None:  # the daemon always sends its uid
        running.add(uid)
        killed.discard(uid)
    elif name == "model.terminated":
        result.terminations += 1
        if uid not in SLOTS:
            result.unexpected_terminations.append(str(uid))
        running.discard(uid)
    elif name == "drift.detected":
        result.drift_detected += 1
    elif name == "drift.resolved":
        result.drift_resolved += 1


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--minutes", type=float, default=10.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        tiny = xh.build_tiny_models(work / "models")
        with xh.XinferenceServer(auth=False) as srv:
            names = xh.register_custom_models(srv.base_url, None, tiny)
            result = soak(srv.base_url, names["embedding"], work, seconds=args.minutes * 60)
    print(json.dumps(result.summary(), indent=2))
    sys.exit(0 if result.ok else 1)


if __name__ == "__main__":
    main()
