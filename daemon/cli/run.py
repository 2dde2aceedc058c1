"""``xinference-reconciler run``: start the daemon (daemon/app.py) with the settings and flags."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any, TextIO


def cmd_run(args: argparse.Namespace, out: TextIO, _err: TextIO) -> int:
    from daemon.app import Daemon
    from daemon.events import configure
    from daemon.settings import Settings

    del out
    settings = Settings()
    overrides: dict[str, Any] = {}
    if args.state_dir:
        overrides["state_dir"] = args.state_dir
    if args.endpoint:
        overrides["endpoint"] = args.endpoint
    settings = settings.model_copy(update=overrides)
    configure(fmt=settings.log_format, level=settings.log_level)
    config = Path(args.config) if args.config else settings.config
    return Daemon(config_path=config, settings=settings).run()
