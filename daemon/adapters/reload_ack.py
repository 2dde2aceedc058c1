"""The reload receipt the daemon leaves for ``xinference-reconciler reload`` (daemon/cli/reload.py):
``reload-ack.json`` in the state directory, which the daemon and systemd's ``ExecReload=`` share::

    {"pid": 1234, "pass_started": 5321.25, "invalid": null}

``pass_started`` is ``CLOCK_MONOTONIC`` (one clock for every process on the host) read when the
pass took its requests; ``pid`` ties the file to the daemon that was signalled; the daemon rewrites
the file with ``pass_started: null`` when it starts, so a file left by an earlier run never counts.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

ACK_FILE = "reload-ack.json"


def write_ack(state_dir: Path, *, pass_started: float | None, invalid: str | None) -> None:
    """Record (atomically) that the pass which started at ``pass_started`` has ended; ``invalid``
    says why the file was not taken. Never raises: a daemon must not stop over its reload receipt."""
    ack = {"pid": os.getpid(), "pass_started": pass_started, "invalid": invalid}
    path = state_dir / ACK_FILE
    tmp = path.with_name(f".{ACK_FILE}.{os.getpid()}")
    try:
        tmp.write_text(json.dumps(ack), encoding="utf-8")
        os.replace(tmp, path)
    except OSError:
        tmp.unlink(missing_ok=True)


def read_ack(state_dir: Path) -> dict[str, Any] | None:
    try:
        ack = json.loads((state_dir / ACK_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return ack if isinstance(ack, dict) else None
