"""The offline commands: validate, plan, fit and schema. They read files (and, for plan and fit
without ``--observed``, observe the live cluster through daemon.cli.live); they never change it."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any, TextIO

from daemon.exit_codes import Exit


def cmd_validate(args: argparse.Namespace, out: TextIO, _err: TextIO) -> int:
    from daemon.adapters.config_file import load_config

    loaded = load_config(Path(args.config))
    models = loaded.config.models
    kinds = ", ".join(f"{uid} ({spec.model_type})" for uid, spec in sorted(models.items()))
    out.write(f"{args.config}: valid; {len(models)} model(s){': ' + kinds if kinds else ''}\n")
    return Exit.OK


def _plan_inputs(args: argparse.Namespace, err: TextIO) -> tuple[Any, Any]:
    """The config and the observed state: from a snapshot file, else from the live cluster."""
    from daemon.adapters.config_file import load_config
    from daemon.adapters.snapshot_file import load_snapshot

    loaded = load_config(Path(args.config))
    if args.observed is None:
        from daemon.cli.live import live_observed

        return loaded, live_observed(loaded, args, err)
    return loaded, load_snapshot(Path(args.observed))


def cmd_plan(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    from daemon.cli.render import plan_json, plan_text
    from daemon.core.convergence import convergence
    from daemon.core.planning import plan

    loaded, observed = _plan_inputs(args, err)
    result = plan(loaded.config, loaded.demands, observed)
    if args.json:
        doc = plan_json(result)
        doc["config"] = {"path": str(loaded.path), "revision": loaded.revision}
        out.write(json.dumps(doc, indent=2, sort_keys=True) + "\n")
    else:
        against = args.observed or "the live cluster"
        title = f"Plan for {loaded.path} (revision {loaded.revision}) against {against}"
        out.write(plan_text(result, title=title) + "\n")
    if args.detailed_exitcode and not convergence(result).converged:
        return Exit.NOT_CONVERGED
    return Exit.OK


def cmd_fit(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    from daemon.cli.render import fit_text
    from daemon.core.planning import plan

    loaded, observed = _plan_inputs(args, err)
    result = plan(loaded.config, loaded.demands, observed)
    text = fit_text(
        result.budgets,
        width=args.width,
        cpu_models=result.cpu_models,
        max_fraction=loaded.config.policy.gpu_max_fraction,
    )
    out.write(text + "\n")
    for refusal in result.refused:
        out.write(f"refused {refusal.uid}: {refusal.reason}\n")
    return Exit.OK


def cmd_schema(args: argparse.Namespace, out: TextIO, _err: TextIO) -> int:
    from daemon.schema import config_schema_text

    del args
    out.write(config_schema_text())
    return Exit.OK


def cmd_calibration_export(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    """Write the corrections the engine proved (the state file's) as a calibration ledger."""
    from daemon.adapters.calibration_file import ledger_text
    from daemon.adapters.state_file import StateStore
    from daemon.settings import Settings

    store = StateStore(args.state_dir or Settings().state_dir)
    state = store.load()
    if state.problem:
        err.write(f"warning: {state.problem}\n")
    text = ledger_text(state.corrections)
    if args.output:
        Path(args.output).write_text(text)
        err.write(f"wrote {args.output}: {len(state.corrections)} measured model(s)\n")
    else:
        out.write(text)
    return Exit.OK
