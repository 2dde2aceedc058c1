"""The wall clock jumps (NTP step, a VM resumed, a wrong RTC fixed): simulated with the in-process
daemon, the in-memory FakeCluster and an injected clock (no real server: only the clock is under
test). What "sanely" means, and what these tests assert:

1. nothing crashes: every pass finishes;
2. a forward jump of hours retries a due launch once (one launch per model per pass, the attempt
   counted once) and emits at most one reminder per open problem, not one per missed interval;
3. a backward jump never makes a retry wait longer than the backoff cap (600 s) plus one resync,
   nor a reminder longer than ``drift_reminder_seconds`` plus one resync, and no reported duration
   (``since_seconds``, ``lasted_seconds``, ``retry_in_seconds``) is negative;
4. the daemon's clock is the one its passes use: backoff deadlines in the state file are read
   from the daemon's wall clock (they are persisted), every duration and deadline of the loop and
   of the notices from its monotonic clock (so a jump of the wall clock moves none of them).

``Clock.advance`` lets time pass (both clocks move); ``Clock.jump`` steps the wall clock only.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest

from daemon import app
from daemon.adapters.systemd import Notifier
from daemon.core.retry import MAX_DELAY_SECONDS
from daemon.events import configure
from daemon.settings import Settings
from daemon.testing.builders import gpu_worker
from daemon.testing.fake_cluster import FakeCluster

W1 = "127.0.0.1:30001"
HOUR = 3600.0
REMINDER = 600.0
STEP = 60.0  # one resync
CONFIG = """
[policy]
mode = "{mode}"
gpu_reserve_gib = 0.0
[models.a]
model_name = "m"
model_engine = "Transformers"
[models.a.memory]
estimate_gib = 4.0
"""


class Clock:
    def __init__(self, start: float = 1_000_000.0) -> None:
        self.now = start  # wall
        self.mono = 500.0

    def __call__(self) -> float:
        return self.now

    def monotonic(self) -> float:
        return self.mono

    def advance(self, seconds: float) -> None:
        self.now += seconds
        self.mono += seconds

    def jump(self, seconds: float) -> None:
        self.now += seconds


class Rig:
    def __init__(self, tmp_path: Path, clock: Clock, *, mode: str = "enforce") -> None:
        self.buffer = io.StringIO()
        configure(fmt="json", stream=self.buffer)
        config = tmp_path / "config.toml"
        config.write_text(CONFIG.format(mode=mode))
        self.fake = FakeCluster((gpu_worker(W1, 24),), known_models=frozenset({"m"}))
        self.state = tmp_path / "state"
        self.daemon = app.Daemon(
            config_path=config,
            settings=Settings(
                state_dir=self.state,
                resync_interval_seconds=STEP,
                drift_reminder_seconds=REMINDER,
            ),
            cluster_factory=lambda _config, _endpoint: self.fake,
            notifier=Notifier(environ={}),
            clock=clock,
            monotonic=clock.monotonic,
        )
        self.daemon.load()

    def run(self) -> None:
        report = self.daemon.run_pass({"resync"})
        assert report is not None

    def events(self, name: str = "") -> list[dict[str, Any]]:
        lines = self.buffer.getvalue().splitlines()
        return [e for e in map(json.loads, filter(None, lines)) if e["event"].startswith(name)]

    def launches(self) -> int:
        return sum(1 for what, _ in self.fake.log if what == "launch")

    def failure(self) -> dict[str, Any]:
        return json.loads((self.state / "state.json").read_text())["failures"]["a"]


def assert_no_negative_durations(rig: Rig) -> None:
    for e in rig.events():
        for key in ("since_seconds", "lasted_seconds", "retry_in_seconds", "seconds"):
            if key in e:
                assert e[key] >= 0, e


def test_the_daemons_clock_is_the_one_its_passes_use(tmp_path: Path) -> None:
    clock = Clock()
    rig = Rig(tmp_path, clock)
    rig.fake.fail["a"] = "boom"
    rig.run()  # sends the launch
    rig.run()  # sees it in ERROR
    assert rig.events("model.launch.failed")
    assert rig.failure()["next_retry_at"] == pytest.approx(clock.now + 15, abs=1), (
        "the backoff deadline was computed from another clock than the daemon's"
    )


def test_a_forward_jump_of_hours(tmp_path: Path) -> None:
    clock = Clock()
    rig = Rig(tmp_path, clock)
    rig.fake.fail["a"] = "boom"
    rig.run()
    rig.run()
    assert rig.launches() == 1
    clock.advance(5)
    rig.run()
    assert rig.launches() == 1  # backing off
    clock.jump(3 * HOUR)
    rig.run()
    rig.run()
    assert rig.launches() == 2  # retried once, not once per missed backoff
    assert rig.failure()["attempts"] == 2
    for _ in range(2):
        clock.advance(10)
        rig.run()
    assert rig.launches() == 2  # the new backoff (30 s) is honoured
    reminders = rig.events("drift.reminder")
    assert len(reminders) <= 1
    del rig.fake.fail["a"]
    clock.advance(MAX_DELAY_SECONDS + STEP)
    rig.run()
    rig.run()
    assert rig.events("model.launch.succeeded")
    rig.run()
    assert rig.events("drift.resolved")
    assert_no_negative_durations(rig)


def test_a_backward_jump_does_not_stall_the_backoff(tmp_path: Path) -> None:
    clock = Clock()
    rig = Rig(tmp_path, clock)
    rig.fake.fail["a"] = "boom"
    rig.run()
    rig.run()
    assert rig.launches() == 1
    clock.jump(-6 * HOUR)
    for _ in range(int((MAX_DELAY_SECONDS + STEP) // STEP)):
        clock.advance(STEP)
        rig.run()
    assert_no_negative_durations(rig)
    away = rig.failure()["next_retry_at"] - clock.now
    assert rig.launches() >= 2, (
        f"no retry {MAX_DELAY_SECONDS + STEP:g} s after the clock went back 6 h: "
        f"the next retry is still {away:.0f} s away"
    )


def test_a_backward_jump_does_not_stall_reminders_or_report_negative_durations(
    tmp_path: Path,
) -> None:
    clock = Clock()
    rig = Rig(tmp_path, clock, mode="observe")
    rig.run()
    assert [e["kind"] for e in rig.events("drift.detected")] == ["missing"]
    clock.jump(-6 * HOUR)
    for _ in range(int((REMINDER + STEP) // STEP)):
        clock.advance(STEP)
        rig.run()
    reminders = rig.events("drift.reminder")
    rig.fake.start_by_hand("a", engine="Transformers")
    clock.advance(STEP)
    rig.run()
    assert rig.events("drift.resolved")
    assert_no_negative_durations(rig)
    assert reminders, f"no reminder {REMINDER + STEP:g} s after the clock went back 6 h"
