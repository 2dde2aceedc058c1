"""Command-line interface: ``main(argv) -> exit code``. Every subcommand is callable from tests.

Exit codes: 0 success; 1 error or invalid input; 2 (``plan --detailed-exitcode``) changes pending.
Bad input never produces a traceback: the project's own errors are printed as messages.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO

from daemon.errors import ConfigError, ReconcilerError

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_CHANGES = 2


def _out(stream: TextIO | None) -> TextIO:
    return stream if stream is not None else sys.stdout


def cmd_validate(args: argparse.Namespace, out: TextIO, _err: TextIO) -> int:
    from daemon.adapters.config_file import load_config

    loaded = load_config(Path(args.config))
    models = loaded.config.models
    kinds = ", ".join(f"{uid} ({spec.model_type})" for uid, spec in sorted(models.items()))
    out.write(f"{args.config}: valid; {len(models)} model(s){': ' + kinds if kinds else ''}\n")
    return EXIT_OK


def _plan_inputs(args: argparse.Namespace, err: TextIO) -> tuple[Any, Any]:
    """The config and the observed state: from a snapshot file, else from the live cluster."""
    from daemon.adapters.config_file import load_config
    from daemon.adapters.snapshot_file import load_snapshot

    loaded = load_config(Path(args.config))
    if args.observed is None:
        from daemon.cli_live import live_observed

        return loaded, live_observed(loaded, args, err)
    return loaded, load_snapshot(Path(args.observed))


def cmd_plan(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    from daemon.core.planning import plan
    from daemon.render import plan_json, plan_text

    loaded, observed = _plan_inputs(args, err)
    result = plan(loaded.config, loaded.demands, observed)
    if args.json:
        doc = plan_json(result)
        doc["config"] = {"path": str(loaded.path), "revision": loaded.content_hash}
        out.write(json.dumps(doc, indent=2, sort_keys=True) + "\n")
    else:
        against = args.observed or "the live cluster"
        title = f"Plan for {loaded.path} (revision {loaded.content_hash}) against {against}"
        out.write(plan_text(result, title=title) + "\n")
    if args.detailed_exitcode and (result.has_changes or result.refused):
        return EXIT_CHANGES
    return EXIT_OK


def cmd_fit(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    from daemon.core.planning import plan
    from daemon.render import fit_text

    loaded, observed = _plan_inputs(args, err)
    result = plan(loaded.config, loaded.demands, observed)
    out.write(fit_text(result.budgets, width=args.width) + "\n")
    for refusal in result.refused:
        out.write(f"refused {refusal.uid}: {refusal.reason}\n")
    return EXIT_OK


def cmd_schema(args: argparse.Namespace, out: TextIO, _err: TextIO) -> int:
    from daemon.schema import config_schema_text

    del args
    out.write(config_schema_text())
    return EXIT_OK


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


def cmd_estimate(args: argparse.Namespace, out: TextIO, _err: TextIO) -> int:
    from daemon.estimate_cmd import run_estimate

    return run_estimate(args, out)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="xinference-reconciler",
        description="Keep an Xinference cluster matching config.toml, admitting only what fits GPU memory.",
    )
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
        from daemon.cli_live import add_live_options

        add_live_options(p)
        if name == "plan":
            p.add_argument("--json", action="store_true", help="print the plan as JSON")
            p.add_argument(
                "--detailed-exitcode",
                action="store_true",
                help="exit 0 when nothing changes, 2 when there are changes or refusals, 1 on error",
            )
        else:
            p.add_argument("--width", type=int, default=60, help="bar width in characters")
        p.set_defaults(func=func)

    p = sub.add_parser("schema", help="print the config's JSON Schema")
    p.set_defaults(func=cmd_schema)

    from daemon.estimate_cmd import add_estimate_parser

    add_estimate_parser(sub).set_defaults(func=cmd_estimate)

    from daemon.cli_live import add_live_parsers

    add_live_parsers(sub)

    from daemon.reload import add_reload_parser

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
        return EXIT_OK if exc.code == 0 else EXIT_ERROR
    try:
        if hasattr(args, "live"):
            return int(args.live(args, out, err))
        return int(args.func(args, out, err))
    except ConfigError as exc:
        err.write(f"invalid config ({len(exc.problems)} problem(s)):\n")
        for problem in exc.problems:
            err.write(f"  {problem}\n")
        return EXIT_ERROR
    except ReconcilerError as exc:
        err.write(f"error: {exc}\n")
        return EXIT_ERROR
