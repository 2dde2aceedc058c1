"""``xinference-reconciler reload --pid PID``: a reload that returns once the new config is in force.

systemd 252 (Debian 12, RHEL 9) ends a reload job as soon as ``ExecReload=`` exits unless the
service's ``RELOADING=1`` already arrived, so ``ExecReload=/bin/kill -HUP $MAINPID`` makes
``systemctl reload`` return before the daemon has even read the file. ``Type=notify-reload`` fixes
that only from systemd 253 on. This command works with every version, as ``ExecReload=``: it sends
SIGHUP to the daemon and waits until the daemon says that a pass which began after the signal has
ended (the file re-read, its actions sent, ``READY=1`` sent). It exits 0 then; 1 when the new file
is invalid (the last good config stays in force, as ``config.invalid`` says), when the daemon exits,
or when no acknowledgement comes within ``--timeout`` seconds.

The acknowledgement is ``reload-ack.json`` in the state directory (daemon/adapters/reload_ack.py):
"began after my signal" compares the pass's CLOCK_MONOTONIC start with the time read before the
signal.
"""

from __future__ import annotations

import argparse
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

from daemon.adapters.reload_ack import read_ack
from daemon.exit_codes import Exit

DEFAULT_TIMEOUT_SECONDS = 240.0  # below the unit's TimeoutStartSec=300, which bounds ExecReload=


def request_reload(
    pid: int,
    state_dir: Path,
    *,
    timeout: float = DEFAULT_TIMEOUT_SECONDS,
    poll: float = 0.05,
    send: Callable[[int, int], None] = os.kill,
) -> str | None:
    """Send SIGHUP to ``pid`` and wait for its acknowledgement: None once the new config is in
    force, else why the reload failed."""
    sent_at = time.monotonic()
    try:
        send(pid, signal.SIGHUP)
    except ProcessLookupError:
        return f"no process {pid}"
    except PermissionError:
        return f"not allowed to signal process {pid}"
    while True:
        ack = read_ack(state_dir)
        started = ack.get("pass_started") if ack else None
        if (
            ack
            and ack.get("pid") == pid
            and isinstance(started, float | int)
            and started >= sent_at
        ):
            invalid = ack.get("invalid")
            if invalid:
                why = "; ".join(str(invalid).splitlines())
                return f"the new config is invalid, the last good one stays in force: {why}"
            return None
        if time.monotonic() - sent_at > timeout:
            return f"process {pid} did not acknowledge the reload within {timeout:g} s"
        try:
            send(pid, 0)
        except ProcessLookupError:
            return f"process {pid} exited before acknowledging the reload"
        except PermissionError:
            pass  # it exists
        time.sleep(poll)


def cmd_reload(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    from daemon.events import EventLogger, configure
    from daemon.settings import load_settings

    del out
    settings = load_settings()
    configure(fmt=settings.log_format, level=settings.log_level, stream=err)
    state_dir = args.state_dir or settings.state_dir
    problem = request_reload(args.pid, state_dir, timeout=args.timeout)
    if problem is None:
        return Exit.OK
    events = EventLogger()
    events("reload.failed", pid=args.pid, error=problem)
    return Exit.ERROR


def add_reload_parser(sub: Any) -> None:
    p = sub.add_parser(
        "reload",
        help="SIGHUP the daemon and wait until its new config is in force (systemd ExecReload=)",
    )
    p.add_argument("--pid", type=int, required=True, help="the daemon's pid ($MAINPID)")
    p.add_argument(
        "--state-dir", type=Path, help="the daemon's state directory (default: settings)"
    )
    p.add_argument(
        "--timeout",
        type=float,
        default=DEFAULT_TIMEOUT_SECONDS,
        help=f"seconds to wait for the daemon (default {DEFAULT_TIMEOUT_SECONDS:g})",
    )
    p.set_defaults(func=cmd_reload)
