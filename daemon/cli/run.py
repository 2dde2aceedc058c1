"""``xinference-reconciler run``: start the daemon (daemon/app.py) with the settings and flags.

Every configuration error at start-up exits 78 (EX_CONFIG), which the systemd unit lists in
``RestartPreventExitStatus=``: invalid settings or flags here (a malformed endpoint or metrics
address included), an invalid config file in the daemon. ``run --help`` lists the settings.
"""

from __future__ import annotations

import argparse
import textwrap
from pathlib import Path
from typing import Any, TextIO

from daemon.errors import SettingsError
from daemon.exit_codes import Exit


def settings_epilog() -> str:
    """The settings as ``run --help`` lists them: made of the Settings fields, so they cannot drift."""
    from daemon.settings import describe_settings

    lines = ["settings (environment variables; a flag wins over its variable):"]
    for doc in describe_settings():
        lines.append(f"  {doc.name}")
        text = f"{doc.description} [{doc.expects}; default: {doc.default}]"
        lines += textwrap.wrap(text, width=78, initial_indent=" " * 6, subsequent_indent=" " * 6)
    lines.append("")
    lines.append(
        "exit codes: 0 stopped cleanly; 1 start-up failed (lock held, cannot listen) or the"
    )
    lines.append("loop died; 78 a configuration error (settings, flags, config file): systemd's")
    lines.append("RestartPreventExitStatus=78 keeps it from restarting until someone fixes it.")
    return "\n".join(lines)


def add_run_parser(sub: Any) -> None:  # argparse's _SubParsersAction (a private class)
    from daemon.cli.live import endpoint_arg

    p = sub.add_parser(
        "run",
        help="the daemon: keep the cluster matching CONFIG (systemd service)",
        description="The daemon: keep the cluster matching CONFIG (systemd service).",
        epilog=settings_epilog(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
        usage_error_exit=Exit.CONFIG,
    )
    p.add_argument("config", nargs="?", help="config.toml (default: $XINFERENCE_RECONCILER_CONFIG)")
    p.add_argument("--state-dir", type=Path, help="ownership state and lock (default: settings)")
    p.add_argument(
        "--endpoint", type=endpoint_arg, help="Xinference URL (overrides [cluster] endpoint)"
    )
    p.set_defaults(func=cmd_run)


def cmd_run(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    from daemon.app import Daemon
    from daemon.events import configure
    from daemon.settings import load_settings

    del out
    try:
        settings = load_settings(
            {
                "state_dir": ("--state-dir", args.state_dir),
                "endpoint": ("--endpoint", args.endpoint),
            }
        )
    except SettingsError as exc:
        err.write(f"invalid settings ({len(exc.problems)} problem(s)):\n")
        for problem in exc.problems:
            err.write(f"  {problem}\n")
        return Exit.CONFIG
    configure(fmt=settings.log_format, level=settings.log_level)
    config = Path(args.config) if args.config else settings.config
    return Daemon(config_path=config, settings=settings).run()
