"""The parser and the entry point: ``main(argv) -> exit code`` (daemon/exit_codes.py).

Bad input never produces a traceback: the project's own errors are printed as messages.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TextIO

from daemon.cli.offline import (
    cmd_calibration_export,
    cmd_fit,
    cmd_plan,
    cmd_schema,
    cmd_validate,
)
from daemon.cli.run import cmd_run
from daemon.errors import ConfigError, ReconcilerError
from daemon.exit_codes import Exit


def version() -> str:
    """The installed distribution's version (a source checkout that was never installed: unknown)."""
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as dist_version

    try:
        return dist_version("xinference-reconciler")
    except PackageNotFoundError:
        return "unknown (not installed)"


def _out(stream: TextIO | None) -> TextIO:
    return stream if stream is not None else sys.stdout


def cmd_estimate(args: argparse.Namespace, out: TextIO, _err: TextIO) -> int:
    from daemon.cli.estimate import run_estimate

    return run_estimate(args, out)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="xinference-reconciler",
        description="Keep an Xinference cluster matching config.toml, admitting only what fits GPU memory.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {version()}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("validate", help="check a config file (exit 0 valid, 1 invalid)")
    p.add_argument("config", help="path to config.toml")
    p.set_defaults(func=cmd_validate)

    for name, func, helptext in (
        ("plan", cmd_plan, "show what apply would do"),
        ("fit", cmd_fit, "draw each GPU's memory: weights, KV cache, overhead, reserve, free"),
    ):
        p = sub.add_parser(name, help=helptext)
        p.add_argument("config", help="path to config.toml")
        p.add_argument(
            "--observed",
            metavar="SNAPSHOT",
            help="observed-state snapshot (JSON); without it, the live cluster of [cluster]",
        )
        from daemon.cli.live import add_live_options

        add_live_options(p)
        if name == "plan":
            p.add_argument("--json", action="store_true", help="print the plan as JSON")
            p.add_argument(
                "--detailed-exitcode",
                action="store_true",
                help="exit 0 when the cluster matches the file, 2 when it does not (changes, "
                "refusals, loading, failing, backing off, waiting), 1 on error",
            )
        else:
            p.add_argument("--width", type=int, default=60, help="bar width in characters")
        p.set_defaults(func=func)

    p = sub.add_parser(
        "calibration", help="the calibration ledger: what the engine measured (export it to git)"
    )
    cal = p.add_subparsers(dest="calibration_command", required=True, metavar="ACTION")
    q = cal.add_parser("export", help="write the measured corrections of the state file as TOML")
    q.add_argument(
        "--state-dir", type=Path, help="the daemon's state directory (default: settings)"
    )
    q.add_argument("--output", "-o", help="file to write (default: standard output)")
    q.set_defaults(func=cmd_calibration_export)

    p = sub.add_parser("schema", help="print the config's JSON Schema")
    p.set_defaults(func=cmd_schema)

    from daemon.cli.estimate import add_estimate_parser

    add_estimate_parser(sub).set_defaults(func=cmd_estimate)

    from daemon.cli.live import add_live_parsers

    add_live_parsers(sub)

    from daemon.cli.reload import add_reload_parser

    add_reload_parser(sub)

    p = sub.add_parser("run", help="the daemon: keep the cluster matching CONFIG (systemd service)")
    p.add_argument("config", nargs="?", help="config.toml (default: $XINFERENCE_RECONCILER_CONFIG)")
    p.add_argument("--state-dir", type=Path, help="ownership state and lock (default: settings)")
    p.add_argument("--endpoint", help="Xinference URL (overrides [cluster] endpoint)")
    p.set_defaults(func=cmd_run)
    return parser


def main(
    argv: Sequence[str] | None = None, *, stdout: TextIO | None = None, stderr: TextIO | None = None
) -> int:
    out, err = _out(stdout), stderr if stderr is not None else sys.stderr
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse prints its own usage message
        return Exit.OK if exc.code == 0 else Exit.ERROR
    try:
        if hasattr(args, "live"):
            return int(args.live(args, out, err))
        return int(args.func(args, out, err))
    except ConfigError as exc:
        err.write(f"invalid config ({len(exc.problems)} problem(s)):\n")
        for problem in exc.problems:
            err.write(f"  {problem}\n")
        return Exit.ERROR
    except ReconcilerError as exc:
        err.write(f"error: {exc}\n")
        return Exit.ERROR
