"""One reconcile pass: observe -> plan -> act -> report. The daemon loop only repeats it; tests call it.

Acting follows the plan's order: terminations first (each removes its autostart entry, then the
model), then launches. Launches whose GPUs overlap run one after another (two vLLM instances starting
together on one GPU corrupt each other's memory profile); launches on disjoint GPUs run in parallel.
Each launch is recorded as ours the moment the server accepts it, so a crash mid-launch never loses
track of it, then polled until READY, ERROR or its deadline. A failed launch is backed off
(capped exponential, reset by a spec change) and never blocks the others.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from daemon.core.custom import registration_digest, registration_json
from daemon.core.demand import Demand
from daemon.core.desired import Config
from daemon.core.drift import State
from daemon.core.observed import ObservedState
from daemon.core.ownership import LaunchRecord, OwnershipState
from daemon.core.planning import Launch, Plan, Terminate, plan
from daemon.core.retry import backing_off, record_failure
from daemon.errors import ClusterError, PermanentClusterError, ReconcilerError, StateError
from daemon.ports import ClusterPort, EventSink, StateStorePort

MAX_PARALLEL_LAUNCHES = 8
VANISHED_AFTER_POLLS = (
    5  # the server answers "unknown uid" this many polls in a row: the launch is gone
)


def _no_events(event: str, **fields: Any) -> None:
    del event, fields


@dataclass(frozen=True, kw_only=True)
class ActionResult:
    uid: str
    kind: str  # terminate | launch | replace
    ok: bool
    message: str
    seconds: float


@dataclass(frozen=True, kw_only=True)
class PassReport:
    plan: Plan
    observed: ObservedState
    results: tuple[ActionResult, ...] = ()
    acted: bool = False
    warnings: tuple[str, ...] = ()

    @property
    def failed(self) -> tuple[ActionResult, ...]:
        return tuple(r for r in self.results if not r.ok)

    @property
    def converged(self) -> bool:
        """The cluster matches the file as far as this tool may make it: nothing failed, refused or
        deferred, and every desired model is in sync or was brought in sync by this pass. Running
        models that the prune policy leaves alone do not count against it."""
        p = self.plan
        if self.failed or p.refused or p.deferred or (p.actions and not self.acted):
            return False
        fixed = {r.uid for r in self.results if r.ok}
        return all(s.state == State.IN_SYNC or s.uid in fixed for s in p.statuses if s.desired)


@dataclass
class Options:
    act: bool = False
    config_revision: str = ""
    poll_interval: float = 1.0
    clock: Callable[[], float] = time.time
    sleep: Callable[[float], None] = time.sleep
    events: EventSink = field(default=_no_events)
    max_parallel_launches: int = MAX_PARALLEL_LAUNCHES
    # Called while waiting on a launch, so a watchdog sees the loop make progress.
    heartbeat: Callable[[], None] = lambda: None
    # Shutdown: stop waiting for launches and leave them to the server.
    should_stop: Callable[[], bool] = lambda: False
    # Sees the plan before anything is acted on (the daemon reports drift from it).
    on_plan: Callable[[Plan], None] = lambda _plan: None


def observe(
    cluster: ClusterPort, state: OwnershipState, config: Config, now: float
) -> ObservedState:
    workers, models = cluster.observe()
    hashes = {uid: spec.spec_hash() for uid, spec in config.models.items()}
    return ObservedState(
        workers=workers,
        models=models,
        managed=state.records,
        backing_off=backing_off(state.failures, hashes, now),
    )


class _Ledger:
    """The ownership state shared by the launch threads of one pass; every change is saved."""

    def __init__(self, store: StateStorePort, state: OwnershipState, events: EventSink) -> None:
        self._store, self.state, self._events = store, state, events
        self._lock = threading.Lock()
        self.warnings: list[str] = []

    def update(self, change: Callable[[OwnershipState], OwnershipState]) -> None:
        with self._lock:
            self.state = change(self.state)
            try:
                self._store.save(self.state)
            except StateError as exc:
                self.warnings.append(str(exc))
                self._events("state.write_failed", error=str(exc))


def _chains(launches: Sequence[Launch]) -> list[list[Launch]]:
    """Group launches whose GPUs overlap (transitively); each group runs in order, groups in parallel."""
    groups: list[tuple[set[Any], list[Launch]]] = []
    for launch in launches:
        gpus = set(launch.claims)
        touching = [g for g in groups if gpus and g[0] & gpus]
        merged_gpus, merged = set(gpus), []
        for g in touching:
            merged_gpus |= g[0]
            merged += g[1]
            groups.remove(g)
        groups.append((merged_gpus, [*merged, launch]))
    order = {launch.uid: i for i, launch in enumerate(launches)}
    return [sorted(g[1], key=lambda x: order[x.uid]) for g in groups]


def _ensure_registered(cluster: ClusterPort, demand: Demand, ledger: _Ledger) -> None:
    spec = demand.spec
    if spec.custom is None:
        return
    digest = registration_digest(spec)
    if ledger.state.registrations.get(spec.model_name) == digest and cluster.registration(
        spec.model_type, spec.model_name
    ):
        return
    if cluster.registration(spec.model_type, spec.model_name) is not None:
        cluster.unregister(spec.model_type, spec.model_name)
    cluster.register(spec.model_type, registration_json(spec), persist=True)
    ledger.update(lambda s: s.with_registration(spec.model_name, digest))


def _run_launch(
    launch: Launch,
    *,
    demand: Demand,
    cluster: ClusterPort,
    ledger: _Ledger,
    opts: Options,
    deadline_seconds: float,
) -> ActionResult:
    """Register (custom models), send, record as ours, then poll to READY, ERROR or the deadline.

    The launch is recorded as ours *before* it is sent: if the answer is lost (a timeout after the
    server accepted it) the model is still known to be ours. Only a definite refusal (4xx) removes
    the record again.
    """
    kind = "replace" if launch.replaces else "launch"
    start = opts.clock()
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
    )
    try:
        _ensure_registered(cluster, demand, ledger)
        ledger.update(lambda s: s.with_record(record))
        cluster.launch(launch)
    except PermanentClusterError as exc:  # refused: nothing was started
        ledger.update(lambda s: s.without_record(launch.uid))
        return _failed(launch, str(exc), ledger=ledger, opts=opts, start=start, kind=kind)
    except ClusterError as exc:  # no answer: it may run; keep the record, back off
        return _failed(launch, str(exc), ledger=ledger, opts=opts, start=start, kind=kind)
    unknown_polls = 0
    while True:
        opts.heartbeat()
        if opts.should_stop():
            seconds = opts.clock() - start
            opts.events("model.launch.abandoned", uid=launch.uid, seconds=round(seconds, 2))
            return ActionResult(
                uid=launch.uid,
                kind=kind,
                ok=True,
                seconds=seconds,
                message="sent; left to the server (shutting down), the next run picks it up",
            )
        error: str | None = None
        try:
            info = cluster.instance_state(launch.uid)
        except ClusterError as exc:  # a hiccup while polling is not a failed launch
            info, error = None, str(exc)
        if info is not None and info.status == "READY":
            ledger.update(lambda s: s.without_failure(launch.uid))
            seconds = opts.clock() - start
            opts.events("model.launch.succeeded", uid=launch.uid, seconds=round(seconds, 2))
            return ActionResult(
                uid=launch.uid, kind=kind, ok=True, message="READY", seconds=seconds
            )
        if info is not None and info.status == "ERROR":
            message = info.error_message or "launch failed"
            return _failed(launch, message, ledger=ledger, opts=opts, start=start, kind=kind)
        unknown_polls = unknown_polls + 1 if info is None and error is None else 0
        if unknown_polls >= VANISHED_AFTER_POLLS:
            why = "the server no longer knows this launch (restarted, or its worker left)"
            return _failed(launch, why, ledger=ledger, opts=opts, start=start, kind=kind)
        if opts.clock() - start > deadline_seconds:
            why = f"not READY after {deadline_seconds:g} s" + (
                f" (last error: {error})" if error else ""
            )
            return _failed(launch, why, ledger=ledger, opts=opts, start=start, kind=kind)
        opts.sleep(opts.poll_interval)


def _failed(
    launch: Launch, message: str, *, ledger: _Ledger, opts: Options, start: float, kind: str
) -> ActionResult:
    now = opts.clock()
    previous = ledger.state.failures.get(launch.uid)
    failure = record_failure(
        previous, uid=launch.uid, spec_hash=launch.spec_hash, error=message, now=now
    )
    ledger.update(lambda s: s.with_failure(failure))
    opts.events(
        "model.launch.failed",
        uid=launch.uid,
        error=message,
        attempts=failure.attempts,
        retry_in_seconds=round(failure.next_retry_at - now, 1),
    )
    return ActionResult(uid=launch.uid, kind=kind, ok=False, message=message, seconds=now - start)


def _run_terminate(
    action: Terminate, cluster: ClusterPort, ledger: _Ledger, opts: Options
) -> ActionResult:
    start = opts.clock()
    try:
        existed = cluster.terminate(action.uid)
    except ClusterError as exc:
        opts.events("model.terminate.failed", uid=action.uid, error=str(exc))
        return ActionResult(
            uid=action.uid,
            kind="terminate",
            ok=False,
            message=str(exc),
            seconds=opts.clock() - start,
        )
    ledger.update(lambda s: s.without_record(action.uid))
    opts.events("model.terminated", uid=action.uid, reason=action.reason, existed=existed)
    return ActionResult(
        uid=action.uid,
        kind="terminate",
        ok=True,
        message="terminated" if existed else "already gone",
        seconds=opts.clock() - start,
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
    results: list[ActionResult] = []
    for action in p.actions:
        if isinstance(action, Terminate):
            results.append(_run_terminate(action, cluster, ledger, opts))
    failed_terminations = {r.uid for r in results if not r.ok}
    launches = [
        a
        for a in p.actions
        if isinstance(a, Launch) and not (a.replaces and a.uid in failed_terminations)
    ]
    deadline = config.policy.launch_timeout_seconds

    def run_chain(chain: list[Launch]) -> list[ActionResult]:
        return [
            _run_launch(
                a,
                demand=demands[a.uid],
                cluster=cluster,
                ledger=ledger,
                opts=opts,
                deadline_seconds=deadline,
            )
            for a in chain
        ]

    chains = _chains(launches)
    if len(chains) <= 1 or opts.max_parallel_launches <= 1:
        for chain in chains:
            results += run_chain(chain)
    else:
        with ThreadPoolExecutor(max_workers=min(opts.max_parallel_launches, len(chains))) as pool:
            for chain_results in pool.map(run_chain, chains):
                results += chain_results
    return results


def reconcile_once(
    *,
    config: Config,
    demands: Mapping[str, Demand],
    cluster: ClusterPort,
    store: StateStorePort,
    opts: Options,
) -> PassReport:
    """Observe, plan and (with ``opts.act`` in enforce mode) act. Raises ClusterError when the cluster
    cannot be observed; failures while acting are reported, not raised."""
    state = store.load()
    warnings = [state.problem] if state.problem else []
    observed = observe(cluster, state, config, opts.clock())
    # Drift and refusal notices are the caller's (on_plan): the daemon reports each once.
    result = plan(config, demands, observed)
    opts.on_plan(result)
    if not opts.act or config.policy.mode != "enforce" or not result.actions:
        return PassReport(plan=result, observed=observed, warnings=tuple(warnings))
    ledger = _Ledger(store, state, opts.events)
    results = execute(
        result, config=config, demands=demands, cluster=cluster, ledger=ledger, opts=opts
    )
    warnings += ledger.warnings
    return PassReport(
        plan=result, observed=observed, results=tuple(results), acted=True, warnings=tuple(warnings)
    )


__all__ = [
    "ActionResult",
    "ClusterPort",
    "Options",
    "PassReport",
    "ReconcilerError",
    "reconcile_once",
]
