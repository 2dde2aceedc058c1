"""The parser and the entry point: ``main(argv) -> exit code`` (daemon/exit_codes.py).

Bad input never produces a traceback: the project's own errors are printed as messages.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn, TextIO

from daemon.cli.offline import (
    cmd_calibration_export,
    cmd_fit,
    cmd_plan,
    cmd_schema,
    cmd_validate,
)
from daemon.errors import ConfigError, ReconcilerError, SettingsError
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


class UsageError(Exception):
    """A command line argparse refused; main() prints it and picks the exit code."""

    def __init__(self, parser: Parser, message: str) -> None:
        super().__init__(message)
        self.parser, self.message = parser, message


class Parser(argparse.ArgumentParser):
    """argparse's parser whose usage errors come back to main() instead of exiting 2: they exit 1,
    and ``run``'s exit 78 (a unit's command line that cannot start the daemon must not
    restart-loop). Subcommand parsers are of this class too (``usage_error_exit=`` per parser)."""

    def __init__(self, *args: Any, usage_error_exit: int = Exit.ERROR, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.usage_error_exit = usage_error_exit

    def error(self, message: str) -> NoReturn:
        raise UsageError(self, message)


def cmd_validate_each(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    """``validate FILE...``: every file is checked and reported (pre-commit passes all the staged
    ones at once); exit 1 when any is invalid."""
    code = Exit.OK
    for path in args.config:
        try:
            cmd_validate(argparse.Namespace(config=path), out, err)
        except ConfigError as exc:
            _problems(err, "invalid config", [str(p) for p in exc.problems])
            code = Exit.ERROR
    return code


def _problems(err: TextIO, title: str, problems: Sequence[str]) -> None:
    err.write(f"{title} ({len(problems)} problem(s)):\n")
    for problem in problems:
        err.write(f"  {problem}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="xinference-reconciler",
        description="Keep an Xinference cluster matching config.toml, admitting only what fits GPU memory.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {version()}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("validate", help="check config files (exit 0 all valid, 1 any invalid)")
    p.add_argument("config", nargs="+", help="path to config.toml (several: each is checked)")
    p.set_defaults(func=cmd_validate_each)

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

    from daemon.cli.run import add_run_parser

    add_run_parser(sub)
    return parser


def main(
    argv: Sequence[str] | None = None, *, stdout: TextIO | None = None, stderr: TextIO | None = None
) -> int:
    out, err = _out(stdout), stderr if stderr is not None else sys.stderr
    try:
        code = _run(argv, out, err)
        out.flush()  # a reader that went away shows here, not in the interpreter's last flush
    except BrokenPipeError:
        # The reader closed the pipe (`status ... | head -3`): stop quietly, as the Python docs
        # advise (signal module, "Note on SIGPIPE"), and point the process's standard output at
        # /dev/null so the interpreter's final flush of what is still buffered cannot fail.
        if stdout is None:
            _stdout_to_devnull()
        return Exit.ERROR
    return code


def _stdout_to_devnull() -> None:
    import os

    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):  # no real file descriptor (tests): nothing to do
        pass


def _run(argv: Sequence[str] | None, out: TextIO, err: TextIO) -> int:
    parser = build_parser()
    try:
        args, extra = parser.parse_known_args(argv)
        if extra:  # unknown arguments: the command's own parser says so (with its exit code)
            chosen = _subcommands(parser).get(getattr(args, "command", ""), parser)
            chosen.error(f"unrecognized arguments: {' '.join(extra)}")
    except UsageError as exc:
        exc.parser.print_usage(err)
        err.write(f"{exc.parser.prog}: error: {exc.message}\n")
        return exc.parser.usage_error_exit
    except SystemExit as exc:  # --help and --version print and exit 0
        return Exit.OK if exc.code in (0, None) else Exit.ERROR
    try:
        if hasattr(args, "live"):
            return int(args.live(args, out, err))
        return int(args.func(args, out, err))
    except ConfigError as exc:
        _problems(err, "invalid config", [str(p) for p in exc.problems])
        return Exit.ERROR
    except SettingsError as exc:
        _problems(err, "invalid settings", exc.problems)
        return Exit.ERROR
    except ReconcilerError as exc:
        err.write(f"error: {exc}\n")
        return Exit.ERROR


def _subcommands(parser: argparse.ArgumentParser) -> dict[str, Parser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}
