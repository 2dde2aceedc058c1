"""An optional HTTP listener (loopback advised): ``/healthz`` (liveness), ``/readyz`` (readiness) and
Prometheus ``/metrics``.

The exposition is ``prometheus_client``'s (label escaping, histograms, and the process and platform
collectors come with it). The daemon owns a :class:`Metrics` and updates it after every pass; the
listener only renders it and asks the daemon's two probes, which answer ``(ok, why)``:

- liveness: the reconcile loop turns and passes run when due (else systemd's watchdog and any
  orchestrator should restart the daemon);
- readiness: the cluster matches the file, or why not (loading, failing, refused, file invalid...).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)

from daemon.core import addresses
from daemon.errors import ReconcilerError

Probe = Callable[[], tuple[bool, str]]
PASS_SECONDS_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)


class ListenError(ReconcilerError):
    """The metrics address is malformed or cannot be bound (in use, not a local address)."""


class Metrics:
    """Every metric the daemon exposes, in a registry of its own (tests create as many as they like)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        ProcessCollector(registry=r)
        PlatformCollector(registry=r)
        self.models = Gauge(
            "xr_models",
            "Models by state: desired, in_sync, loading, failing, refused, waiting, drifted.",
            ["state"],
            registry=r,
        )
        self.converged = Gauge(
            "xr_converged", "1 when the cluster matches the file (the readiness probe).", registry=r
        )
        self.config_valid = Gauge(
            "xr_config_file_valid",
            "1 when the file on disk is the config in force; 0 while it is invalid.",
            registry=r,
        )
        self.passes = Counter("xr_passes", "Reconcile passes run.", registry=r)
        self.pass_seconds = Histogram(
            "xr_pass_duration_seconds",
            "Duration of reconcile passes.",
            buckets=PASS_SECONDS_BUCKETS,
            registry=r,
        )
        self.last_successful_pass = Gauge(
            "xr_last_successful_pass_timestamp_seconds",
            "When a pass last observed the cluster (unix time).",
            registry=r,
        )
        self.actions = Counter(
            "xr_actions", "Launches and terminations by outcome.", ["kind", "outcome"], registry=r
        )
        self.corrections = Counter(
            "xr_estimate_corrections",
            "Memory estimates corrected from what the engine reported.",
            registry=r,
        )
        self.config_valid.set(1)

    def render(self) -> bytes:
        return generate_latest(self.registry)


def parse_listen(listen: str) -> tuple[str, int]:
    """``host:port`` (``[::1]:port`` for IPv6) -> (host, port), or ListenError saying what is wrong
    (the rule is daemon/core/addresses.py's, which the settings check at start-up too)."""
    try:
        return addresses.parse_listen(listen)
    except ValueError as exc:
        raise ListenError(str(exc)) from None


class StatusServer:
    """``host:port`` -> a daemon thread serving /healthz, /readyz and /metrics."""

    def __init__(self, listen: str, metrics: Metrics, *, liveness: Probe, readiness: Probe):
        host, port = parse_listen(listen)
        self.metrics = metrics
        outer = self
        probes = {"/healthz": liveness, "/readyz": readiness}

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # the name http.server dispatches to
                path = self.path.split("?", 1)[0]
                if path == "/metrics":
                    body, code, kind = outer.metrics.render(), 200, CONTENT_TYPE_LATEST
                elif path in probes:
                    ok, why = probes[path]()
                    body, code, kind = why.encode() + b"\n", 200 if ok else 503, "text/plain"
                else:
                    body, code, kind = b"not found\n", 404, "text/plain"
                self.send_response(code)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:  # base signature
                del format, args  # requests are not worth an event each

        try:
            self._server = ThreadingHTTPServer((host, port), Handler)
        except OSError as exc:
            raise ListenError(
                f"metrics address {listen!r}: cannot listen there ({exc.strerror or exc})"
            ) from None
        self._server.daemon_threads = True
        bound_host, bound_port = self._server.server_address[:2]
        self.address = f"{bound_host!s}:{bound_port}"
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="status-http", daemon=True
        )

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
