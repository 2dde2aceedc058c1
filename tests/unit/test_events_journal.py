"""Under systemd, journald records each event's level as the entry's PRIORITY (a "<N>" prefix on the
line, only when standard error is the journal stream named by $JOURNAL_STREAM)."""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

import pytest

from daemon.events import EventLogger, configure


def test_journald_gets_each_events_level_as_its_priority(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = tmp_path / "stream"
    with log.open("w") as stream:
        info = os.fstat(stream.fileno())
        monkeypatch.setenv("JOURNAL_STREAM", f"{info.st_dev}:{info.st_ino}")
        configure(fmt="json", stream=stream)
        EventLogger()("config.invalid", path="x")
        EventLogger()("pass.finished", seconds=1)
    with (tmp_path / "other").open("w") as other:  # not the journal's stream: no prefix
        configure(fmt="json", stream=other)
        EventLogger()("config.invalid", path="x")
    configure(fmt="json", stream=io.StringIO())
    warning, info_line = log.read_text().splitlines()
    assert warning.startswith("<4>{")
    assert json.loads(warning[3:])["level"] == "warning"
    assert info_line.startswith("<6>{")
    assert json.loads((tmp_path / "other").read_text())["level"] == "warning"
