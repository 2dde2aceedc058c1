"""An optional HTTP listener (loopback by default) with ``/healthz`` and Prometheus ``/metrics``.

Healthy means the last pass finished recently (within ``stale_after`` seconds); the daemon updates a
:class:`Gauges` value after every pass and the listener only reads it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class Gauges:
    """What /metrics exposes. Mutated by the daemon loop under ``lock``; read by the listener."""

    models_desired: int = 0
    models_running: int = 0
    models_drifted: int = 0
    models_refused: int = 0
    pass_seconds: float = 0.0
    last_pass_finished: float | None = None  # unix time
    last_successful_pass: float | None = None
    passes: int = 0
    actions: dict[tuple[str, str], int] = field(default_factory=dict)  # (kind, outcome) -> count
    lock: threading.Lock = field(default_factory=threading.Lock)

    def render(self) -> str:
        with self.lock:
            lines = [
                "# HELP xr_models_desired Models the config file lists.",
                "# TYPE xr_models_desired gauge",
                f"xr_models_desired {self.models_desired}",
                "# HELP xr_models_running Desired models running in sync.",
                "# TYPE xr_models_running gauge",
                f"xr_models_running {self.models_running}",
                "# HELP xr_models_drifted Models missing, changed, failed or unexpected.",
                "# TYPE xr_models_drifted gauge",
                f"xr_models_drifted {self.models_drifted}",
                "# HELP xr_models_refused Models refused by admission (do not fit).",
                "# TYPE xr_models_refused gauge",
                f"xr_models_refused {self.models_refused}",
                "# HELP xr_pass_duration_seconds Duration of the last reconcile pass.",
                "# TYPE xr_pass_duration_seconds gauge",
                f"xr_pass_duration_seconds {self.pass_seconds:.6f}",
                "# HELP xr_passes_total Reconcile passes run.",
                "# TYPE xr_passes_total counter",
                f"xr_passes_total {self.passes}",
                "# HELP xr_last_successful_pass_timestamp_seconds When a pass last observed the cluster.",
                "# TYPE xr_last_successful_pass_timestamp_seconds gauge",
                f"xr_last_successful_pass_timestamp_seconds {self.last_successful_pass or 0:.3f}",
                "# HELP xr_actions_total Launches and terminations by outcome.",
                "# TYPE xr_actions_total counter",
            ]
            for (kind, outcome), count in sorted(self.actions.items()):
                lines.append(f'xr_actions_total{{kind="{kind}",outcome="{outcome}"}} {count}')
        return "\n".join(lines) + "\n"


class StatusServer:
    """``host:port`` -> a daemon thread serving /healthz and /metrics."""

    def __init__(
        self,
        listen: str,
        gauges: Gauges,
        *,
        stale_after: float,
        clock: Callable[[], float] = time.time,
    ):
        host, _, port = listen.rpartition(":")
        self.gauges, self.stale_after, self.clock = gauges, stale_after, clock
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # the name http.server dispatches to
                if self.path == "/metrics":
                    body, code, kind = (
                        outer.gauges.render().encode(),
                        200,
                        "text/plain; version=0.0.4",
                    )
                elif self.path == "/healthz":
                    ok, why = outer.healthy()
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

        self._server = ThreadingHTTPServer((host or "127.0.0.1", int(port)), Handler)
        self._server.daemon_threads = True
        bound_host, bound_port = self._server.server_address[:2]
        self.address = f"{bound_host!s}:{bound_port}"
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="status-http", daemon=True
        )

    def healthy(self) -> tuple[bool, str]:
        with self.gauges.lock:
            last = self.gauges.last_pass_finished
        if last is None:
            return False, "no pass has finished yet"
        age = self.clock() - last
        if age > self.stale_after:
            return False, f"last pass finished {age:.0f} s ago (limit {self.stale_after:.0f} s)"
        return True, f"ok: last pass finished {age:.0f} s ago"

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
