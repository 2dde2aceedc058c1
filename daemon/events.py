"""Structured events: names with fields (``drift.detected``, ``model.launch.started``, ...).

JSON lines when standard error is not a terminal (journald, log shippers), readable console output
on one. A processor removes any field whose name says it holds a secret, whatever the caller passed.
The catalogue of event names and their fields is ``docs/events.md``.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import MutableMapping
from typing import Any, Literal, TextIO

import structlog

from daemon.core.naming import is_secret_name as _is_secret

REDACTED = "[redacted]"
# logging.getLevelNamesMapping() is 3.11+; these are the names Settings.log_level allows (and critical).
_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
    "critical": logging.CRITICAL,
}


def _redacted(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: REDACTED if _is_secret(k) else _redacted(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_redacted(v) for v in value]
    return value


def redact_secrets(
    _: Any, __: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """Never let a field named like a secret reach a log line, at any depth (launch_args too)."""
    for key in list(event_dict):
        event_dict[key] = REDACTED if _is_secret(key) else _redacted(event_dict[key])
    return event_dict


def configure(
    *,
    fmt: Literal["auto", "json", "console"] = "auto",
    level: str = "info",
    stream: TextIO | None = None,
) -> None:
    out = stream if stream is not None else sys.stderr
    use_json = fmt == "json" or (fmt == "auto" and not out.isatty())
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if use_json
        else structlog.dev.ConsoleRenderer(colors=False)
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            redact_secrets,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(_LEVELS[level.lower()]),
        logger_factory=structlog.PrintLoggerFactory(file=out),
        cache_logger_on_first_use=False,
    )


class EventLogger:
    """Callable event sink: ``events("model.terminated", uid="x")``; fields bound once stay on every event."""

    def __init__(self, **bound: Any) -> None:
        self._log = structlog.get_logger().bind(**bound)

    def bind(self, **fields: Any) -> EventLogger:
        child = EventLogger()
        child._log = self._log.bind(**fields)
        return child

    def __call__(self, event: str, **fields: Any) -> None:
        level = (
            "warning"
            if event.endswith((".failed", ".invalid", ".refused", ".unreachable"))
            else "info"
        )
        getattr(self._log, level)(event, **fields)
