"""Structured events: names with fields (``drift.detected``, ``model.launch.started``, ...).

JSON lines when standard error is not a terminal (journald, log shippers), readable console output
on one. A processor removes any field whose name says it holds a secret, whatever the caller passed.
The catalogue of event names and their fields is ``docs/events.md``.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import MutableMapping
from typing import Any, Literal, TextIO

import structlog

_SECRET_WORDS = ("password", "secret", "token", "api_key", "apikey", "authorization", "credential")
REDACTED = "[redacted]"


def _is_secret(key: object) -> bool:
    return any(word in str(key).lower() for word in _SECRET_WORDS)


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


# syslog priorities: journald reads a "<N>" line prefix as the entry's PRIORITY (SyslogLevelPrefix=)
_PRIORITY = {"critical": 2, "error": 3, "warning": 4, "info": 6, "debug": 7}


def _is_journal(stream: TextIO) -> bool:
    """True when ``stream`` is the journald stream systemd connected: ``$JOURNAL_STREAM`` holds
    its device and inode (a pipe to something else, or a terminal, carries no prefix)."""
    device, _, inode = os.environ.get("JOURNAL_STREAM", "").partition(":")
    if not (device.isdigit() and inode.isdigit()):
        return False
    try:
        info = os.fstat(stream.fileno())
    except (OSError, ValueError, AttributeError):  # io.UnsupportedOperation is an OSError
        return False
    return (info.st_dev, info.st_ino) == (int(device), int(inode))


def _journal_priority(_: Any, method_name: str, line: Any) -> str:
    """Prefix the rendered line with its level as a syslog priority: warnings are warnings in
    journald (``journalctl -p warning``), not the stream's default info."""
    return f"<{_PRIORITY.get(method_name, 6)}>{line}"


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
            *([_journal_priority] if _is_journal(out) else []),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelNamesMapping()[level.upper()]
        ),
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
