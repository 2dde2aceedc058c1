"""The optional /healthz and /metrics listener, over real loopback HTTP."""

from __future__ import annotations

import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest

from daemon.adapters.http_status import Gauges, StatusServer


@pytest.fixture
def server() -> Iterator[tuple[StatusServer, list[float]]]:
    now = [1000.0]
    srv = StatusServer("127.0.0.1:0", Gauges(), stale_after=90, clock=lambda: now[0])
    srv.start()
    yield srv, now
    srv.stop()


def get(srv: StatusServer, path: str) -> tuple[int, str]:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(f"http://{srv.address}{path}", timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, exc.read().decode()


def test_health_follows_the_last_finished_pass(server: tuple[StatusServer, list[float]]) -> None:
    srv, now = server
    assert get(srv, "/healthz")[0] == 503
    with srv.gauges.lock:
        srv.gauges.last_pass_finished = now[0]
    assert get(srv, "/healthz") == (200, "ok: last pass finished 0 s ago\n")
    now[0] += 91
    code, body = get(srv, "/healthz")
    assert code == 503
    assert "91 s ago" in body


def test_metrics_are_prometheus_text(server: tuple[StatusServer, list[float]]) -> None:
    srv, _ = server
    with srv.gauges.lock:
        srv.gauges.models_desired, srv.gauges.models_running, srv.gauges.models_refused = 4, 3, 1
        srv.gauges.actions[("launch", "ok")] = 2
    code, body = get(srv, "/metrics")
    assert code == 200
    for line in (
        "xr_models_desired 4",
        "xr_models_running 3",
        "xr_models_refused 1",
        'xr_actions_total{kind="launch",outcome="ok"} 2',
        "# TYPE xr_pass_duration_seconds gauge",
    ):
        assert line in body
    assert get(srv, "/nope")[0] == 404
