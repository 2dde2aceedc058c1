"""The daemon: the composition root that wires the adapters, signals and the loop.

Level-triggered: a file event, the periodic resync and SIGHUP only *ask* for a pass; every pass
re-reads the whole file and the whole cluster. Requests that arrive during a pass coalesce into one
more pass; passes never overlap (one worker thread runs them). Signal handlers only set flags.

Exit codes: 0 clean shutdown; 78 (EX_CONFIG) the first config is invalid, so systemd does not
restart-loop (RestartPreventExitStatus=78); 1 another daemon holds the lock or start-up failed.
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
from daemon.adapters.http_status import Gauges, StatusServer
from daemon.adapters.revision import config_revision
from daemon.adapters.secrets import load_credentials
from daemon.adapters.state_file import StateStore
from daemon.adapters.systemd import InstanceLock, LockHeldError, Notifier
from daemon.adapters.watcher import ConfigWatcher
from daemon.adapters.xinference import XinferenceAdapter, redact_url
from daemon.core.desired import ClusterConfig
from daemon.core.drift import State
from daemon.core.notices import DRIFT_EVENTS, REFUSAL_EVENTS, Open, track
from daemon.core.planning import Plan
from daemon.errors import AuthError, ClusterError, ConfigError, ConfigSyntaxError, SecretError
from daemon.events import EventLogger
from daemon.reconciler import ClusterPort, Options, PassReport, reconcile_once
from daemon.reload import write_ack
from daemon.settings import Settings

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_CONFIG = 78
SHUTDOWN_GRACE_SECONDS = 10.0


@dataclass(frozen=True)
class Good:
    """The config in force: the last one that passed every check."""

    loaded: LoadedConfig
    revision: str


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
    ) -> None:
        self.config_path = config_path
        self.settings = settings
        self.cluster_factory = cluster_factory
        self.notifier = notifier or Notifier()
        self.clock = clock
        self.events = EventLogger()
        self.store = StateStore(settings.state_dir)
        self.gauges = Gauges()
        self.good: Good | None = None
        self.cluster: ClusterPort | None = None
        self._cluster_key: tuple[Any, ...] | None = None
        self._wake = threading.Event()
        self._pending: set[str] = set()
        self._pending_lock = threading.Lock()
        self._stop = False  # set by signal handlers: plain attribute writes only
        self._hup = False
        self._heartbeat = time.monotonic()
        self._drift: Mapping[str, Open] = {}
        self._refusals: Mapping[str, Open] = {}
        self._unreachable = False
        self._auth_error: str | None = None
        self._warned: set[str] = set()
        self._last_bad_hash: str | None = None
        self.passes = 0

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

    def beat(self) -> None:
        self._heartbeat = time.monotonic()

    # --- config --------------------------------------------------------------------------------

    def _load(self) -> Good:
        loaded = load_config(self.config_path)
        return Good(loaded=loaded, revision=config_revision(self.config_path, loaded.content_hash))

    def _refresh_config(self, events: EventLogger) -> None:
        """Re-read the file. A bad file is reported once and the last good config stays in force; a
        deleted or emptied file applies the last good policy's ``on_empty_config``."""
        assert self.good is not None
        try:
            fresh = self._load()
        except ConfigError as exc:
            emptied = self._is_missing_or_empty()
            if emptied and self.good.loaded.config.policy.on_empty_config == "prune":
                empty = self.good.loaded.config.model_copy(update={"models": {}})
                self.good = Good(
                    loaded=replace(self.good.loaded, config=empty, demands={}),
                    revision="empty-file",
                )
                events(
                    "config.emptied", path=str(self.config_path), action="prune (on_empty_config)"
                )
                return
            key = str(exc)
            if key != self._last_bad_hash:
                self._last_bad_hash = key
                events(
                    "config.invalid",
                    path=str(self.config_path),
                    problems=[str(p) for p in exc.problems],
                    keeping=self.good.revision,
                )
            return
        self._last_bad_hash = None
        if (
            fresh.loaded.content_hash != self.good.loaded.content_hash
            or fresh.revision != self.good.revision
        ):
            events(
                "config.loaded",
                path=str(self.config_path),
                revision=fresh.revision,
                models=len(fresh.loaded.config.models),
            )
        self.good = fresh

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
        assert self.good is not None
        pass_id = uuid.uuid4().hex[:8]
        if self.passes > 0:
            self._refresh_config(
                self.events.bind(pass_id=pass_id, config_revision=self.good.revision)
            )
        events = self.events.bind(pass_id=pass_id, config_revision=self.good.revision)
        self.events = self.events.bind(config_revision=self.good.revision)
        config = self.good.loaded.config
        start = self.clock()
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
                    clock=self.clock,
                    config_revision=self.good.revision,
                    events=events,
                    heartbeat=self.beat,
                    should_stop=lambda: self._stop,
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
        events(
            "pass.finished",
            reasons=sorted(reasons),
            seconds=round(self.clock() - start, 3),
            actions=len(report.results),
            converged=report.converged,
            mode=config.policy.mode,
        )
        self._finish(start, report)
        return report

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
        now = self.clock()
        drift = {
            s.uid: (str(s.state), {"uid": s.uid, "reasons": list(s.reasons), "managed": s.managed})
            for s in plan.statuses
            if s.is_drift
        }
        refused = {
            r.uid: ("refused", {"uid": r.uid, "reason": r.reason, "needed_bytes": r.needed_bytes})
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
        now = self.clock()
        self.passes += 1
        with self.gauges.lock:
            self.gauges.passes += 1
            self.gauges.pass_seconds = now - start
            self.gauges.last_pass_finished = now
            if report is not None:
                statuses = report.plan.statuses
                self.gauges.last_successful_pass = now
                self.gauges.models_desired = sum(s.desired for s in statuses)
                fixed = {r.uid for r in report.results if r.ok}  # brought in sync by this pass
                self.gauges.models_running = sum(
                    s.desired and (s.state == State.IN_SYNC or s.uid in fixed) for s in statuses
                )
                self.gauges.models_drifted = sum(
                    s.is_drift and s.uid not in fixed for s in statuses
                )
                self.gauges.models_refused = len(report.plan.refused)
                for r in report.results:
                    key = (r.kind, "ok" if r.ok else "failed")
                    self.gauges.actions[key] = self.gauges.actions.get(key, 0) + 1
        self.notifier.status(self.summary())

    def summary(self) -> str:
        g = self.gauges
        if g.last_successful_pass is None:
            return f"cluster unreachable at {self._endpoint()}; retrying"
        text = f"{g.models_running}/{g.models_desired} models in sync"
        if g.models_drifted:
            text += f", {g.models_drifted} drifted"
        if g.models_refused:
            text += f", {g.models_refused} refused"
        if self._unreachable:
            text += "; cluster unreachable"
        return text

    # --- the loop ------------------------------------------------------------------------------

    def _loop(self) -> None:
        first = True
        write_ack(self.settings.state_dir, pass_started=None, invalid=None)  # none acknowledged yet
        while not self._stop:
            self.beat()
            reasons = self._take_requests()
            if first or reasons:
                taken = time.monotonic()  # after the requests were taken: see daemon/reload.py
                hup = "sighup" in reasons
                if hup:
                    self.notifier.reloading()
                self._guarded_pass(reasons or {"start"})
                if first or hup:
                    self.notifier.ready(self.summary())
                if hup:  # `xinference-reconciler reload` (ExecReload=) waits for this
                    write_ack(
                        self.settings.state_dir, pass_started=taken, invalid=self._last_bad_hash
                    )
                first = False
                continue
            self._wake.wait(0.2)

    def _guarded_pass(self, reasons: set[str]) -> None:
        """A pass that fails in a way nobody foresaw is reported, and the loop goes on: the next
        pass re-reads everything. Ending the loop would leave the cluster unwatched."""
        try:
            self.run_pass(reasons)
        except Exception as exc:  # the loop must survive any single pass
            self.events(
                "pass.failed", error=f"{type(exc).__name__}: {exc}"[:500], reasons=sorted(reasons)
            )
            self._finish(self.clock(), None)

    def _watchdog(self) -> None:
        interval = self.notifier.watchdog_seconds
        if not interval:
            return
        while not self._stop:
            if time.monotonic() - self._heartbeat < interval:
                self.notifier.watchdog()  # only while the loop makes progress
            time.sleep(interval / 4)

    def run(self) -> int:
        lock = InstanceLock(self.settings.state_dir / "daemon.lock")
        try:
            lock.acquire()
        except (LockHeldError, OSError) as exc:
            self.events("daemon.start_failed", error=str(exc))
            return EXIT_FAILURE
        try:
            return self._run_locked()
        finally:
            lock.release()

    def _run_locked(self) -> int:
        try:
            self.good = self._load()
        except ConfigError as exc:
            self.events(
                "config.invalid",
                path=str(self.config_path),
                problems=[str(p) for p in exc.problems],
                keeping=None,
            )
            return EXIT_CONFIG
        self.events(
            "config.loaded",
            path=str(self.config_path),
            revision=self.good.revision,
            models=len(self.good.loaded.config.models),
        )
        # Lifecycle events carry the revision in force; events of a pass also carry its pass_id.
        self.events = self.events.bind(config_revision=self.good.revision)
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
        from apscheduler.schedulers.background import BackgroundScheduler

        scheduler = BackgroundScheduler(
            daemon=True, job_defaults={"coalesce": True, "max_instances": 1}
        )
        scheduler.add_job(
            self.request_pass,
            "interval",
            args=["resync"],
            seconds=self.settings.resync_interval_seconds,
            id="resync",
        )
        listener = None
        if self.settings.metrics_listen:
            stale = 3 * self.settings.resync_interval_seconds + 60
            listener = StatusServer(self.settings.metrics_listen, self.gauges, stale_after=stale)
            listener.start()
            self.events("http.listening", address=listener.address)
        worker = threading.Thread(target=self._loop, name="reconcile-loop", daemon=True)
        dog = threading.Thread(target=self._watchdog, name="watchdog", daemon=True)
        watcher.start()
        scheduler.start()
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
        scheduler.shutdown(wait=False)
        watcher.stop()
        if listener is not None:
            listener.stop()
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        clean = not worker.is_alive()
        self.events("daemon.stopped", clean=clean)
        # A loop that ended without being asked to is a failure systemd should restart.
        return EXIT_OK if clean and self._stop else EXIT_FAILURE

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
