"""One reconcile pass: observe -> settle -> plan -> act -> report. The daemon loop only repeats it;
the CLI's ``apply`` repeats it until the cluster converges; tests call it directly.

Level-triggered, and a pass never waits for a model to load:

1. **Observe** the whole cluster and load the ownership state.
2. **Settle** every launch this tool sent that no pass has seen finish (core/lifecycle.py): READY,
   ERROR (recorded with a backoff), gone, or past its deadline (terminated by the plan).
3. **Plan** from that (core/planning.py): terminations first, then launches; at most one load per
   GPU at a time (a launch whose GPU has a load in progress *waits* for a later pass).
4. **Act**: terminations (each removes its autostart entry, then the model); custom models are
   registered once per pass, before any launch; launches are sent with ``wait_ready=false`` and
   recorded as *loading* (since T, deadline D, on GPUs G) the moment before they are sent, so a
   crash never loses track of one. Nothing is polled here.
5. **Report**: what was done, what is still loading, and when the next pass should look
   (``requeue_after``: while loads are in progress, or when a backoff ends).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Any

from daemon.core.convergence import Convergence, convergence
from daemon.core.corrections import (
    ENGINE_CORE_WRAPPER,
    Correction,
    corrected,
    latest_finding,
    learn,
    overrun,
    parse_engine_error,
)
from daemon.core.custom import registration_digest, registration_json
from daemon.core.demand import Demand, claim_on
from daemon.core.desired import Config
from daemon.core.lifecycle import Outcome, Settlement, settle
from daemon.core.observed import (
    READY,
    GpuRef,
    GpuSnapshot,
    ObservedState,
    Registration,
    RunningModel,
    Worker,
)
from daemon.core.ownership import LaunchRecord, OwnershipState
from daemon.core.planning import Launch, Plan, Terminate, args_digest, plan
from daemon.core.retry import FailureRecord, backing_off, record_failure, retry_if_changed
from daemon.errors import ClusterError, PermanentClusterError, ReconcilerError, StateError
from daemon.ports import ClusterPort, EventSink, StateStorePort

# How soon to look again while a load is in progress (or right after acting): the next pass
# settles it. Short, because a pass is cheap (3 HTTP calls) and a READY model should be seen soon.
POLL_SECONDS = 2.0


def _no_events(event: str, **fields: Any) -> None:
    del event, fields


@dataclass(frozen=True, kw_only=True)
class ActionResult:
    uid: str
    kind: str  # terminate | launch | replace | register
    ok: bool
    message: str
    seconds: float


@dataclass(frozen=True, kw_only=True)
class PassReport:
    plan: Plan
    observed: ObservedState
    settlement: Settlement
    learned: tuple[Learned, ...] = ()
    results: tuple[ActionResult, ...] = ()
    acted: bool = False
    aborted: str | None = None  # why acting was refused (apply: the cluster moved)
    warnings: tuple[str, ...] = ()
    requeue_after: float | None = None  # seconds until a pass should look again

    @property
    def failed(self) -> tuple[ActionResult, ...]:
        return tuple(r for r in self.results if not r.ok)

    @property
    def convergence(self) -> Convergence:
        """Whether the cluster matched the file when this pass observed it (the one definition
        plan, apply, status, pass.finished, /readyz and the metrics use)."""
        return convergence(self.plan)

    @property
    def converged(self) -> bool:
        return self.convergence.converged


@dataclass
class Options:
    act: bool = False
    config_revision: str = ""
    clock: Callable[[], float] = (
        time.time
    )  # wall clock: only for persisted times (backoff, sent_at)
    monotonic: Callable[[], float] = time.monotonic  # durations and deadlines within this process
    # uid -> monotonic reading when this process sent the launch (owned by the caller: the daemon
    # keeps one for its life, so deadlines survive wall-clock steps; after a restart the persisted
    # wall-clock sent_at is the fallback).
    sent: dict[str, float] = field(default_factory=dict)
    events: EventSink = field(default=_no_events)
    # Sees the plan before anything is acted on (the daemon reports drift from it).
    on_plan: Callable[[Plan], None] = lambda _plan: None
    # Last word before acting: a reason not to act (apply: the plan differs from the confirmed
    # one), or None to go ahead.
    approve: Callable[[Plan], str | None] = lambda _plan: None
    # Asked once the cluster was observed, in enforce mode: a reason this process may not act at
    # all (another reconciler holds the cluster's lease), or None. Such a pass changes nothing,
    # the state file included.
    authorize: Callable[[], str | None] = lambda: None
    poll_seconds: float = POLL_SECONDS
    # Called between actions, so a watchdog sees a long pass (many slow calls) make progress.
    heartbeat: Callable[[], None] = lambda: None


class _Ledger:
    """The ownership state of one pass; every change is saved at once (a crash loses nothing)."""

    def __init__(self, store: StateStorePort, state: OwnershipState, events: EventSink) -> None:
        self._store, self.state, self._events = store, state, events
        self.warnings: list[str] = []

    def update(self, change: Callable[[OwnershipState], OwnershipState]) -> None:
        self.state = change(self.state)
        self.save()

    def save(self) -> None:
        try:
            self._store.save(self.state)
        except StateError as exc:
            self.warnings.append(str(exc))
            self._events("state.write_failed", error=str(exc))


def _elapsed(state: OwnershipState, opts: Options) -> dict[str, float]:
    """Seconds since each loading launch was sent: monotonic when this process sent it."""
    mono, wall = opts.monotonic(), opts.clock()
    out = {}
    for uid, record in state.records.items():
        if not record.loading:
            continue
        if uid in opts.sent:
            out[uid] = mono - opts.sent[uid]
        elif record.sent_at is not None:
            out[uid] = max(0.0, wall - record.sent_at)
    return out


def _report_settled(outcomes: tuple[Outcome, ...], events: EventSink, now: float) -> None:
    for o in outcomes:
        if o.result == "ready":
            events("model.launch.succeeded", uid=o.uid, seconds=round(o.seconds, 2))
        elif o.failure is not None:
            _failed_event(events, o.failure, now, result=o.result)


def _failed_event(events: EventSink, failure: FailureRecord, now: float, *, result: str) -> None:
    events(
        "model.launch.failed",
        uid=failure.uid,
        error=failure.last_error,
        result=result,
        attempts=failure.attempts,
        retry_in_seconds=round(max(0.0, failure.next_retry_at - now), 1),
    )


def _terminate(
    action: Terminate, cluster: ClusterPort, ledger: _Ledger, opts: Options
) -> ActionResult:
    start = opts.monotonic()
    try:
        existed = cluster.terminate(action.uid, loading=action.loading)
    except ClusterError as exc:
        opts.events("model.terminate.failed", uid=action.uid, error=str(exc))
        return ActionResult(
            uid=action.uid,
            kind="terminate",
            ok=False,
            message=str(exc),
            seconds=opts.monotonic() - start,
        )
    ledger.update(lambda s: s.without_record(action.uid))
    opts.sent.pop(action.uid, None)
    opts.events("model.terminated", uid=action.uid, reason=action.reason, existed=existed)
    return ActionResult(
        uid=action.uid,
        kind="terminate",
        ok=True,
        message="terminated" if existed else "already gone",
        seconds=opts.monotonic() - start,
    )


def _register(
    demand: Demand, cluster: ClusterPort, ledger: _Ledger, opts: Options
) -> ActionResult | None:
    """Register (or re-register) one custom model unless the server already has this exact spec."""
    spec = demand.spec
    if spec.custom is None:
        return None
    start = opts.monotonic()
    digest = registration_digest(spec)
    try:
        existing = cluster.registration(spec.model_type, spec.model_name)
        if existing is not None and ledger.state.registrations.get(spec.model_name) == digest:
            return None
        if existing is not None:
            cluster.unregister(spec.model_type, spec.model_name)
        cluster.register(spec.model_type, registration_json(spec), persist=True)
    except ClusterError as exc:
        opts.events(
            "model.registration.failed",
            model_name=spec.model_name,
            model_type=spec.model_type,
            error=str(exc),
        )
        return ActionResult(
            uid=spec.model_name,
            kind="register",
            ok=False,
            message=str(exc),
            seconds=opts.monotonic() - start,
        )
    ledger.update(lambda s: s.with_registration(spec.model_name, digest))
    opts.events(
        "model.registered",
        model_name=spec.model_name,
        model_type=spec.model_type,
        replaced=existing is not None,
    )
    return ActionResult(
        uid=spec.model_name,
        kind="register",
        ok=True,
        message="registered",
        seconds=opts.monotonic() - start,
    )


def _send(
    launch: Launch,
    *,
    demand: Demand,
    timeout_seconds: float,
    cluster: ClusterPort,
    ledger: _Ledger,
    opts: Options,
) -> ActionResult:
    """Record the launch as ours and loading, then send it. Only a definite refusal (4xx) removes
    the record again: an answer lost in a timeout may still have started it."""
    kind = "replace" if launch.replaces else "launch"
    start = opts.monotonic()
    opts.events(
        "model.launch.started",
        uid=launch.uid,
        worker=launch.worker,
        gpu_indexes=list(launch.gpu_indexes),
        launch_args=dict(launch.launch_args),
    )
    record = LaunchRecord(
        uid=launch.uid,
        spec_hash=launch.spec_hash,
        config_revision=opts.config_revision,
        claims=launch.claims,
        launch_args=launch.launch_args,
        spec=demand.spec.launch_spec(),
        loading=True,
        sent_at=opts.clock(),
        timeout_seconds=timeout_seconds,
    )
    ledger.update(lambda s: s.with_record(record))
    opts.sent[launch.uid] = start
    try:
        cluster.launch(launch)
    except ClusterError as exc:
        if exc.status is not None or isinstance(exc, PermanentClusterError):
            # The server answered with an error (4xx, or a 5xx from its launch validation):
            # nothing was started; it is a failed launch, retried after its backoff.
            ledger.update(lambda s: s.without_record(launch.uid))
            opts.sent.pop(launch.uid, None)
            return _refused(launch, str(exc), ledger=ledger, opts=opts, kind=kind, start=start)
        # No answer (a timeout, a reset connection): it may be loading; later passes settle it.
        return ActionResult(
            uid=launch.uid,
            kind=kind,
            ok=True,
            message=f"sent, answer lost ({exc}); the next pass looks for it",
            seconds=opts.monotonic() - start,
        )
    return ActionResult(
        uid=launch.uid,
        kind=kind,
        ok=True,
        message="sent; loading",
        seconds=opts.monotonic() - start,
    )


def _refused(
    launch: Launch, message: str, *, ledger: _Ledger, opts: Options, kind: str, start: float
) -> ActionResult:
    now = opts.clock()
    previous = ledger.state.failures.get(launch.uid)
    failure = record_failure(
        previous, uid=launch.uid, spec_hash=launch.spec_hash, error=message, now=now
    )
    ledger.update(lambda s: s.with_failure(failure))
    _failed_event(opts.events, failure, now, result="refused")
    return ActionResult(
        uid=launch.uid, kind=kind, ok=False, message=message, seconds=opts.monotonic() - start
    )


def execute(
    p: Plan,
    *,
    config: Config,
    demands: Mapping[str, Demand],
    cluster: ClusterPort,
    ledger: _Ledger,
    opts: Options,
) -> list[ActionResult]:
    """Carry out one plan: terminations, then registrations (once per model name), then sends."""
    results = []
    for action in p.actions:
        if isinstance(action, Terminate):
            opts.heartbeat()
            results.append(_terminate(action, cluster, ledger, opts))
    failed_terminations = {r.uid for r in results if not r.ok}
    launches = [
        a
        for a in p.actions
        if isinstance(a, Launch) and not (a.replaces and a.uid in failed_terminations)
    ]
    registered: dict[str, ActionResult | None] = {}
    for launch in launches:
        name = demands[launch.uid].spec.model_name
        if name not in registered:
            registration = _register(demands[launch.uid], cluster, ledger, opts)
            registered[name] = registration
            if registration is not None:
                results.append(registration)
    timeout = config.policy.launch_timeout_seconds
    for launch in launches:
        opts.heartbeat()
        registration = registered[demands[launch.uid].spec.model_name]
        if registration is not None and not registration.ok:
            kind = "replace" if launch.replaces else "launch"
            why = (
                f"registering {demands[launch.uid].spec.model_name} failed: {registration.message}"
            )
            results.append(
                _refused(launch, why, ledger=ledger, opts=opts, kind=kind, start=opts.monotonic())
            )
            continue
        results.append(
            _send(
                launch,
                demand=demands[launch.uid],
                timeout_seconds=timeout,
                cluster=cluster,
                ledger=ledger,
                opts=opts,
            )
        )
    return results


def _requeue_after(
    settlement: Settlement,
    p: Plan,
    state: OwnershipState,
    *,
    acted: bool,
    poll_seconds: float,
    now: float,
) -> float | None:
    """Seconds until a pass should look again: soon while loads are in progress, a launch waits
    or something was just done; at the end of the first backoff otherwise; None: no need."""
    delays: list[float] = []
    if acted or settlement.loading or p.waiting or settlement.timed_out:
        delays.append(poll_seconds)
    wanted = set(p.placements) | {s.uid for s in p.statuses if s.desired}
    for uid, failure in state.failures.items():
        if uid in wanted and failure.next_retry_at > now:
            delays.append(failure.next_retry_at - now)
    return min(delays) if delays else None


def _registrations(
    cluster: ClusterPort, config: Config, state: OwnershipState
) -> tuple[Registration, ...]:
    """The file's custom models that the server has registered (one lookup per name), so the plan
    can show what this pass will register."""
    wanted = sorted({(s.model_type, s.model_name) for s in config.models.values() if s.custom})
    return tuple(
        Registration(model_type=kind, model_name=name, digest=state.registrations.get(name))
        for kind, name in wanted
        if cluster.registration(kind, name) is not None
    )


def observe(
    cluster: ClusterPort,
    state: OwnershipState,
    config: Config,
    *,
    now: float,
    demands: Mapping[str, Demand] | None = None,
    elapsed: Mapping[str, float] | None = None,
) -> tuple[ObservedState, Settlement, tuple[Learned, ...]]:
    """The cluster as the planner sees it: what the server shows, with this tool's records after
    settling the launches in progress (failures of models no longer in the file are dropped), and
    what the engine's memory failures and READY models' real memory taught (with ``demands``)."""
    workers, models = cluster.observe()
    settlement = settle(state, models, elapsed=elapsed or {}, now=now)
    settled = settlement.state.keeping_failures_of(config.models)
    learned: tuple[Learned, ...] = ()
    if demands is not None:
        settled, learned = _learn(
            settled,
            settlement,
            workers=workers,
            models=models,
            demands=demands,
            cluster=cluster,
            now=now,
        )
    hashes = {uid: spec.spec_hash() for uid, spec in config.models.items()}
    observed = ObservedState(
        workers=workers,
        models=models,
        managed=settled.records,
        backing_off=backing_off(settled.failures, hashes, now),
        timed_out=settlement.timed_out,
        retry_if_changed=MappingProxyType(retry_if_changed(settled.failures, hashes, now)),
        registrations=_registrations(cluster, config, settled),
    )
    return observed, replace(settlement, state=settled), learned


@dataclass(frozen=True, kw_only=True)
class Learned:
    """A correction this pass learned, with the claim before and after it (per GPU)."""

    uid: str
    correction: Correction
    before_bytes: int
    after_bytes: int | None  # None: the corrected model no longer fits any GPU of that size
    overrun: bool = False


def _gpus(workers: tuple[Worker, ...]) -> dict[GpuRef, GpuSnapshot]:
    return {g.ref: g for w in workers for g in w.gpus}


def _learn(
    state: OwnershipState,
    settlement: Settlement,
    *,
    workers: tuple[Worker, ...],
    models: tuple[RunningModel, ...],
    demands: Mapping[str, Demand],
    cluster: ClusterPort,
    now: float,
) -> tuple[OwnershipState, tuple[Learned, ...]]:
    gpus = _gpus(workers)
    current = corrected(demands, state.corrections)
    learned: list[Learned] = []
    for outcome in settlement.outcomes:
        record = state.records.get(outcome.uid)
        demand = current.get(outcome.uid)
        if outcome.result != "failed" or record is None or demand is None or not record.claims:
            continue
        message = outcome.error
        finding = parse_engine_error(message)
        if finding is None and message and ENGINE_CORE_WRAPPER in message:
            worker = next(iter(record.claims)).worker
            finding = latest_finding(cluster.engine_log(worker))  # V1: the cause is only logged
        if finding is None:
            continue
        ref, claim = max(record.claims.items(), key=lambda kv: kv[1])
        gpu = gpus.get(ref)
        total = gpu.total_bytes if gpu is not None else 0
        correction = learn(
            finding,
            demand=demand,
            launch_args=record.launch_args,
            gpu_total_bytes=total,
            claim_bytes=claim,
            now=now,
            gpu_name=gpu.name if gpu is not None else "",
            previous=state.corrections.get(demand.spec.memory_key()),
        )
        state = state.with_correction(correction)
        failure = state.failures.get(outcome.uid)
        if failure is not None:  # retry at once, but only with other arguments
            digest = args_digest(record.launch_args)
            state = state.with_failure(replace(failure, args_digest=digest))
        learned.append(
            _learned(
                outcome.uid, correction, demands=demands, state=state, before=claim, total=total
            )
        )
    for running in models:
        record = state.records.get(running.uid)
        demand = current.get(running.uid)
        if running.status != READY or record is None or record.loading or demand is None:
            continue
        for ref, held in sorted(running.gpu_memory.items()):
            claimed = record.claims.get(ref)
            if claimed is None:
                continue
            previous = state.corrections.get(demand.spec.memory_key())
            found = overrun(
                demand=demand,
                held_bytes=held,
                claim_bytes=claimed,
                now=now,
                gpu_name=gpus[ref].name if ref in gpus else "",
                previous=previous,
            )
            if found is not None and (previous is None or found.extra_bytes > previous.extra_bytes):
                state = state.with_correction(found)
                total = gpus[ref].total_bytes if ref in gpus else 0
                learned.append(
                    _learned(
                        running.uid,
                        found,
                        demands=demands,
                        state=state,
                        before=claimed,
                        total=total,
                        overrun=True,
                    )
                )
            break
    return state, tuple(learned)


def _learned(
    uid: str,
    correction: Correction,
    *,
    demands: Mapping[str, Demand],
    state: OwnershipState,
    before: int,
    total: int,
    overrun: bool = False,
) -> Learned:
    after_demand = corrected(demands, state.corrections)[uid]
    claim = claim_on(after_demand, total) if total > 0 else None
    after = None if claim is None or claim.impossible else claim.bytes
    return Learned(
        uid=uid, correction=correction, before_bytes=before, after_bytes=after, overrun=overrun
    )


def _report_learned(learned: tuple[Learned, ...], events: EventSink) -> None:
    # Fields spelled out per call: tests/unit/test_events_catalogue.py reads them from the source.
    for item in learned:
        c = item.correction
        if item.overrun:
            events(
                "memory.overrun",
                uid=item.uid,
                kind=c.kind,
                extra_bytes=c.extra_bytes,
                before_bytes=item.before_bytes,
                after_bytes=item.after_bytes,
                evidence=c.evidence,
            )
        events(
            "estimate.corrected",
            uid=item.uid,
            kind=c.kind,
            extra_bytes=c.extra_bytes,
            before_bytes=item.before_bytes,
            after_bytes=item.after_bytes,
            evidence=c.evidence,
        )


def reconcile_once(
    *,
    config: Config,
    demands: Mapping[str, Demand],
    cluster: ClusterPort,
    store: StateStorePort,
    opts: Options,
) -> PassReport:
    """Observe, settle, plan and (with ``opts.act`` in enforce mode) act. Raises ClusterError when
    the cluster cannot be observed; failures while acting are reported, not raised."""
    loaded = store.load()
    warnings = [loaded.problem] if loaded.problem else []
    now = opts.clock()
    observed, settlement, learned = observe(
        cluster, loaded, config, now=now, demands=demands, elapsed=_elapsed(loaded, opts)
    )
    state = settlement.state
    demands = corrected(demands, state.corrections)  # what the engine measured wins
    result = plan(config, demands, observed)
    acting = opts.act and config.policy.mode == "enforce"
    unauthorized = opts.authorize() if acting else None
    acting = acting and unauthorized is None
    ledger = _Ledger(store, state, opts.events)
    if acting:
        if state != loaded:
            ledger.save()
        _report_settled(settlement.outcomes, opts.events, now)
        _report_learned(learned, opts.events)
    # Drift and refusal notices are the caller's (on_plan): the daemon reports each once.
    opts.on_plan(result)
    aborted = opts.approve(result) if acting and result.actions else None
    results: list[ActionResult] = []
    if acting and result.actions and aborted is None:
        results = execute(
            result, config=config, demands=demands, cluster=cluster, ledger=ledger, opts=opts
        )
    acted = bool(results)
    return PassReport(
        plan=result,
        observed=observed,
        settlement=settlement,
        learned=learned,
        results=tuple(results),
        acted=acted,
        aborted=aborted,
        warnings=(*warnings, *ledger.warnings),
        requeue_after=_requeue_after(
            settlement, result, ledger.state, acted=acted, poll_seconds=opts.poll_seconds, now=now
        ),
    )


__all__ = [
    "ActionResult",
    "ClusterPort",
    "Options",
    "PassReport",
    "ReconcilerError",
    "reconcile_once",
]
