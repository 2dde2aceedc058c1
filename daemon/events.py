"""Structured events: names with fields (``drift.detected``, ``model.launch.started``, ...).

JSON lines when standard error is not a terminal (journald, log shippers), readable console output
on one. A processor removes any field whose name says it holds a secret, whatever the caller passed.
Every other library's ``logging`` output (and Python warnings) goes through the same renderer as a
``library.log`` event, so standard error holds events and nothing else.

The catalogue of event names, their levels and fields is ``docs/events.md``; :data:`LEVELS` is its
level column (tests/unit/test_events_catalogue.py checks that the two agree, and that the code emits
only catalogued events). An event's level is declared there, never derived from its name.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import MutableMapping
from typing import Any, Literal, TextIO

import structlog

from daemon.core.naming import is_secret_name as _is_secret

REDACTED = "[redacted]"

LEVELS: dict[str, str] = {
    "daemon.started": "info",
    "daemon.start_failed": "error",
    "daemon.stopping": "info",
    "daemon.stopped": "info",
    "http.listening": "info",
    "config.loaded": "info",
    "config.valid": "info",
    "config.invalid": "warning",
    "config.emptied": "warning",
    "config.warning": "warning",
    "drift.detected": "warning",
    "drift.reminder": "warning",
    "drift.resolved": "info",
    "admission.refused": "warning",
    "admission.reminder": "warning",
    "admission.resolved": "info",
    "model.registered": "info",
    "model.registration.failed": "warning",
    "model.launch.started": "info",
    "model.launch.succeeded": "info",
    "model.launch.failed": "warning",
    "model.terminated": "info",
    "estimate.corrected": "warning",
    "memory.overrun": "warning",
    "model.terminate.failed": "warning",
    "cluster.unreachable": "warning",
    "cluster.recovered": "info",
    "cluster.lease.held_elsewhere": "warning",
    "cluster.lease.acquired": "info",
    "cluster.lease.unsupported": "warning",
    "auth.failed": "error",
    "state.write_failed": "error",
    "state.warning": "warning",
    "pass.failed": "error",
    "pass.finished": "info",
    "reload.failed": "error",
    "library.log": "info",  # the library record's own level is used
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
    threshold = _LEVEL_NUMBERS[level.lower()]
    journal = [_journal_priority] if _is_journal(out) else []
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        redact_secrets,
    ]
    structlog.configure(
        processors=[*shared, renderer, *journal],
        wrapper_class=structlog.make_filtering_bound_logger(threshold),
        logger_factory=structlog.PrintLoggerFactory(file=out),
        cache_logger_on_first_use=False,
    )
    # Every library's logging (watchfiles, urllib3, ...) and Python's warnings: the
    # same JSON lines, as ``library.log`` events, at the record's own level.
    handler = logging.StreamHandler(out)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                renderer,
                *journal,
            ],
            foreign_pre_chain=[_as_library_event, *shared],
        )
    )
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(threshold)
    # Libraries that narrate routine work at INFO (watchfiles: "3 changes detected" per save)
    # would flood the event stream; their warnings and errors still come through.
    for chatty in ("watchfiles",):
        logging.getLogger(chatty).setLevel(max(threshold, logging.WARNING))
    logging.captureWarnings(False)  # (re)install: a no-op if an earlier call's hook was replaced
    logging.captureWarnings(True)


_LEVEL_NUMBERS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}


def _as_library_event(
    _: Any, __: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """A foreign ``logging`` record -> ``library.log`` with its logger name and message."""
    record = event_dict.get("_record")
    event_dict["message"] = str(event_dict.get("event", ""))[:2000]
    event_dict["event"] = "library.log"
    if isinstance(record, logging.LogRecord):
        event_dict["logger"] = record.name
    return event_dict


class EventLogger:
    """Callable event sink: ``events("model.terminated", uid="x")``; fields bound once stay on every event."""

    def __init__(self, **bound: Any) -> None:
        self._log = structlog.get_logger().bind(**bound)

    def bind(self, **fields: Any) -> EventLogger:
        child = EventLogger()
        child._log = self._log.bind(**fields)
        return child

    def __call__(self, event: str, **fields: Any) -> None:
        # An event missing from the catalogue is a bug (a test forbids it); make it visible.
        level = LEVELS.get(event, "warning")
        getattr(self._log, level)(event, **fields)
