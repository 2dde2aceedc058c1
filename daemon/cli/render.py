"""Plans and GPU budgets as text for people and JSON for scripts. Pure string building."""

from __future__ import annotations

from typing import Any

from daemon.adapters.nvml import NvmlReport
from daemon.core.admission import Refusal
from daemon.core.convergence import Convergence, convergence
from daemon.core.drift import State
from daemon.core.fit import CpuModel, GpuBudget
from daemon.core.observed import ObservedState
from daemon.core.planning import Launch, Plan, Register, Terminate
from daemon.core.units import GiB, fmt_gib


def _launch_line(a: Launch) -> str:
    where = a.worker or "(Xinference chooses)"
    if a.gpu_indexes:
        where += " gpu " + ",".join(str(i) for i in a.gpu_indexes)
    elif a.n_gpu is None:
        where += " cpu"
    args = a.launch_args
    memory = []
    if "gpu_memory_utilization" in args:
        memory.append(f"gpu_memory_utilization={args['gpu_memory_utilization']}")
    if "max_model_len" in args:
        memory.append(f"max_model_len={args['max_model_len']}")
    if "kv_cache_memory_bytes" in args:
        memory.append(f"kv_cache_memory_bytes={fmt_gib(int(args['kv_cache_memory_bytes']))}")
    if a.claims:
        memory.append(f"holds {fmt_gib(max(a.claims.values()))}/GPU")
    verb = "~ replace  " if a.replaces else "+ launch   "
    engine = args.get("model_engine", "")
    extra = f" [{', '.join(memory)}]" if memory else ""
    head = f"  {verb}{a.uid}: {a.model_name} ({engine or a.model_type}) on {where}{extra}"
    measured = f"\n      memory: {a.measured}" if a.measured else ""
    return f"{head}\n      why: {a.reason}{measured}"


def _terminate_line(a: Terminate) -> str:
    return f"  - terminate {a.uid}: {a.reason}"


def _refused_line(r: Refusal) -> str:
    return f"  ! refused  {r.uid}: {r.reason}"


def _register_line(r: Register) -> str:
    return (
        f"  + register {r.model_name} ({r.model_type}) from {r.model_uri} "
        f"for {', '.join(r.uids)}: {r.reason}"
    )


def plan_text(plan: Plan, *, title: str) -> str:
    lines = [title, f"mode: {plan.mode}"]
    registered = False
    for action in plan.actions:
        if isinstance(action, Launch) and not registered:  # as a pass acts: registrations first
            lines.extend(_register_line(r) for r in plan.registrations)
            registered = True
        lines.append(
            _launch_line(action) if isinstance(action, Launch) else _terminate_line(action)
        )
    for action in plan.deferred:
        line = _launch_line(action) if isinstance(action, Launch) else _terminate_line(action)
        lines.append(line.replace("  ", "  (next pass) ", 1))
    for w in plan.waiting:
        head = f"  (waits) ~ replace  {w.uid}" if w.launch is None else _launch_line(w.launch)
        lines.append(head.replace("  ", "  (waits) ", 1) if w.launch else head)
        lines.append(f"      {w.reason}")
    lines.extend(_refused_line(r) for r in plan.refused)
    busy = [s for s in plan.statuses if s.state in (State.LAUNCHING, State.TERMINATING)]
    lines.extend(f"  . {s.state}: {s.uid}" for s in busy)
    in_sync = [s.uid for s in plan.statuses if s.state == State.IN_SYNC]
    if in_sync:
        lines.append(f"  = in sync: {', '.join(in_sync)}")
    lines.extend(f"  note: {n}" for n in plan.notes)
    launches = sum(isinstance(a, Launch) for a in plan.actions)
    terminations = sum(isinstance(a, Terminate) for a in plan.actions)
    register = f"{len(plan.registrations)} to register, " if plan.registrations else ""
    summary = (
        f"{register}{launches} to launch, {terminations} to terminate, {len(plan.waiting)} waiting for a "
        f"load on their GPU, {len(plan.deferred)} deferred (max_actions_per_pass), "
        f"{len(plan.refused)} refused."
    )
    if not plan.refused:
        summary += " All admitted."
    verdict = convergence(plan)
    if not plan.has_changes and not plan.refused:
        summary = convergence_text(verdict)
    elif not verdict.converged and any(p.what not in _ACTION_WORDS for p in verdict.pending):
        summary += "\n" + convergence_text(verdict)
    lines.append(summary)
    return "\n".join(lines)


_ACTION_WORDS = {"launch", "replace", "terminate", "deferred", "waiting", "refused"}


def convergence_text(verdict: Convergence) -> str:
    """The one sentence every command ends with: in sync, or what stands in the way."""
    if verdict.converged:
        return "No changes: the cluster matches the file."
    lines = [f"The cluster does not match the file ({len(verdict.pending)} model(s)):"]
    lines += [f"  {p.uid}: {p.what}: {p.reason}" for p in verdict.pending]
    return "\n".join(lines)


def _action_json(a: Launch | Terminate) -> dict[str, Any]:
    if isinstance(a, Terminate):
        return {"action": "terminate", "uid": a.uid, "reason": a.reason, "managed": a.managed}
    return {
        "action": "replace" if a.replaces else "launch",
        "uid": a.uid,
        "reason": a.reason,
        "model_name": a.model_name,
        "model_type": a.model_type,
        "worker": a.worker,
        "gpu_indexes": list(a.gpu_indexes),
        "n_gpu": a.n_gpu,
        "replica": a.replica,
        "launch_args": dict(a.launch_args),
        "claims_bytes": {str(r): b for r, b in sorted(a.claims.items())},
        "spec_hash": a.spec_hash,
        "measured": a.measured,
    }


def refusal_json(r: Refusal) -> dict[str, Any]:
    """A refusal for scripts: the reason, bytes per GPU (null when no GPU could be sized against)
    and each change of config keys with which the model would fit now."""
    return {"uid": r.uid, "reason": r.reason, **r.figures()}


def plan_json(plan: Plan) -> dict[str, Any]:
    verdict = convergence(plan)
    return {
        "mode": plan.mode,
        "has_changes": plan.has_changes,
        "converged": verdict.converged,
        "pending": [{"uid": p.uid, "what": p.what, "reason": p.reason} for p in verdict.pending],
        "registrations": [
            {
                "model_name": r.model_name,
                "model_type": r.model_type,
                "model_uri": r.model_uri,
                "reason": r.reason,
                "for": list(r.uids),
            }
            for r in plan.registrations
        ],
        "actions": [_action_json(a) for a in plan.actions],
        "deferred": [_action_json(a) for a in plan.deferred],
        "waiting": [
            {**(_action_json(w.launch) if w.launch else {"uid": w.uid}), "waiting_for": w.reason}
            for w in plan.waiting
        ],
        "refused": [refusal_json(r) for r in plan.refused],
        "models": [
            {
                "uid": s.uid,
                "state": str(s.state),
                "reasons": list(s.reasons),
                "desired": s.desired,
                "managed": s.managed,
            }
            for s in plan.statuses
        ],
        "gpus": [
            {
                "gpu": str(b.ref),
                "name": b.name,
                "total_bytes": b.total,
                "reserve_bytes": b.reserve,
                "reserve_gpu_reserve_bytes": b.reserve_fixed,
                "reserve_above_max_fraction_bytes": b.reserve_above_fraction,
                "external_bytes": b.external,
                "free_bytes": b.free,
                "models": [
                    {
                        "uid": s.uid,
                        "state": s.state,
                        "weights_bytes": s.weights,
                        "kv_bytes": s.kv,
                        "overhead_bytes": s.overhead,
                        "measured_bytes": s.measured,
                    }
                    for s in b.segments
                ],
            }
            for b in plan.budgets
        ],
        "cpu_models": [
            {
                "uid": m.uid,
                "model_name": m.model_name,
                "model_engine": m.model_engine,
                "worker": m.worker,
                "state": m.state,
            }
            for m in plan.cpu_models
        ],
        "notes": list(plan.notes),
    }


_FILL = {"weights": "#", "kv": "=", "overhead": "+", "external": "x", "reserve": "/", "free": "."}
_LEGEND = (
    "legend: # weights  = KV cache  + overhead  x used outside the plan  / reserve  . free; "
    "the letters under a bar name its models"
)


def _label(i: int) -> str:
    """A, B, ..., Z, then a, b, ... (and round again past 52 models on one GPU)."""
    letters = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
    return letters[i % len(letters)]


def _bar(budget: GpuBudget, width: int) -> tuple[str, str]:
    """The bar and the row of model letters under it, cut at the same positions (cumulative
    rounding: every segment starts where the one before it ends)."""
    parts: list[tuple[str, int, str]] = []  # (kind, bytes, label)
    for i, s in enumerate(budget.segments):
        parts += [(k, n, _label(i)) for k, n in (("weights", s.weights), ("kv", s.kv))]
        parts.append(("overhead", s.overhead, _label(i)))
    parts += [("external", budget.external, " "), ("reserve", budget.reserve, " ")]
    parts.append(("free", max(0, budget.free), " "))
    scale = width / max(budget.total, 1)
    bar, labels, done, at = [], [], 0, 0
    for kind, n, label in parts:
        done += n
        end = min(width, round(done * scale))
        bar.append(_FILL[kind] * (end - at))
        labels.append(label * (end - at))
        at = max(at, end)
    return ("".join(bar) + "." * width)[:width], ("".join(labels) + " " * width)[:width]


def _reserve_text(b: GpuBudget, fraction: float | None) -> str:
    above = f" above gpu_max_fraction {fraction:g}" if fraction is not None else ""
    return (
        f"reserve {fmt_gib(b.reserve)} = gpu_reserve_gib {fmt_gib(b.reserve_fixed)} "
        f"+ {fmt_gib(b.reserve_above_fraction)}{above}"
    )


def fit_text(
    budgets: tuple[GpuBudget, ...],
    *,
    width: int = 60,
    cpu_models: tuple[CpuModel, ...] = (),
    max_fraction: float | None = None,
) -> str:
    """Each GPU's bar with its models lettered (a legend line per model), what is outside the
    plan, the reserve broken down, what stays free; then the CPU models."""
    lines = []
    if not budgets:
        lines.append("No GPUs in the observed state: only CPU models can be placed.")
    else:
        lines.append(_LEGEND)
    for b in budgets:
        over = " OVER-COMMITTED" if b.free < 0 else ""
        lines.append(f"{b.ref} {b.name} ({fmt_gib(b.total)}){over}")
        bar, labels = _bar(b, width)
        lines.append(f"  [{bar}]")
        lines.append(f"   {labels}".rstrip())
        for i, s in enumerate(b.segments):
            measured = f" (incl. {fmt_gib(s.measured)} measured)" if s.measured else ""
            lines.append(
                f"  {_label(i)} {s.uid:<22} {s.state:<8} weights {s.weights / GiB:6.2f}  "
                f"kv {s.kv / GiB:6.2f}  overhead {s.overhead / GiB:5.2f} GiB{measured}"
            )
        lines.append(
            f"  {'(outside the plan)':<24} {'':<8} {fmt_gib(b.external)}; "
            f"{_reserve_text(b, max_fraction)}; free {fmt_gib(b.free)}"
        )
    if cpu_models:
        lines.append("CPU models (no GPU memory planned):")
        for m in cpu_models:
            engine = f" ({m.model_engine})" if m.model_engine else ""
            where = m.worker or "(Xinference chooses)"
            lines.append(f"  {m.uid:<24} {m.state:<8} {m.model_name}{engine} on {where}")
    return "\n".join(lines)


def status_table(plan: Plan, observed: ObservedState) -> str:
    """One line per desired or running model: desired?, state, where it runs, why."""
    lines = []
    running = {m.uid: m for m in observed.models}
    lines.append(f"{'model':<24} {'desired':<8} {'state':<12} {'where':<28} detail\n")
    for s in plan.statuses:
        m = running.get(s.uid)
        where = "-"
        if m is not None:
            where = (m.worker or "?") + (
                f" gpu {','.join(map(str, m.gpu_indexes))}" if m.gpu_indexes else ""
            )
        owner = " (ours)" if s.managed else ""
        detail = "; ".join(s.reasons)
        lines.append(
            f"{s.uid:<24} {'yes' if s.desired else 'no':<8} {s.state!s:<12} {where:<28} {detail}{owner}\n"
        )
    return "".join(lines)


def local_gpus_text(report: NvmlReport) -> str:
    """This host's GPUs as NVML sees them, with per-process memory (a cross-check of /status)."""
    if not report.gpus:
        return f"local GPUs (NVML): none ({report.error})"
    lines = [f"local GPUs (NVML, driver {report.driver_version}):"]
    for gpu in report.gpus:
        lines.append(
            f"  gpu{gpu.index} {gpu.name}: used {gpu.used_bytes / 2**30:.2f} of "
            f"{gpu.total_bytes / 2**30:.2f} GiB, free {gpu.free_bytes / 2**30:.2f} GiB"
        )
        for proc in gpu.processes:
            held = "?" if proc.used_bytes is None else f"{proc.used_bytes / 2**30:.2f} GiB"
            lines.append(f"    pid {proc.pid}: {held}")
    return "\n".join(lines)
