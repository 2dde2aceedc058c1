"""Which drift and refusal notices to emit this pass: once when a problem appears, a reminder at an
interval while it lasts, once when it is resolved. Pure: the daemon passes the clock's reading in
and keeps the returned state for the next pass."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

DRIFT_EVENTS = ("drift.detected", "drift.reminder", "drift.resolved")
REFUSAL_EVENTS = ("admission.refused", "admission.reminder", "admission.resolved")


@dataclass(frozen=True, kw_only=True)
class Open:
    """A problem that is still there: what it is, when it was first and last reported."""

    kind: str
    fields: Mapping[str, Any]
    since: float
    reported: float


@dataclass(frozen=True, kw_only=True)
class Notice:
    event: str  # one of DRIFT_EVENTS or REFUSAL_EVENTS
    key: str
    fields: Mapping[str, Any]


def track(
    previous: Mapping[str, Open],
    current: Mapping[str, tuple[str, Mapping[str, Any]]],
    *,
    now: float,
    reminder_seconds: float,
    names: tuple[str, str, str],
) -> tuple[Mapping[str, Open], tuple[Notice, ...]]:
    """Compare this pass's problems (key -> (kind, fields)) with the open ones.

    ``names`` are the events for (appeared, still there, resolved), e.g. DRIFT_EVENTS. A problem
    whose kind changes (missing -> failed) is reported again as appeared.
    """
    appeared, reminder, resolved = names
    notices: list[Notice] = []
    still: dict[str, Open] = {}
    # A clock that stepped backwards must neither silence reminders for the length of the step nor
    # report negative durations: re-base what was recorded in the "future" on ``now``.
    previous = {
        k: Open(
            kind=o.kind, fields=o.fields, since=min(o.since, now), reported=min(o.reported, now)
        )
        for k, o in previous.items()
    }
    for key, (kind, fields) in sorted(current.items()):
        seen = previous.get(key)
        if seen is None or seen.kind != kind:
            still[key] = Open(kind=kind, fields=fields, since=now, reported=now)
            notices.append(Notice(event=appeared, key=key, fields={"kind": kind, **fields}))
        elif now - seen.reported >= reminder_seconds:
            still[key] = Open(kind=kind, fields=fields, since=seen.since, reported=now)
            lasted = round(now - seen.since, 1)
            notices.append(
                Notice(
                    event=reminder,
                    key=key,
                    fields={"kind": kind, "since_seconds": lasted, **fields},
                )
            )
        else:
            still[key] = Open(kind=kind, fields=fields, since=seen.since, reported=seen.reported)
    for key, seen in sorted(previous.items()):
        if key not in current:
            lasted = round(now - seen.since, 1)
            notices.append(
                Notice(
                    event=resolved, key=key, fields={"kind": seen.kind, "lasted_seconds": lasted}
                )
            )
    return MappingProxyType(still), tuple(notices)
