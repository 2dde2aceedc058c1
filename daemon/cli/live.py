"""The commands that talk to a live cluster: plan/fit without --observed, snapshot, status, apply and
import. Composition of the adapters lives here; the decisions stay in the core and the reconciler."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any, TextIO

from daemon.adapters.config_file import LoadedConfig, load_config
from daemon.adapters.secrets import Credentials, load_credentials
from daemon.adapters.state_file import StateStore
from daemon.adapters.xinference import XinferenceAdapter
from daemon.core.adoption import imported_config
from daemon.core.desired import AuthConfig, ClusterConfig
from daemon.core.observed import ObservedState
from daemon.core.ownership import OwnershipState
from daemon.core.planning import Launch, Plan
from daemon.errors import ReconcilerError
from daemon.events import EventLogger, configure
from daemon.exit_codes import Exit
from daemon.reconciler import Options, PassReport, observe, reconcile_once
from daemon.settings import Settings, load_settings


def endpoint_arg(value: str) -> str:
    """``--endpoint``: refused up front when malformed (no scheme, not http(s), user:password@)."""
    from daemon.core.addresses import check_endpoint

    try:
        return check_endpoint(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_live_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--endpoint", type=endpoint_arg, help="Xinference URL (overrides [cluster] endpoint)"
    )
    p.add_argument("--state-dir", type=Path, help="directory of the ownership state file")


def _settings() -> Settings:
    return load_settings()


def state_store(args: argparse.Namespace) -> StateStore:
    return StateStore(args.state_dir or _settings().state_dir)


def adapter_for(cluster: ClusterConfig, args: argparse.Namespace, err: TextIO) -> XinferenceAdapter:
    credentials = load_credentials(cluster.auth)
    for warning in credentials.warnings:
        err.write(f"warning: {warning}\n")
    endpoint = args.endpoint or _settings().endpoint or cluster.endpoint
    return XinferenceAdapter(
        endpoint=endpoint,
        credentials=credentials,
        timeout_seconds=cluster.timeout_seconds,
        verify_tls=cluster.verify_tls,
        ca_bundle=cluster.ca_bundle,
    )


def live_observed(loaded: LoadedConfig, args: argparse.Namespace, err: TextIO) -> ObservedState:
    """The live cluster as a pass would see it (read only: nothing is saved or changed)."""
    adapter = adapter_for(loaded.config.cluster, args, err)
    state = state_store(args).load()
    if state.problem:
        err.write(f"warning: {state.problem}\n")
    observed, _, _ = observe(
        adapter, state, loaded.config, now=time.time(), elapsed=_elapsed(state)
    )
    return observed


def _elapsed(state: OwnershipState) -> dict[str, float]:
    """Seconds since each loading launch was sent (wall clock: another process sent them)."""
    now = time.time()
    return {
        uid: max(0.0, now - r.sent_at)
        for uid, r in state.records.items()
        if r.loading and r.sent_at is not None
    }


def cmd_snapshot(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    from daemon.adapters.snapshot_file import observed_to_document

    if args.config:
        loaded = load_config(Path(args.config))
        observed = live_observed(loaded, args, err)
    else:
        if not args.endpoint:
            raise ReconcilerError("give CONFIG or --endpoint")
        adapter = XinferenceAdapter(endpoint=args.endpoint, credentials=_import_credentials(args))
        workers, models = adapter.observe()
        observed = ObservedState(
            workers=workers, models=models, managed=state_store(args).load().records
        )
    text = json.dumps(observed_to_document(observed), indent=2, sort_keys=True) + "\n"
    if args.output:
        Path(args.output).write_text(text)
        err.write(f"wrote {args.output}\n")
    else:
        out.write(text)
    return Exit.OK


def cmd_status(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    """Desired vs actual per model, memory per GPU. Exit 0 converged, 2 not (exit_codes.py)."""
    from daemon.adapters.nvml import probe
    from daemon.cli.render import convergence_text, fit_text, local_gpus_text, status_table
    from daemon.core.convergence import convergence
    from daemon.core.planning import plan

    loaded = load_config(Path(args.config))
    observed = live_observed(loaded, args, err)
    result = plan(loaded.config, loaded.demands, observed)
    out.write(status_table(result, observed))
    for r in result.refused:
        out.write(f"refused {r.uid}: {r.reason}\n")
    fraction = loaded.config.policy.gpu_max_fraction
    out.write(fit_text(result.budgets, cpu_models=result.cpu_models, max_fraction=fraction) + "\n")
    out.write(local_gpus_text(probe()) + "\n")
    verdict = convergence(result)
    out.write(convergence_text(verdict) + "\n")
    return Exit.OK if verdict.converged else Exit.NOT_CONVERGED


def _confirm(question: str, err: TextIO) -> bool:
    if not sys.stdin.isatty():
        return False
    err.write(question)
    err.flush()
    return sys.stdin.readline().strip().lower() in ("y", "yes")


def _print_report(report: PassReport, out: TextIO) -> None:
    """One line per action of the pass, and per launch of an earlier pass that ended in it."""
    for r in report.results:
        mark = "ok " if r.ok else "FAILED"
        out.write(f"  {mark} {r.kind:<9} {r.uid}: {r.message} ({r.seconds:.1f} s)\n")
    for o in report.settlement.outcomes:
        if o.result == "ready":
            out.write(f"  ok  launch    {o.uid}: READY ({o.seconds:.1f} s)\n")
        elif o.result != "loading":
            out.write(f"  FAILED launch    {o.uid}: {o.result}: {o.error} ({o.seconds:.1f} s)\n")
    for warning in report.warnings:
        out.write(f"  warning: {warning}\n")


def _signature(p: Plan) -> frozenset[tuple[str, ...]]:
    """What a plan would do, comparable between two plans (kind, uid, where, launch arguments)."""
    out: set[tuple[str, ...]] = set()
    for action in (*p.actions, *p.deferred, *p.admitted):
        if isinstance(action, Launch):
            where = f"{action.worker}:{list(action.gpu_indexes)}"
            args = json.dumps(dict(action.launch_args), sort_keys=True, default=str)
            out.add(("launch", action.uid, where, args))
        else:
            out.add(("terminate", action.uid))
    return frozenset(out)


def _stalled(report: PassReport) -> bool:
    """Nothing more can happen without waiting for a backoff or a change: only failures,
    refusals and tolerated drift remain."""
    p = report.plan
    return not (p.actions or p.deferred or p.waiting or report.settlement.loading or report.acted)


def cmd_apply(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    """Show the plan, ask, then carry out exactly that plan, pass after pass, until the cluster
    converges (exit 0), nothing more can be done now (2), or the cluster moved away from the
    confirmed plan (1: nothing more is done). Refuses to run beside a daemon on the same state."""
    from daemon.adapters.systemd import InstanceLock, LockHeldError

    loaded = load_config(Path(args.config))
    config = loaded.config
    if config.policy.mode != "enforce":
        raise ReconcilerError(
            f"{loaded.path}: policy.mode is {config.policy.mode!r}; apply changes nothing in observe "
            'mode (set policy.mode = "enforce", or use plan to see what would change)'
        )
    adapter = adapter_for(config.cluster, args, err)
    if not adapter.credentials.can_write:
        raise ReconcilerError(
            'policy.mode = "enforce" needs a user that may launch and terminate: Xinference lets API '
            'keys only read and infer (it answers 403); set [cluster.auth] mode = "password"'
        )
    store = state_store(args)
    lock = InstanceLock(store.path.parent / "daemon.lock")
    try:
        lock.acquire()
    except LockHeldError as exc:
        raise ReconcilerError(
            f"{exc}. A daemon manages this state directory: let it apply the file, or stop it first"
        ) from None
    try:
        return _apply_locked(args, loaded=loaded, adapter=adapter, store=store, out=out, err=err)
    finally:
        lock.release()


def _apply_locked(
    args: argparse.Namespace,
    *,
    loaded: LoadedConfig,
    adapter: XinferenceAdapter,
    store: StateStore,
    out: TextIO,
    err: TextIO,
) -> int:
    from daemon.cli.render import convergence_text, plan_text

    config = loaded.config
    preview = reconcile_once(
        config=config,
        demands=loaded.demands,
        cluster=adapter,
        store=store,
        opts=Options(act=False, config_revision=loaded.revision),
    )
    out.write(plan_text(preview.plan, title=f"Plan for {loaded.path} (revision {loaded.revision})"))
    out.write("\n")
    if preview.converged:
        return Exit.OK
    confirmed = _signature(preview.plan)
    if not confirmed:
        out.write(convergence_text(preview.convergence) + "\n")
        return Exit.NOT_CONVERGED
    if not args.yes and not _confirm("Apply these actions? [y/N] ", err):
        err.write("not applied (pass --yes to apply without asking)\n")
        return Exit.ERROR
    configure(fmt="auto", stream=err)
    events = EventLogger(config_revision=loaded.revision)

    def approve(p: Plan) -> str | None:
        extra = _signature(p) - confirmed
        if not extra:
            return None
        shown = ", ".join(sorted(f"{k[0]} {k[1]}" for k in extra))
        return f"the cluster changed since the plan was shown (now also: {shown})"

    opts = Options(act=True, config_revision=loaded.revision, events=events, approve=approve)
    deadline = time.monotonic() + args.timeout
    out.write("Applied:\n")
    while True:
        report = reconcile_once(
            config=config, demands=loaded.demands, cluster=adapter, store=store, opts=opts
        )
        _print_report(report, out)
        if report.aborted:
            err.write(f"aborted: {report.aborted}; nothing more was done. Run apply again.\n")
            return Exit.ERROR
        if report.converged:
            out.write(convergence_text(report.convergence) + "\n")
            return Exit.OK
        if _stalled(report) or time.monotonic() > deadline:
            if not _stalled(report):
                out.write(f"  gave up waiting after {args.timeout:g} s (--timeout)\n")
            out.write(convergence_text(report.convergence) + "\n")
            return Exit.NOT_CONVERGED
        time.sleep(args.poll_interval)


def _import_credentials(args: argparse.Namespace) -> Credentials:
    if args.api_key_env:
        return load_credentials(AuthConfig(mode="api_key", api_key_env=args.api_key_env))
    if args.username:
        if not args.password_env:
            raise ReconcilerError(
                "--username needs --password-env VAR (the password is never an argument)"
            )
        return load_credentials(
            AuthConfig(mode="password", username=args.username, password_env=args.password_env)
        )
    return Credentials(mode="none")


SCHEMA_PATH = Path("schemas") / "config.schema.json"


def _schema_header(target_dir: Path) -> str:
    """The ``#:schema`` directive when it points at a schema that exists beside the file (the
    layout of a config repository: config.toml and schemas/ at its root); else how to make one.
    Never a URL: this project publishes no schema at a stable address, and the schema must match
    the installed version, which ``xinference-reconciler schema`` prints."""
    if (target_dir / SCHEMA_PATH).is_file():
        return f"#:schema ./{SCHEMA_PATH.as_posix()}\n"
    return (
        f"# For completion and checks in editors: xinference-reconciler schema > {SCHEMA_PATH.as_posix()}\n"
        f"# (beside this file), then make the first line: #:schema ./{SCHEMA_PATH.as_posix()}\n"
    )


def _custom_registrations(
    adapter: XinferenceAdapter, observed: ObservedState
) -> dict[tuple[str, str], dict[str, Any]]:
    """The stored JSON of every running model that is a custom registration (not built in)."""
    out: dict[tuple[str, str], dict[str, Any]] = {}
    for m in observed.models:
        key = (m.model_type or "", m.model_name)
        if m.model_type is None or key in out:
            continue
        stored = adapter.registration(m.model_type, m.model_name)
        if stored is not None and stored.get("is_builtin") is False:
            out[key] = stored
    return out


def cmd_import(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    """A config describing what the cluster runs now: the models this tool launched with the specs
    it launched them with (its state file, --state-dir), custom models with their registrations."""
    import tomli_w

    credentials = _import_credentials(args)
    adapter = XinferenceAdapter(endpoint=args.endpoint, credentials=credentials)
    workers, models = adapter.observe()
    observed = ObservedState(workers=workers, models=models)
    state = state_store(args).load()
    if state.problem:
        err.write(f"warning: {state.problem}\n")
    auth: dict[str, Any] = {"mode": credentials.mode}
    if args.api_key_env:
        auth["api_key_env"] = args.api_key_env
    elif args.username:
        auth |= {"username": args.username, "password_env": args.password_env}
    doc = imported_config(
        observed,
        endpoint=args.endpoint,
        auth=auth,
        records=state.records,
        registrations=_custom_registrations(adapter, observed),
    )
    target = Path(args.output) if args.output else None
    text = _schema_header(target.parent if target else Path.cwd())
    text += '# Imported from the running cluster; review it, then set policy.mode = "enforce".\n'
    text += tomli_w.dumps(doc)
    if target is not None:
        if target.exists() and not args.force:
            raise ReconcilerError(f"{target} exists (use --force to overwrite)")
        target.write_text(text)
        err.write(f"wrote {target}: {len(doc['models'])} model(s)\n")
    else:
        out.write(text)
    from daemon.adapters.config_file import check_config

    try:
        check_config(doc, name=args.output or "<imported>", base_dir=Path.cwd())
    except ReconcilerError as exc:
        err.write(f"warning: the imported file needs attention before use:\n{exc}\n")
        return Exit.NOT_CONVERGED
    return Exit.OK


def add_live_parsers(sub: Any) -> None:
    p = sub.add_parser(
        "snapshot", help="write the live cluster's observed state as a snapshot (JSON)"
    )
    p.add_argument("config", nargs="?", help="config.toml (for the endpoint and credentials)")
    p.add_argument("--output", "-o", help="file to write (default: standard output)")
    p.add_argument("--username")
    p.add_argument("--password-env", metavar="VAR")
    p.add_argument("--api-key-env", metavar="VAR")
    add_live_options(p)
    p.set_defaults(live=cmd_snapshot)

    p = sub.add_parser(
        "status", help="desired vs actual, per model and per GPU, on the live cluster"
    )
    p.add_argument("config")
    add_live_options(p)
    p.set_defaults(live=cmd_status)

    p = sub.add_parser("apply", help="one reconcile pass against the live cluster")
    p.add_argument("config")
    p.add_argument("--yes", "-y", action="store_true", help="apply without asking")
    p.add_argument(
        "--poll-interval", type=float, default=1.0, help="seconds between passes while loading"
    )
    p.add_argument(
        "--timeout",
        type=float,
        default=1800.0,
        help="stop waiting for loads after this many seconds (they go on; exit 2)",
    )
    add_live_options(p)
    p.set_defaults(live=cmd_apply)

    p = sub.add_parser("import", help="write a config.toml describing what the cluster runs now")
    p.add_argument("--endpoint", required=True, type=endpoint_arg, help="Xinference URL")
    p.add_argument("--output", "-o")
    p.add_argument("--force", action="store_true", help="overwrite --output")
    p.add_argument("--username")
    p.add_argument(
        "--password-env", metavar="VAR", help="environment variable holding the password"
    )
    p.add_argument("--api-key-env", metavar="VAR", help="environment variable holding an API key")
    p.add_argument(
        "--state-dir",
        type=Path,
        help="this tool's state directory: the models it launched are written with their specs",
    )
    p.set_defaults(live=cmd_import)
