"""The fault proxy itself, against a stdlib HTTP server: every mode, bursts, patterns, keep-alive."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import requests

from tests.harness.proxy import DROP, PASS, RESET, FaultProxy, delay, status


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, like uvicorn

    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        data = json.dumps({"path": self.path, "body": body.decode()}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = _answer  # noqa: N815

    def log_message(self, format: str, *args: object) -> None:
        del format, args


@pytest.fixture
def upstream() -> Iterator[int]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()
    thread.join(5)


@pytest.fixture
def session() -> Iterator[requests.Session]:
    s = requests.Session()
    s.trust_env = False
    yield s
    s.close()


def test_every_mode_and_bursts_with_a_keep_alive_session(
    upstream: int, session: requests.Session
) -> None:
    with FaultProxy(upstream) as proxy:
        url = proxy.url
        for i in range(5):  # one session, many requests: keep-alive never confuses the proxy
            r = session.post(f"{url}/v1/x{i}", json={"i": i}, timeout=5)
            assert r.status_code == 200
            assert r.json() == {"path": f"/v1/x{i}", "body": json.dumps({"i": i})}
        assert r.headers["Connection"].lower() == "close"

        proxy.set(status(503, "busy"), match=r"^GET /v1/models ", count=2)
        assert session.get(f"{url}/v1/models/instances", timeout=5).status_code == 200
        for _ in range(2):
            r = session.get(f"{url}/v1/models", timeout=5)
            assert (r.status_code, r.json()) == (503, {"detail": "busy"})
        assert session.get(f"{url}/v1/models", timeout=5).status_code == 200
        assert proxy.pending() == 0

        proxy.set(RESET)
        with pytest.raises(requests.ConnectionError):
            session.get(f"{url}/status", timeout=5)

        proxy.set(DROP)
        started = time.monotonic()
        with pytest.raises(requests.Timeout):
            session.get(f"{url}/status", timeout=0.5)
        assert time.monotonic() - started < 3

        proxy.set(delay(0.6))
        started = time.monotonic()
        assert session.get(f"{url}/status", timeout=5).status_code == 200
        assert time.monotonic() - started >= 0.6

        proxy.set(PASS)
        assert session.get(f"{url}/status", timeout=5).status_code == 200
        assert proxy.requests(r"^GET /v1/models ") == ["GET /v1/models HTTP/1.1"] * 3
        assert [a for _, a in proxy.log].count("status 503") == 2


def test_a_down_upstream_is_a_reset_and_stop_closes_held_connections(
    session: requests.Session,
) -> None:
    from tests.harness.server import free_port

    proxy = FaultProxy(free_port())
    try:
        with pytest.raises(requests.ConnectionError):
            session.get(f"{proxy.url}/status", timeout=5)
        proxy.set(DROP)
        result: list[BaseException] = []

        def call() -> None:
            try:
                session.get(f"{proxy.url}/status", timeout=30)
            except requests.RequestException as exc:
                result.append(exc)

        caller = threading.Thread(target=call)
        caller.start()
        time.sleep(0.5)
    finally:
        proxy.stop()
    caller.join(10)
    assert not caller.is_alive()
    assert result  # the held connection was closed by stop()
