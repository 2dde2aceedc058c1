"""The optional /healthz, /readyz and /metrics listener, over real loopback HTTP."""

from __future__ import annotations

import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest

from daemon.adapters.http_status import ListenError, Metrics, StatusServer, parse_listen

Probe = list[tuple[bool, str]]


@pytest.fixture
def server() -> Iterator[tuple[StatusServer, Probe, Probe]]:
    live: Probe = [(False, "no pass has finished yet")]
    ready: Probe = [(False, "1/2 models in sync")]
    srv = StatusServer(
        "127.0.0.1:0", Metrics(), liveness=lambda: live[0], readiness=lambda: ready[0]
    )
    srv.start()
    yield srv, live, ready
    srv.stop()


def get(srv: StatusServer, path: str) -> tuple[int, str]:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(f"http://{srv.address}{path}", timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, exc.read().decode()


def test_health_and_readiness_are_the_daemons_probes(
    server: tuple[StatusServer, Probe, Probe],
) -> None:
    srv, live, ready = server
    assert get(srv, "/healthz") == (503, "no pass has finished yet\n")
    live[0] = (True, "ok: last pass finished 0 s ago")
    assert get(srv, "/healthz") == (200, "ok: last pass finished 0 s ago\n")
    assert get(srv, "/readyz") == (503, "1/2 models in sync\n")
    ready[0] = (True, "ok: 2/2 models in sync")
    assert get(srv, "/readyz")[0] == 200


def test_metrics_are_prometheus_text_with_process_metrics(
    server: tuple[StatusServer, Probe, Probe],
) -> None:
    srv, _, _ = server
    m = srv.metrics
    m.models.labels(state="desired").set(4)
    m.models.labels(state="in_sync").set(3)
    m.actions.labels(kind="launch", outcome="ok").inc(2)
    m.pass_seconds.observe(0.2)
    code, body = get(srv, "/metrics")
    assert code == 200
    for line in (
        'xr_models{state="desired"} 4.0',
        'xr_models{state="in_sync"} 3.0',
        'xr_actions_total{kind="launch",outcome="ok"} 2.0',
        "# TYPE xr_pass_duration_seconds histogram",
        'xr_pass_duration_seconds_bucket{le="0.25"} 1.0',
        "xr_config_file_valid 1.0",
        "process_resident_memory_bytes",
    ):
        assert line in body
    assert get(srv, "/nope")[0] == 404


@pytest.mark.parametrize("bad", ["9464", "localhost", "127.0.0.1:http", "127.0.0.1:70000", ""])
def test_a_malformed_address_is_a_clear_error(bad: str) -> None:
    with pytest.raises(ListenError, match="expected HOST:PORT"):
        parse_listen(bad)


def test_a_busy_address_is_a_clear_error(server: tuple[StatusServer, Probe, Probe]) -> None:
    srv, _, _ = server
    with pytest.raises(ListenError, match="cannot listen there"):
        StatusServer(
            srv.address, Metrics(), liveness=lambda: (True, ""), readiness=lambda: (True, "")
        )
