"""One plan: drift + admission -> ordered actions (terminations first, then launches) and refusals.

Pure and deterministic: the same config, demands and observed state give the same plan whatever
the order of their entries.
"""

from __future__ import annotations

import hashlib
import json
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
from daemon.core.custom import registration_digest
from daemon.core.demand import Demand, claim_on
from daemon.core.desired import Config, ModelSpec
from daemon.core.drift import ModelStatus, State, detect_drift
from daemon.core.engines import FRACTION_ENGINES, Engine
from daemon.core.fit import CpuModel, GpuBudget, gpu_budgets
from daemon.core.launch import problems_text, request_problems
from daemon.core.observed import (
    ERROR,
    IN_PROGRESS,
    GpuRef,
    GpuSnapshot,
    ObservedState,
    RunningModel,
)
from daemon.core.units import GiB
from daemon.core.vllm_rules import UNKNOWN, Scope, VllmRules
from daemon.core.worker_versions import WorkerVllm, worker_vllms


@dataclass(frozen=True, kw_only=True)
class Terminate:
    uid: str
    reason: str
    managed: bool
    loading: bool = False  # still loading: Xinference cancels a launch, it cannot terminate one


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
    # Where the claim includes what the engine measured (a correction, or the calibration
    # ledger): said in plans, so people can tell measured figures from estimates.
    measured: str | None = None


Action = Terminate | Launch


@dataclass(frozen=True, kw_only=True)
class Register:
    """A custom model this pass registers before launching it (core/custom.py builds the JSON)."""

    model_name: str
    model_type: str
    model_uri: str
    reason: str
    uids: tuple[str, ...]  # the launches of this pass that need it


@dataclass(frozen=True, kw_only=True)
class Waiting:
    """A launch that is admitted but not sent this pass: another launch is loading on one of its
    GPUs (two engines profiling one GPU at once corrupt each other's measurements). A later pass
    sends it once that load is READY, failed or gone."""

    uid: str
    reason: str
    launch: Launch | None  # None: a replacement held back before it was placed
    # Waits for another launch of this same pass (not for a load already in progress).
    behind_this_pass: bool = False


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
    waiting: tuple[Waiting, ...] = ()
    # Desired models whose drift this plan leaves alone, and why (backing off, protected, unmanaged).
    left_alone: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    cpu_models: tuple[CpuModel, ...] = ()  # what holds no GPU memory (for fit)
    registrations: tuple[Register, ...] = ()  # custom models registered before this pass's launches

    @property
    def has_changes(self) -> bool:
        return bool(self.actions or self.deferred or self.waiting)

    @property
    def admitted(self) -> tuple[Launch, ...]:
        """Every launch admission placed: sent this pass, deferred, or waiting for its GPU."""
        sent = (a for a in (*self.actions, *self.deferred) if isinstance(a, Launch))
        return (*sent, *(w.launch for w in self.waiting if w.launch is not None))


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
    *,
    rules: VllmRules,
) -> int:
    """Memory to account to a running model on one GPU: reported, else recorded at launch, else
    estimated from the file when the running instance is what the file describes (in sync).

    An instance that differs from the file (or is not in it) and that nobody reports on stays in
    "used outside the plan": terminating it is then not counted as freeing anything, which is the
    safe side (the next pass sees what was really freed). A loading instance nobody recorded (a
    foreign launch, or ours before a restart lost the record) is counted by its estimate when the
    file describes it: it will grow to that, whatever it holds now.
    """
    if running.status == ERROR:
        return 0  # a failed instance's process is gone: it holds nothing (used_bytes agrees)
    if ref in running.gpu_memory:
        return running.gpu_memory[ref]
    record = observed.managed.get(running.uid)
    if record is not None and ref in record.claims:
        return record.claims[ref]
    demand = estimable.get(running.uid)
    if demand is not None and ref in totals:
        return claim_on(demand, totals[ref], rules=rules).bytes
    return 0


def _capacities(
    config: Config,
    observed: ObservedState,
    estimable: Mapping[str, Demand],
    leaving: frozenset[str],
    vllm: Mapping[str, WorkerVllm],
) -> tuple[list[GpuCapacity], dict[GpuRef, dict[str, int]]]:
    totals = {g.ref: g.total_bytes for g in observed.gpus}
    rules = {ref: vllm[ref.worker].rules if ref.worker in vllm else UNKNOWN for ref in totals}
    held: dict[GpuRef, dict[str, int]] = {ref: {} for ref in totals}
    for running in observed.models:
        for ref in running.gpu_refs:
            if ref in held:
                held[ref][running.uid] = _attribution(
                    running, ref, observed, estimable, totals, rules=rules[ref]
                )
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
                rules=rules[gpu.ref],
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
            running = observed.model(s.uid)
            loading = running is not None and running.status in IN_PROGRESS
            out.append(Terminate(uid=s.uid, reason=why, managed=s.managed, loading=loading))
        else:
            notes.append(
                f"{s.uid}: not in the file, left running (policy.prune = {policy.prune!r})"
            )
    return out, notes


UTILIZATION_STEP = 0.001  # launch utilizations are multiples of this


def _launch_utilization(placement: Placement, resident: Mapping[GpuRef, float]) -> float | None:
    """The gpu_memory_utilization to send. vLLM versions with a global budget (0.6.4; V1 0.8.0-0.9.0)
    charge every other process's memory on the GPU to the new instance, so what already resides on
    the busiest of its GPUs is added to its own share (the memory it takes stays its claim)."""
    util = placement.utilization
    if util is None or not placement.claims:
        return util
    rules = placement.claims[0].rules
    if rules is None or rules.scope is not Scope.GLOBAL:
        return util
    share = max((resident.get(ref, 0.0) for ref in placement.gpus), default=0.0)
    extra = math.ceil(share / UTILIZATION_STEP - 1e-9) * UTILIZATION_STEP
    return round(min(1.0, util + extra), 3)


def launch_args(
    demand: Demand, placement: Placement, *, resident: Mapping[GpuRef, float] | None = None
) -> dict[str, Any]:
    """Arguments for Xinference's launch besides uid/name/type/placement: engine, format, memory.

    For vLLM versions that take it (0.10.2 and later) ``kv_cache_memory_bytes`` is the KV cache the
    plan computed, so the engine's cache is exactly that size whatever its own profile measures;
    ``gpu_memory_utilization`` is then only its start-up gate (``free >= utilization x total``),
    which the claim satisfies. ``resident`` is the share of each GPU other processes hold."""
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
        util = _launch_utilization(placement, resident or {})
        if util is not None:
            args["gpu_memory_utilization"] = util
        if placement.claims and placement.claims[0].max_model_len is not None:
            args["max_model_len"] = placement.claims[0].max_model_len
        exact = [c.kv_cache_bytes for c in placement.claims]
        if exact and all(b is not None for b in exact):
            args["kv_cache_memory_bytes"] = int(min(b for b in exact if b is not None))
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


def args_digest(launch_args: Mapping[str, Any]) -> str:
    """Identity of a launch's engine arguments (what a memory failure is tied to)."""
    text = json.dumps(dict(launch_args), sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _launch(
    demand: Demand,
    placement: Placement,
    *,
    reason: str,
    replaces: bool,
    resident: Mapping[GpuRef, float],
) -> Launch:
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
        launch_args=MappingProxyType(launch_args(demand, placement, resident=resident)),
        claims=MappingProxyType(
            {r: c.bytes for r, c in zip(placement.gpus, placement.claims, strict=True)}
        ),
        replaces=replaces,
        measured=demand.correction_source,
    )


def launch_request_problems(uid: str, spec: ModelSpec) -> list[tuple[str, str]]:
    """What would make this model's launch request unsendable, as (key path, message), found by
    building the request as a launch would (placement and memory figures aside: those are numbers
    this tool computes). Validation and the planner both ask; empty when it can be sent."""
    probe = Demand(
        uid=uid,
        spec=spec,
        architecture=None,
        weights_per_gpu=None,
        gpus_needed=spec.placement.gpus * spec.replicas if spec.on_gpu else 0,
    )
    placement = Placement(uid=uid, worker=spec.placement.worker, gpus=(), claims=())
    launch = _launch(probe, placement, reason="", replaces=False, resident={})
    return request_problems(launch, engine_args=spec.engine_args)


def _unsendable(wanted: dict[str, tuple[Demand, str, bool]]) -> list[Refusal]:
    """Launches whose request cannot be sent, taken out of ``wanted`` before anything is decided:
    a replacement among them keeps its running instance (nothing is terminated for it)."""
    out = []
    for uid in sorted(wanted):
        problems = launch_request_problems(uid, wanted[uid][0].spec)
        if problems:
            del wanted[uid]
            out.append(
                Refusal(
                    uid=uid,
                    reason=f"its launch request cannot be sent: {problems_text(problems)}",
                )
            )
    return out


def _wanted(
    statuses: tuple[ModelStatus, ...],
    demands: Mapping[str, Demand],
    observed: ObservedState,
    left_alone: dict[str, str],
) -> dict[str, tuple[Demand, str, bool]]:
    """Desired models to launch this pass: uid -> (demand, reason, replaces a running instance).

    Fills ``left_alone`` with the drift this pass leaves alone, and why (unmanaged, protected, backing off).
    """
    wanted: dict[str, tuple[Demand, str, bool]] = {}
    for s in statuses:
        if not s.desired or s.uid not in demands:
            continue
        spec = demands[s.uid].spec
        if spec.unmanaged and s.is_drift:
            left_alone[s.uid] = f"{s.state} but unmanaged; reported only"
        elif s.state in (State.MISSING, State.FAILED) and s.uid in observed.backing_off:
            left_alone[s.uid] = "launch failed; next retry after its backoff"
        elif s.state == State.MISSING:
            wanted[s.uid] = (demands[s.uid], "missing", False)
        elif s.state == State.FAILED:
            wanted[s.uid] = (demands[s.uid], f"retry after failure: {s.reasons[0]}", False)
        elif s.state == State.CHANGED and spec.protected:
            left_alone[s.uid] = f"changed but protected; not replaced ({'; '.join(s.reasons)})"
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
    left_alone: dict[str, str] = {}
    wanted = _wanted(statuses, demands, observed, left_alone)
    unsendable = _unsendable(wanted)

    # Replacements free their old memory only if the new spec is admitted and sent this pass. A
    # refused replacement, or one that must wait for a load on its GPU, leaves the old instance
    # running (it is not terminated, nor launched again later in this pass): admit again without
    # it until nothing more changes.
    held_back = _hold_back_replacements(wanted, observed)
    replacing = {uid for uid, (_, _, rep) in wanted.items() if rep}
    holding = {s.uid for s in statuses if s.state in (State.IN_SYNC, State.LAUNCHING)}
    estimable = {uid: d for uid, d in demands.items() if uid in holding}
    timed_out = [
        Terminate(
            uid=uid,
            reason="not READY by its deadline (launch_timeout_seconds)",
            managed=True,
            loading=True,
        )
        for uid in sorted(observed.timed_out)
        if observed.model(uid) is not None
    ]
    surplus_gone = frozenset(t.uid for t in (*terminations, *timed_out))
    vllm = worker_vllms(config.cluster, observed.workers)
    kept: list[Refusal] = list(unsendable)
    while True:
        caps, held = _capacities(config, observed, estimable, surplus_gone | replacing, vllm)
        admission = admit(
            [d for d, _, _ in wanted.values()], caps, observed.workers, search_budget=search_budget
        )
        refused_replacements = [r for r in admission.refused if r.uid in replacing]
        for refusal in refused_replacements:
            kept.append(refusal)
            replacing.discard(refusal.uid)
            del wanted[refusal.uid]
        if refused_replacements:
            continue
        placements = {p.uid: p for p in admission.placements}
        resident = {c.ref: c.resident / c.total for c in caps if c.total > 0}
        launches = [
            _launch(
                wanted[uid][0],
                placements[uid],
                reason=wanted[uid][1],
                replaces=wanted[uid][2],
                resident=resident,
            )
            for uid in sorted(placements, key=lambda u: precedence(wanted[u][0]))
        ]
        launches = _not_again(launches, observed, left_alone)
        launches, waiting = _one_load_per_gpu(launches, observed)
        # A replacement waiting for a load already in progress keeps its old instance (and its
        # memory): admit again without freeing it. One waiting only behind another launch of
        # this pass is terminated now and launched by a later pass, as admitted: holding it back
        # too could refuse the launch it waits for, and the two would wait on each other for ever.
        waiting_replacements = [w for w in waiting if w.uid in replacing and not w.behind_this_pass]
        for w in waiting_replacements:
            held_back.append(w)
            replacing.discard(w.uid)
            del wanted[w.uid]
        if not waiting_replacements:
            break
    notes += _version_notes(vllm, placements, wanted)
    refused = tuple(sorted((*admission.refused, *kept), key=lambda r: r.uid))
    notes += [f"{uid}: {why}" for uid, why in sorted(left_alone.items())]
    waiting = sorted((*waiting, *held_back), key=lambda w: w.uid)
    replace_terms = [
        Terminate(uid=uid, reason="replaced by the new spec", managed=uid in observed.managed)
        for uid in sorted(replacing)
    ]  # including those whose new instance waits behind another launch of this pass
    ordered: list[Action] = [
        *sorted((*terminations, *timed_out), key=lambda t: t.uid),
        *replace_terms,
        *launches,
    ]
    cap = config.policy.max_actions_per_pass
    budgets = gpu_budgets(
        observed=observed,
        demands=estimable,
        held=held,
        caps=caps,
        placements=placements,
        leaving=surplus_gone | replacing,
        reserve_bytes=round(config.policy.gpu_reserve_gib * GiB),
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
        waiting=tuple(waiting),
        left_alone=MappingProxyType(left_alone),
        cpu_models=_cpu_models(config, statuses, placements, observed),
        registrations=_registrations(ordered[:cap], demands, observed),
    )


def _registrations(
    actions: list[Action], demands: Mapping[str, Demand], observed: ObservedState
) -> tuple[Register, ...]:
    """The custom models this pass registers: those its launches need that the server lacks, or
    holds with a spec other than the file's (the reconciler re-checks at the moment it acts)."""
    needed: dict[tuple[str, str], list[str]] = {}
    specs: dict[tuple[str, str], ModelSpec] = {}
    for action in actions:
        if isinstance(action, Launch) and demands[action.uid].spec.custom is not None:
            wanted = demands[action.uid].spec
            key = (str(wanted.model_type), wanted.model_name)
            needed.setdefault(key, []).append(action.uid)
            specs.setdefault(key, wanted)
    out = []
    for key, uids in sorted(needed.items()):
        spec = specs[key]
        assert spec.custom is not None
        found = observed.registration(*key)
        if observed.registrations is None:
            reason = "unless the server has it with this spec (the observation lists none)"
        elif found is None:
            reason = "not registered on the server"
        elif found.digest is None:
            reason = "registered on the server, not by this tool with this spec: replaced"
        elif found.digest != registration_digest(spec):
            reason = "changed in the file: registered again"
        else:
            continue
        out.append(
            Register(
                model_name=spec.model_name,
                model_type=spec.model_type,
                model_uri=spec.custom.model_uri,
                reason=reason,
                uids=tuple(sorted(uids)),
            )
        )
    return tuple(out)


def _cpu_models(
    config: Config,
    statuses: tuple[ModelStatus, ...],
    placements: Mapping[str, Placement],
    observed: ObservedState,
) -> tuple[CpuModel, ...]:
    out = []
    for s in statuses:
        spec = config.models.get(s.uid)
        running = observed.model(s.uid)
        if spec is not None and not spec.on_gpu:
            placed = placements.get(s.uid)
            worker = placed.worker if placed else (running.worker if running else None)
            state = "planned" if placed is not None else str(s.state)
            name, engine = spec.model_name, spec.model_engine
        elif spec is None and running is not None and not running.gpu_indexes:
            worker, state = running.worker, "not in the file"
            name, engine = running.model_name, running.model_engine
        else:
            continue
        out.append(
            CpuModel(uid=s.uid, model_name=name, model_engine=engine, worker=worker, state=state)
        )
    return tuple(out)


def _version_notes(
    vllm: Mapping[str, WorkerVllm],
    placements: Mapping[str, Placement],
    wanted: Mapping[str, tuple[Demand, str, bool]],
) -> list[str]:
    """What the plan assumed about vLLM on the workers it launches vLLM models on."""
    workers = sorted(
        {
            p.worker
            for uid, p in placements.items()
            if p.worker is not None
            and uid in wanted
            and wanted[uid][0].spec.model_engine == Engine.VLLM
            and p.gpus
        }
    )
    notes = []
    for address in workers:
        known = vllm.get(address)
        if known is None:
            continue
        if known.note:
            notes.append(known.note)
        elif not known.known:
            notes.append(
                f"worker {address}: vLLM version unknown (no running vLLM model reports one, none "
                "declared): the most conservative memory rules apply; set cluster.vllm_version"
            )
    return notes


def loading_gpus(observed: ObservedState) -> dict[GpuRef, str]:
    """GPU -> the uid loading on it: every instance the server shows in progress, and every launch
    this tool sent that no pass has seen finish (it may not be listed with its GPUs yet). A load
    past its deadline is being terminated and no longer blocks its GPUs."""
    busy: dict[GpuRef, str] = {}
    for m in sorted(observed.models, key=lambda m: m.uid):
        if m.status in IN_PROGRESS and m.uid not in observed.timed_out:
            for ref in m.gpu_refs:
                busy.setdefault(ref, m.uid)
    for uid, record in sorted(observed.managed.items()):
        if record.loading and uid not in observed.timed_out:
            for ref in record.claims:
                busy.setdefault(ref, uid)
    return busy


def _not_again(
    launches: list[Launch], observed: ObservedState, left_alone: dict[str, str]
) -> list[Launch]:
    """Drop a launch whose model just failed on memory if the corrected plan would send the very
    arguments that failed: it waits for its backoff instead (a refusal or a different launch is
    what a correction must produce, never the same failure again)."""
    out = []
    for launch in launches:
        failed = observed.retry_if_changed.get(launch.uid)
        if failed is not None and args_digest(launch.launch_args) == failed:
            left_alone[launch.uid] = (
                "failed on memory; the corrected estimate gives the same arguments, so the next "
                "retry waits for its backoff"
            )
            continue
        out.append(launch)
    return out


def _hold_back_replacements(
    wanted: dict[str, tuple[Demand, str, bool]], observed: ObservedState
) -> list[Waiting]:
    """Replacements that cannot go this pass, taken out of ``wanted`` before admission so that
    their old instance keeps serving and keeps its memory: one whose GPUs have a load in progress,
    and all but the first (by precedence) of those that share a GPU."""
    busy = loading_gpus(observed)
    held: list[Waiting] = []
    replacing = sorted((d for d, _, rep in wanted.values() if rep), key=precedence)
    for demand in replacing:
        running = observed.model(demand.uid)
        refs = sorted(running.gpu_refs) if running is not None else []
        blocked = [ref for ref in refs if ref in busy]
        if blocked:
            ref = blocked[0]
            verb = "is loading" if busy[ref] not in wanted else "is replaced first"
            held.append(
                Waiting(uid=demand.uid, reason=f"waiting: {busy[ref]} {verb} on {ref}", launch=None)
            )
            del wanted[demand.uid]
            continue
        for ref in refs:
            busy[ref] = demand.uid
    return held


def _one_load_per_gpu(
    launches: list[Launch], observed: ObservedState
) -> tuple[list[Launch], list[Waiting]]:
    """Launches that may be sent now, and those that wait: at most one load runs on a GPU at a
    time, across passes and restarts (the loads in progress come from the observation and the
    state file, not from this pass's memory). Replacements go first: they restore a model the
    file describes, and the memory their old instance frees is what others were admitted into."""
    busy = loading_gpus(observed)
    sent: list[Launch] = []
    waiting: list[Waiting] = []
    for launch in sorted(launches, key=lambda a: not a.replaces):  # stable: precedence kept
        blocked = sorted(ref for ref in launch.claims if ref in busy)
        if blocked:
            ref = blocked[0]
            now_loading = busy[ref] not in {s.uid for s in sent}
            why = (
                f"waiting: {busy[ref]} is loading on {ref}"
                if now_loading
                else f"waiting: {busy[ref]} is launched first on {ref} (one load per GPU at a time)"
            )
            waiting.append(
                Waiting(uid=launch.uid, reason=why, launch=launch, behind_this_pass=not now_loading)
            )
            continue
        sent.append(launch)
        for ref in launch.claims:
            busy[ref] = launch.uid
    return sent, waiting
