"""docs/events.md lists exactly the events the code emits (people alert on these names)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

from daemon.core.notices import DRIFT_EVENTS, REFUSAL_EVENTS

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
    return found


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
