"""The daemon: the composition root that wires the adapters, signals and the loop.

Level-triggered: a file event, SIGHUP, the periodic resync and the passes' own requeue requests
(a load in progress, a backoff that ends) only *ask* for a pass; every pass re-reads the whole
file and the whole cluster, and never waits for a model to load (daemon/reconciler.py). Requests
that arrive during a pass coalesce into one more pass; passes never overlap (one loop thread).
Signal handlers only set flags.

Time: every deadline of the loop (the next resync, a requeue, the watchdog, liveness) is on the
monotonic clock, so a wall-clock step neither silences resyncs nor fires them early, and a resync
that fell due while the process was stopped (SIGSTOP, a starved CPU) runs as soon as it runs again:
late, coalesced, never dropped. Only persisted times (launch sent_at, backoff) are wall-clock.

Exit codes (daemon/exit_codes.py): 0 clean shutdown; 78 any configuration error at start-up
(invalid file, settings or metrics address), which the unit does not restart; 1 another daemon
holds the lock or the cluster's lease, or start-up failed otherwise.
"""

from __future__ import annotations

import signal
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from types import FrameType
from typing import Any

from daemon.adapters.config_file import LoadedConfig, load_config, read_config_bytes
from daemon.adapters.http_status import ListenError, Metrics, StatusServer
from daemon.adapters.lease import ClusterLease, LeaseError
from daemon.adapters.reload_ack import write_ack
from daemon.adapters.secrets import load_credentials
from daemon.adapters.state_file import StateStore
from daemon.adapters.systemd import InstanceLock, LockHeldError, Notifier
from daemon.adapters.watcher import ConfigWatcher
from daemon.adapters.xinference import XinferenceAdapter, redact_url
from daemon.core.convergence import Convergence
from daemon.core.desired import ClusterConfig
from daemon.core.drift import State
from daemon.core.notices import DRIFT_EVENTS, REFUSAL_EVENTS, Open, track
from daemon.core.planning import Plan
from daemon.errors import AuthError, ClusterError, ConfigError, ConfigSyntaxError, SecretError
from daemon.events import EventLogger
from daemon.exit_codes import Exit
from daemon.ports import ClusterPort
from daemon.reconciler import Options, PassReport, reconcile_once
from daemon.settings import Settings

SHUTDOWN_GRACE_SECONDS = 10.0
IDLE_WAKE_SECONDS = 0.5  # the loop looks at its deadlines at least this often
# A pass that has not finished this long after it was due means the loop is stuck: /healthz fails
# and the watchdog stops being fed (systemd then restarts the daemon).
LIVENESS_GRACE_SECONDS = 60.0


@dataclass(frozen=True)
class Good:
    """The config in force: the last one that passed every check."""

    loaded: LoadedConfig

    @property
    def revision(self) -> str:
        return self.loaded.revision


ClusterFactory = Callable[[ClusterConfig, str | None], ClusterPort]


def real_cluster(cluster: ClusterConfig, endpoint_override: str | None) -> ClusterPort:
    return XinferenceAdapter(
        endpoint=endpoint_override or cluster.endpoint,
        credentials=load_credentials(cluster.auth),
        timeout_seconds=cluster.timeout_seconds,
        verify_tls=cluster.verify_tls,
        ca_bundle=cluster.ca_bundle,
    )


class Daemon:
    def __init__(
        self,
        *,
        config_path: Path,
        settings: Settings,
        cluster_factory: ClusterFactory = real_cluster,
        notifier: Notifier | None = None,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config_path = config_path
        self.settings = settings
        self.cluster_factory = cluster_factory
        self.notifier = notifier or Notifier()
        self.clock = clock  # wall clock: persisted times only
        self.monotonic = monotonic  # every deadline and duration of the loop
        self.events = EventLogger()
        self.store = StateStore(settings.state_dir)
        self.lease = ClusterLease(
            state_dir=settings.state_dir,
            ttl_seconds=3 * settings.resync_interval_seconds + 60,
            monotonic=monotonic,
        )
        self._lease_note: str | None = None  # why we may not act (another reconciler leads)
        self._lease_unsupported: str | None = None
        self._lease_announced = False
        self.metrics = Metrics()
        self.good: Good | None = None
        self.cluster: ClusterPort | None = None
        self._cluster_key: tuple[Any, ...] | None = None
        self._wake = threading.Event()
        self._pending: set[str] = set()
        self._pending_lock = threading.Lock()
        self._stop = False  # set by signal handlers: plain attribute writes only
        self._hup = False
        self._heartbeat = monotonic()
        self._drift: Mapping[str, Open] = {}
        self._refusals: Mapping[str, Open] = {}
        self._unreachable = False
        self._auth_error: str | None = None
        self._warned: set[str] = set()
        self._bad_file: str | None = None  # the problems of the file on disk while it is invalid
        self._sent: dict[str, float] = {}  # uid -> monotonic time its launch was sent
        self._next_resync = monotonic() + settings.resync_interval_seconds
        self._requeue_at: float | None = None
        self._pass_started: float | None = None
        self.passes = 0
        self.ready_sent = False
        self.convergence: Convergence | None = None
        self.counts: dict[str, int] = {}
        self.last_pass_finished: float | None = None  # monotonic
        self.last_successful_pass: float | None = None  # monotonic

    # --- requests ------------------------------------------------------------------------------

    def request_pass(self, reason: str) -> None:
        """Ask for a pass (thread-safe). Carries no data: the pass reads everything itself."""
        with self._pending_lock:
            self._pending.add(reason)
        self._wake.set()

    def _take_requests(self) -> set[str]:
        with self._pending_lock:
            reasons, self._pending = self._pending, set()
            self._wake.clear()
        if self._hup:
            self._hup = False
            reasons.add("sighup")
        now = self.monotonic()
        if now >= self._next_resync:
            reasons.add("resync")
        if self._requeue_at is not None and now >= self._requeue_at:
            reasons.add("requeue")
        return reasons

    def stop(self) -> None:
        self._stop = True
        self._wake.set()

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        del frame
        if signum == signal.SIGHUP:
            self._hup = True
        else:
            self._stop = True
        self._wake.set()

    def beat(self) -> None:
        self._heartbeat = self.monotonic()

    # --- config --------------------------------------------------------------------------------

    def load(self) -> Good:
        """Read the config file into force (raises ConfigError; start-up turns that into 78)."""
        self.good = Good(loaded=load_config(self.config_path))
        return self.good

    def _refresh_config(self, events: EventLogger) -> None:
        """Re-read the file. A bad file is reported once and the last good config stays in force
        (a metric and /readyz say so while it lasts; ``config.valid`` when it is fixed); a deleted
        or emptied file applies the last good policy's ``on_empty_config``."""
        assert self.good is not None
        try:
            fresh = Good(loaded=load_config(self.config_path))
        except ConfigError as exc:
            emptied = self._is_missing_or_empty()
            if emptied and self.good.loaded.config.policy.on_empty_config == "prune":
                empty = self.good.loaded.config.model_copy(update={"models": {}})
                self.good = Good(
                    loaded=replace(self.good.loaded, config=empty, demands={}, revision="empty")
                )
                self._file_is_valid(events, revision="empty")
                events(
                    "config.emptied", path=str(self.config_path), action="prune (on_empty_config)"
                )
                return
            problems = [str(p) for p in exc.problems]
            if "\n".join(problems) != self._bad_file:
                self._bad_file = "\n".join(problems)
                self.metrics.config_valid.set(0)
                events(
                    "config.invalid",
                    path=str(self.config_path),
                    problems=problems,
                    keeping=self.good.revision,
                )
            return
        self._file_is_valid(events, revision=fresh.revision)
        if fresh.revision != self.good.revision:
            events(
                "config.loaded",
                path=str(self.config_path),
                revision=fresh.revision,
                models=len(fresh.loaded.config.models),
            )
        self.good = fresh

    def _file_is_valid(self, events: EventLogger, *, revision: str) -> None:
        if self._bad_file is None:
            return
        self._bad_file = None
        self.metrics.config_valid.set(1)
        events("config.valid", path=str(self.config_path), revision=revision)

    def _is_missing_or_empty(self) -> bool:
        try:
            return not read_config_bytes(self.config_path).strip()
        except ConfigSyntaxError:
            return not self.config_path.exists()

    def _ensure_cluster(self) -> ClusterPort:
        assert self.good is not None
        cluster = self.good.loaded.config.cluster
        key = (cluster.model_dump_json(), self.settings.endpoint)
        if self.cluster is None or key != self._cluster_key:
            self.cluster = self.cluster_factory(cluster, self.settings.endpoint)
            self._cluster_key = key
        return self.cluster

    # --- one pass ------------------------------------------------------------------------------

    def run_pass(self, reasons: set[str]) -> PassReport | None:
        self.beat()
        assert self.good is not None, "load() first"
        self._pass_started = self.monotonic()
        self._next_resync = self._pass_started + self.settings.resync_interval_seconds
        self._requeue_at = None
        pass_id = uuid.uuid4().hex[:8]
        if self.passes > 0:
            self._refresh_config(
                self.events.bind(pass_id=pass_id, config_revision=self.good.revision)
            )
        events = self.events.bind(pass_id=pass_id, config_revision=self.good.revision)
        self.events = self.events.bind(config_revision=self.good.revision)
        config = self.good.loaded.config
        start = self.monotonic()
        try:
            cluster = self._ensure_cluster()
            report = reconcile_once(
                config=config,
                demands=self.good.loaded.demands,
                cluster=cluster,
                store=self.store,
                opts=Options(
                    on_plan=lambda plan: self._observed(plan, events),
                    act=True,
                    authorize=lambda: self._lease(cluster, events),
                    clock=self.clock,
                    monotonic=self.monotonic,
                    sent=self._sent,
                    config_revision=self.good.revision,
                    events=events,
                    heartbeat=self.beat,
                ),
            )
        except (ClusterError, SecretError) as exc:
            self._cluster_failed(exc, events)
            self._finish(start, None)
            return None
        for warning in report.warnings:  # e.g. a corrupt state file set aside: once each
            if warning not in self._warned:
                self._warned.add(warning)
                events("state.warning", warning=warning)
        if report.requeue_after is not None:
            self._requeue_at = self.monotonic() + report.requeue_after
        convergence = report.convergence
        events(
            "pass.finished",
            reasons=sorted(reasons),
            seconds=round(self.monotonic() - start, 3),
            actions=len(report.results),
            converged=convergence.converged,
            pending=[f"{p.uid}: {p.what}: {p.reason}" for p in convergence.pending],
            loading=sorted(o.uid for o in report.settlement.loading),
            mode=config.policy.mode,
        )
        self._finish(start, report)
        return report

    def _lease(self, cluster: ClusterPort, events: EventLogger) -> str | None:
        """Why this daemon may not act (another reconciler holds the cluster's lease), or None.
        Asked by enforcing passes once the cluster was observed."""
        try:
            status = self.lease.ensure(cluster)
        except LeaseError as exc:  # a server that cannot hold it: act, unguarded, and say so
            if self._lease_unsupported != str(exc):
                self._lease_unsupported = str(exc)
                events("cluster.lease.unsupported", error=str(exc))
            return None
        if status.held:
            if self._lease_note is not None or not self._lease_announced:
                events("cluster.lease.acquired", reason=status.reason)
            self._lease_note, self._lease_announced = None, True
            return None
        if status.reason != self._lease_note:
            holder = status.holder.describe() if status.holder else "unknown"
            events("cluster.lease.held_elsewhere", holder=holder, reason=status.reason)
        self._lease_note = status.reason
        return status.reason

    def _endpoint(self) -> str:
        """The endpoint as events may show it (never with credentials in it)."""
        assert self.good is not None
        return redact_url(self.settings.endpoint or self.good.loaded.config.cluster.endpoint)

    def _cluster_failed(self, exc: Exception, events: EventLogger) -> None:
        if isinstance(exc, AuthError | SecretError):
            if str(exc) != self._auth_error:  # once per distinct failure, not every pass
                self._auth_error = str(exc)
                events("auth.failed", endpoint=self._endpoint(), error=str(exc))
            self.cluster = None  # credentials may have been fixed: build a new adapter next pass
        elif not self._unreachable:
            self._unreachable = True
            events("cluster.unreachable", endpoint=self._endpoint(), error=str(exc))

    def _observed(self, plan: Plan, events: EventLogger) -> None:
        """Called once the cluster was observed and planned, before acting: report what changed."""
        if self._unreachable or self._auth_error:
            self._unreachable, self._auth_error = False, None
            events("cluster.recovered", endpoint=self._endpoint())
        self._notices(plan, events)

    def _notices(self, plan: Plan, events: EventLogger) -> None:
        now = self.monotonic()
        drift = {
            s.uid: (str(s.state), {"uid": s.uid, "reasons": list(s.reasons), "managed": s.managed})
            for s in plan.statuses
            if s.is_drift
        }
        for s in plan.statuses:  # a drift being repaired is resolved once in sync, not at launch
            if s.state == State.LAUNCHING and s.uid in self._drift:
                still = self._drift[s.uid]
                drift[s.uid] = (still.kind, dict(still.fields))
        refused = {
            r.uid: ("refused", {"uid": r.uid, "reason": r.reason, **r.figures()})
            for r in plan.refused
        }
        reminder = self.settings.drift_reminder_seconds
        self._drift, notices = track(
            self._drift, drift, now=now, reminder_seconds=reminder, names=DRIFT_EVENTS
        )
        self._refusals, more = track(
            self._refusals, refused, now=now, reminder_seconds=reminder, names=REFUSAL_EVENTS
        )
        for notice in (*notices, *more):
            fields = {"uid": notice.key, **notice.fields}
            events(notice.event, **fields)

    def _finish(self, start: float, report: PassReport | None) -> None:
        now = self.monotonic()
        self.passes += 1
        self._pass_started = None
        m = self.metrics
        m.passes.inc()
        m.pass_seconds.observe(max(0.0, now - start))
        self.last_pass_finished = now
        if report is not None:
            self.last_successful_pass = now
            m.last_successful_pass.set(self.clock())
            self.convergence = report.convergence
            self.counts = _counts(report)
            for state, count in self.counts.items():
                m.models.labels(state=state).set(count)
            m.converged.set(1 if self.convergence.converged else 0)
            for r in report.results:
                m.actions.labels(kind=r.kind, outcome="ok" if r.ok else "failed").inc()
        self.notifier.status(self.summary())

    def summary(self) -> str:
        """One line for systemd's STATUS= and /readyz: in sync, loading, failing, refused."""
        if self.last_successful_pass is None:
            return f"cluster unreachable at {self._endpoint()}; retrying"
        c = self.counts
        text = f"{c['in_sync']}/{c['desired']} models in sync"
        for key in ("loading", "waiting", "failing", "refused", "drifted"):
            if c.get(key):
                text += f", {c[key]} {key}"
        if self._unreachable:
            text += "; cluster unreachable"
        if self._bad_file is not None:
            text += "; the config file on disk is invalid (the last good one is in force)"
        if self._lease_note is not None:
            text += "; observing only: " + self._lease_note
        return text

    def liveness(self, limit: float = LIVENESS_GRACE_SECONDS) -> tuple[bool, str]:
        """The loop turns and passes run when due (what /healthz answers and the watchdog feeds):
        a pass makes progress (its heartbeat is younger than ``limit``) and no resync is overdue
        by more than ``limit``."""
        now = self.monotonic()
        if self._pass_started is not None and now - self._heartbeat > limit:
            return False, f"a pass has made no progress for {now - self._heartbeat:.0f} s"
        overdue = now - self._next_resync
        if overdue > limit:
            return False, f"a resync is {overdue:.0f} s overdue"
        if self.last_pass_finished is None:
            return self._pass_started is not None, "the first pass is running"
        return True, f"ok: last pass finished {now - self.last_pass_finished:.0f} s ago"

    def readiness(self) -> tuple[bool, str]:
        """The cluster matches the file, and the file on disk is the config in force (/readyz)."""
        if self.convergence is None:
            return False, self.summary()
        ok = (
            self.convergence.converged
            and self._bad_file is None
            and not self._unreachable
            and self._lease_note is None
        )
        detail = self.summary()
        if not self.convergence.converged:
            detail += "; " + self.convergence.summary()
        return ok, ("ok: " if ok else "") + detail

    # --- the loop ------------------------------------------------------------------------------

    def _loop(self) -> None:
        first = True
        write_ack(self.settings.state_dir, pass_started=None, invalid=None)  # none acknowledged yet
        while not self._stop:
            self.beat()
            reasons = self._take_requests()
            if first:
                reasons = {"start"}
            if reasons:
                # CLOCK_MONOTONIC after the requests were taken (not the injectable clock: the
                # reload helper compares it with its own reading, daemon/cli/reload.py)
                taken = time.monotonic()
                hup = "sighup" in reasons
                if hup:
                    self.notifier.reloading()
                self._guarded_pass(reasons)
                if first or hup:
                    # The first pass sent its actions and returned (passes never wait for loads):
                    # the service is up. After SIGHUP: the new config is in force.
                    self.notifier.ready(self.summary())
                    self.ready_sent = True
                if hup:  # `xinference-reconciler reload` (ExecReload=) waits for this
                    write_ack(self.settings.state_dir, pass_started=taken, invalid=self._bad_file)
                first = False
                continue
            self._wake.wait(self._idle_seconds())

    def _idle_seconds(self) -> float:
        """How long the loop may sleep: until the next resync or requeue, at most IDLE_WAKE."""
        due = [self._next_resync]
        if self._requeue_at is not None:
            due.append(self._requeue_at)
        return max(0.01, min(IDLE_WAKE_SECONDS, min(due) - self.monotonic()))

    def _guarded_pass(self, reasons: set[str]) -> None:
        """A pass that fails in a way nobody foresaw is reported, and the loop goes on: the next
        pass re-reads everything. Ending the loop would leave the cluster unwatched."""
        start = self.monotonic()
        try:
            self.run_pass(reasons)
        except Exception as exc:  # the loop must survive any single pass
            self.events(
                "pass.failed", error=f"{type(exc).__name__}: {exc}"[:500], reasons=sorted(reasons)
            )
            self._finish(start, None)

    def _watchdog(self) -> None:
        interval = self.notifier.watchdog_seconds
        if not interval:
            return
        while not self._stop:
            if self.liveness(limit=interval)[0]:
                self.notifier.watchdog()  # only while the loop makes progress
            time.sleep(interval / 4)

    def run(self) -> int:
        lock = InstanceLock(self.settings.state_dir / "daemon.lock")
        try:
            lock.acquire()
        except (LockHeldError, OSError) as exc:
            self.events("daemon.start_failed", error=str(exc))
            return Exit.ERROR
        try:
            return self._run_locked()
        finally:
            lock.release()

    def _run_locked(self) -> int:
        try:
            good = self.load()
        except ConfigError as exc:
            self.events(
                "config.invalid",
                path=str(self.config_path),
                problems=[str(p) for p in exc.problems],
                keeping=None,
            )
            return Exit.CONFIG
        listener = None
        if self.settings.metrics_listen:
            try:
                listener = StatusServer(
                    self.settings.metrics_listen,
                    self.metrics,
                    liveness=self.liveness,
                    readiness=self.readiness,
                )
            except ListenError as exc:
                self.events("daemon.start_failed", error=str(exc))
                return Exit.CONFIG
        self.events(
            "config.loaded",
            path=str(self.config_path),
            revision=good.revision,
            models=len(good.loaded.config.models),
        )
        # Lifecycle events carry the revision in force; events of a pass also carry its pass_id.
        self.events = self.events.bind(config_revision=good.revision)
        for warning in self._secret_warnings():
            self.events("config.warning", warning=warning)
        previous = {}
        if threading.current_thread() is threading.main_thread():  # tests may run it in a thread
            previous = {
                s: signal.signal(s, self._on_signal)
                for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
            }
        watcher = ConfigWatcher(
            self.config_path,
            lambda: self.request_pass("file"),
            debounce_ms=int(self.settings.debounce_seconds * 1000),
        )
        if listener is not None:
            listener.start()
            self.events("http.listening", address=listener.address)
        worker = threading.Thread(target=self._loop, name="reconcile-loop", daemon=True)
        dog = threading.Thread(target=self._watchdog, name="watchdog", daemon=True)
        watcher.start()
        worker.start()
        dog.start()
        self.events(
            "daemon.started",
            config=str(self.config_path),
            state_dir=str(self.settings.state_dir),
            resync_seconds=self.settings.resync_interval_seconds,
        )
        while worker.is_alive() and not self._stop:
            worker.join(0.25)
            if self._hup:
                self._wake.set()
        self.notifier.stopping()
        self.events("daemon.stopping")
        self._wake.set()
        worker.join(SHUTDOWN_GRACE_SECONDS)
        if self.cluster is not None and not worker.is_alive():
            self.lease.release(self.cluster)  # a successor need not wait for it to expire
        watcher.stop()
        if listener is not None:
            listener.stop()
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        clean = not worker.is_alive()
        self.events("daemon.stopped", clean=clean)
        # A loop that ended without being asked to is a failure systemd should restart.
        return Exit.OK if clean and self._stop else Exit.ERROR

    def _secret_warnings(self) -> tuple[str, ...]:
        assert self.good is not None
        warnings: list[str] = []
        try:
            mode = self.config_path.stat().st_mode
        except OSError:
            return ()
        if mode & 0o004:
            warnings.append(f"{self.config_path} is readable by every user")
        auth = self.good.loaded.config.cluster.auth
        if auth.mode != "none":
            try:
                warnings += load_credentials(auth).warnings
            except SecretError as exc:
                warnings.append(str(exc))
        return tuple(warnings)


def _counts(report: PassReport) -> dict[str, int]:
    """Model counts by state for the metrics and STATUS= (from the plan the pass made)."""
    plan = report.plan
    pending = {p.uid: p.what for p in report.convergence.pending}
    desired = [s for s in plan.statuses if s.desired]
    return {
        "desired": len(desired),
        "in_sync": sum(s.state == State.IN_SYNC and s.uid not in pending for s in desired),
        "loading": sum(pending.get(s.uid) == "loading" for s in desired)
        + sum(r.kind in ("launch", "replace") and r.ok for r in report.results),
        "waiting": len(plan.waiting),
        "failing": sum(pending.get(s.uid) == "failed" for s in desired) + len(report.failed),
        "refused": len(plan.refused),
        "drifted": sum(s.is_drift for s in plan.statuses),
    }
