"""docs/events.md lists exactly the events the code emits (people alert on these names)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

from daemon.core.notices import DRIFT_EVENTS, REFUSAL_EVENTS
from daemon.events import LEVELS

REPO = Path(__file__).resolve().parents[2]


def emitted() -> dict[str, set[str]]:
    """Event name -> keyword fields, for every ``events("name", ...)`` call in the package."""
    found: dict[str, set[str]] = {}
    for path in (REPO / "daemon").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if not (
                isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant)
            ):
                continue
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            if name in ("events", "_events") and isinstance(node.args[0].value, str):
                found.setdefault(node.args[0].value, set()).update(
                    k.arg for k in node.keywords if k.arg
                )
    for event in (*DRIFT_EVENTS, *REFUSAL_EVENTS):
        found.setdefault(event, set())
    found["library.log"] = {"logger", "message"}  # made by the logging bridge (events.configure)
    return found


def documented_levels() -> dict[str, str]:
    levels = {}
    for line in (REPO / "docs" / "events.md").read_text().splitlines():
        match = re.match(r"\| `([a-z_.]+)` \| ([^|]+) \|", line)
        if match:
            levels[match.group(1)] = match.group(2).strip()
    return levels


def documented() -> dict[str, set[str]]:
    table = {}
    for line in (REPO / "docs" / "events.md").read_text().splitlines():
        match = re.match(r"\| `([a-z_.]+)` \|[^|]*\|[^|]*\|([^|]*)\|", line)
        if match:
            table[match.group(1)] = set(re.findall(r"`([a-z_]+)`", match.group(2)))
    return table


def test_every_emitted_event_is_documented_and_every_documented_one_emitted() -> None:
    assert set(emitted()) == set(documented())


def test_documented_fields_match_what_the_code_passes() -> None:
    docs = documented()
    for event, fields in emitted().items():
        if event in (*DRIFT_EVENTS, *REFUSAL_EVENTS):
            continue  # their fields come from the tracker (checked in test_daemon)
        assert fields == docs[event], event


def test_every_events_level_is_the_one_the_catalogue_declares() -> None:
    doc = documented_levels()
    assert set(LEVELS) == set(doc)
    for event, level in LEVELS.items():
        expected = "info" if doc[event] == "the record's own" else doc[event]
        assert level == expected, event


def test_levels_are_not_derived_from_names(tmp_path: Path) -> None:
    """Events whose names carry no hint of trouble are warnings or errors where the table says
    so, and they are not filtered out at LOG_LEVEL=warning."""
    import io
    import json

    from daemon.events import EventLogger, configure

    buffer = io.StringIO()
    configure(fmt="json", level="warning", stream=buffer)
    log = EventLogger()
    for event in ("daemon.start_failed", "state.write_failed", "config.warning", "pass.finished"):
        log(event)
    seen = {e["event"]: e["level"] for e in map(json.loads, buffer.getvalue().splitlines())}
    assert seen == {
        "daemon.start_failed": "error",
        "state.write_failed": "error",
        "config.warning": "warning",
    }
    del tmp_path


def test_library_logging_and_warnings_become_json_events() -> None:
    import io
    import json
    import logging
    import warnings

    from daemon.events import configure

    buffer = io.StringIO()
    configure(fmt="json", level="info", stream=buffer)
    logging.getLogger("apscheduler.scheduler").warning("Run time of job was missed by %d s", 3)
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.warn("deprecated thing", DeprecationWarning, stacklevel=1)
    lines = [json.loads(line) for line in buffer.getvalue().splitlines()]
    assert lines[0]["event"] == "library.log"
    assert lines[0]["logger"] == "apscheduler.scheduler"
    assert lines[0]["message"] == "Run time of job was missed by 3 s"
    assert lines[0]["level"] == "warning"
    assert lines[1]["logger"] == "py.warnings"
    assert "deprecated thing" in lines[1]["message"]
