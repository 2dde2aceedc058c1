"""One plan: drift + admission -> ordered actions (terminations first, then launches) and refusals.

Pure and deterministic: the same config, demands and observed state give the same plan whatever
the order of their entries.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from daemon.core.admission import (
    SEARCH_BUDGET,
    GpuCapacity,
    Placement,
    Refusal,
    admit,
    precedence,
)
from daemon.core.demand import Demand, claim_on
from daemon.core.desired import Config
from daemon.core.drift import ModelStatus, State, detect_drift
from daemon.core.engines import FRACTION_ENGINES
from daemon.core.fit import GpuBudget, gpu_budgets
from daemon.core.observed import GpuRef, GpuSnapshot, ObservedState, RunningModel
from daemon.core.units import GiB


@dataclass(frozen=True, kw_only=True)
class Terminate:
    uid: str
    reason: str
    managed: bool


@dataclass(frozen=True, kw_only=True)
class Launch:
    uid: str
    reason: str
    spec_hash: str
    model_name: str
    model_type: str
    worker: str | None
    gpu_indexes: tuple[int, ...]
    n_gpu: int | None
    replica: int
    launch_args: Mapping[str, Any]  # everything else Xinference's launch takes (engine kwargs too)
    claims: Mapping[GpuRef, int]
    replaces: bool = False


Action = Terminate | Launch


@dataclass(frozen=True, kw_only=True)
class Plan:
    mode: str
    actions: tuple[Action, ...]
    refused: tuple[Refusal, ...]
    deferred: tuple[Action, ...]
    statuses: tuple[ModelStatus, ...]
    budgets: tuple[GpuBudget, ...]
    notes: tuple[str, ...] = ()
    placements: Mapping[str, Placement] = field(default_factory=lambda: MappingProxyType({}))

    @property
    def has_changes(self) -> bool:
        return bool(self.actions or self.deferred)


def _limit(gpu: GpuSnapshot, config: Config) -> int:
    policy = config.policy
    return math.floor(gpu.total_bytes * policy.gpu_max_fraction) - round(
        policy.gpu_reserve_gib * GiB
    )


def _attribution(
    running: RunningModel,
    ref: GpuRef,
    observed: ObservedState,
    estimable: Mapping[str, Demand],
    totals: Mapping[GpuRef, int],
) -> int:
    """Memory to account to a running model on one GPU: reported, else recorded at launch, else
    estimated from the file when the running instance is what the file describes (in sync).

    An instance that differs from the file (or is not in it) and that nobody reports on stays in
    "used outside the plan": terminating it is then not counted as freeing anything, which is the
    safe side (the next pass sees what was really freed).
    """
    if ref in running.gpu_memory:
        return running.gpu_memory[ref]
    record = observed.managed.get(running.uid)
    if record is not None and ref in record.claims:
        return record.claims[ref]
    demand = estimable.get(running.uid)
    if demand is not None and ref in totals:
        return claim_on(demand, totals[ref]).bytes
    return 0


def _capacities(
    config: Config,
    observed: ObservedState,
    estimable: Mapping[str, Demand],
    leaving: frozenset[str],
) -> tuple[list[GpuCapacity], dict[GpuRef, dict[str, int]]]:
    totals = {g.ref: g.total_bytes for g in observed.gpus}
    held: dict[GpuRef, dict[str, int]] = {ref: {} for ref in totals}
    for running in observed.models:
        for ref in running.gpu_refs:
            if ref in held:
                held[ref][running.uid] = _attribution(running, ref, observed, estimable, totals)
    caps = []
    for gpu in sorted(observed.gpus, key=lambda g: g.ref):
        accounted = sum(held[gpu.ref].values())
        staying = sum(b for uid, b in held[gpu.ref].items() if uid not in leaving)
        caps.append(
            GpuCapacity(
                ref=gpu.ref,
                total=gpu.total_bytes,
                limit=_limit(gpu, config),
                external=max(0, gpu.used_bytes - accounted),
                staying=staying,
            )
        )
    return caps, held


def _surplus_terminations(
    config: Config, statuses: tuple[ModelStatus, ...], observed: ObservedState
) -> tuple[list[Terminate], list[str]]:
    notes: list[str] = []
    surplus = [s for s in statuses if s.state == State.UNEXPECTED]
    if not surplus:
        return [], notes
    policy = config.policy
    if not config.models and policy.on_empty_config == "keep":
        notes.append(
            f"the file lists no models: {len(surplus)} running model(s) kept "
            "(policy.on_empty_config = 'keep')"
        )
        return [], notes
    out = []
    for s in surplus:
        if policy.prune == "all" or (policy.prune == "managed" and s.uid in observed.managed):
            why = "not in the file" + (" (launched by this tool)" if s.managed else "")
            out.append(Terminate(uid=s.uid, reason=why, managed=s.managed))
        else:
            notes.append(
                f"{s.uid}: not in the file, left running (policy.prune = {policy.prune!r})"
            )
    return out, notes


def launch_args(demand: Demand, placement: Placement) -> dict[str, Any]:
    """Arguments for Xinference's launch besides uid/name/type/placement: engine, format, memory."""
    spec = demand.spec
    args: dict[str, Any] = {}
    for key in (
        "model_engine",
        "model_format",
        "model_size_in_billions",
        "quantization",
        "download_hub",
        "model_path",
    ):
        value = getattr(spec, key)
        if value is not None:
            args[key] = value
    mem = spec.memory
    if spec.model_engine in FRACTION_ENGINES:
        if placement.utilization is not None:
            args["gpu_memory_utilization"] = placement.utilization
        if placement.claims and placement.claims[0].max_model_len is not None:
            args["max_model_len"] = placement.claims[0].max_model_len
        if mem.kv_cache_dtype != "auto":
            args["kv_cache_dtype"] = mem.kv_cache_dtype
        if mem.max_num_seqs is not None:
            args["max_num_seqs"] = mem.max_num_seqs
        if mem.max_num_batched_tokens is not None:
            args["max_num_batched_tokens"] = mem.max_num_batched_tokens
        if mem.enforce_eager:
            args["enforce_eager"] = True
    elif mem.max_model_len is not None and spec.model_type == "LLM":
        args["max_model_len"] = mem.max_model_len
    args.update(spec.engine_args)
    return args


def _launch(demand: Demand, placement: Placement, *, reason: str, replaces: bool) -> Launch:
    spec = demand.spec
    on_gpu = bool(placement.gpus)
    return Launch(
        uid=demand.uid,
        reason=reason,
        spec_hash=spec.spec_hash(),
        model_name=spec.model_name,
        model_type=spec.model_type,
        worker=placement.worker,
        gpu_indexes=tuple(r.index for r in placement.gpus),
        n_gpu=spec.placement.gpus if on_gpu else None,
        replica=spec.replicas,
        launch_args=MappingProxyType(launch_args(demand, placement)),
        claims=MappingProxyType(
            {r: c.bytes for r, c in zip(placement.gpus, placement.claims, strict=True)}
        ),
        replaces=replaces,
    )


def _wanted(
    statuses: tuple[ModelStatus, ...],
    demands: Mapping[str, Demand],
    observed: ObservedState,
    notes: list[str],
) -> dict[str, tuple[Demand, str, bool]]:
    """Desired models to launch this pass: uid -> (demand, reason, replaces a running instance).

    Appends to ``notes`` why drift is left alone (unmanaged, protected, backing off).
    """
    wanted: dict[str, tuple[Demand, str, bool]] = {}
    for s in statuses:
        if not s.desired or s.uid not in demands:
            continue
        spec = demands[s.uid].spec
        if spec.unmanaged and s.is_drift:
            notes.append(f"{s.uid}: {s.state} but unmanaged; reported only")
        elif s.state in (State.MISSING, State.FAILED) and s.uid in observed.backing_off:
            notes.append(f"{s.uid}: launch failed; next retry after its backoff")
        elif s.state == State.MISSING:
            wanted[s.uid] = (demands[s.uid], "missing", False)
        elif s.state == State.FAILED:
            wanted[s.uid] = (demands[s.uid], f"retry after failure: {s.reasons[0]}", False)
        elif s.state == State.CHANGED and spec.protected:
            notes.append(f"{s.uid}: changed but protected; not replaced ({'; '.join(s.reasons)})")
        elif s.state == State.CHANGED:
            wanted[s.uid] = (demands[s.uid], "replace: " + "; ".join(s.reasons), True)
    return wanted


def plan(
    config: Config,
    demands: Mapping[str, Demand],
    observed: ObservedState,
    *,
    search_budget: int = SEARCH_BUDGET,
) -> Plan:
    """The actions that move ``observed`` towards ``config`` (see the module docstring).

    ``search_budget`` bounds the exhaustive placement fallback (0: greedy only, for benchmarks).
    """
    statuses = detect_drift(config.models, observed)
    terminations, notes = _surplus_terminations(config, statuses, observed)
    wanted = _wanted(statuses, demands, observed, notes)

    # Replacements free their old memory only if the new spec is admitted. A refused replacement
    # leaves the old instance running (it is not terminated, nor launched again later in this
    # pass); admit again without it until nothing more is refused.
    replacing = {uid for uid, (_, _, rep) in wanted.items() if rep}
    surplus_gone = frozenset(t.uid for t in terminations)
    in_sync = {s.uid for s in statuses if s.state == State.IN_SYNC}
    estimable = {uid: d for uid, d in demands.items() if uid in in_sync}
    kept: list[Refusal] = []
    while True:
        caps, held = _capacities(config, observed, estimable, surplus_gone | replacing)
        admission = admit(
            [d for d, _, _ in wanted.values()], caps, observed.workers, search_budget=search_budget
        )
        refused_replacements = [r for r in admission.refused if r.uid in replacing]
        if not refused_replacements:
            break
        for refusal in refused_replacements:
            kept.append(refusal)
            replacing.discard(refusal.uid)
            del wanted[refusal.uid]
    refused = tuple(sorted((*admission.refused, *kept), key=lambda r: r.uid))

    placements = {p.uid: p for p in admission.placements}
    launches = [
        _launch(wanted[uid][0], placements[uid], reason=wanted[uid][1], replaces=wanted[uid][2])
        for uid in sorted(placements, key=lambda u: precedence(wanted[u][0]))
    ]
    replace_terms = [
        Terminate(uid=uid, reason="replaced by the new spec", managed=uid in observed.managed)
        for uid in sorted(replacing)
    ]
    ordered: list[Action] = [*sorted(terminations, key=lambda t: t.uid), *replace_terms, *launches]
    cap = config.policy.max_actions_per_pass
    budgets = gpu_budgets(
        observed=observed,
        demands=estimable,
        held=held,
        caps=caps,
        placements=placements,
        leaving=surplus_gone | replacing,
    )
    return Plan(
        mode=config.policy.mode,
        actions=tuple(ordered[:cap]),
        refused=refused,
        deferred=tuple(ordered[cap:]),
        statuses=statuses,
        budgets=budgets,
        notes=tuple(notes),
        placements=MappingProxyType(placements),
    )
