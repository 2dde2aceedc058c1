"""A loopback TCP proxy that injects faults between the daemon and a real Xinference server.

Standard library only (threads + sockets). It listens on a free ``127.0.0.1`` port and forwards
each HTTP request to ``127.0.0.1:<target_port>``, unless a fault says otherwise::

    with FaultProxy(server_port) as proxy:          # pass-through
        proxy.set(RESET)                            # every request: connection reset (RST)
        proxy.set(DROP)                             # accept, read, never answer
        proxy.set(delay(5))                         # sleep 5 s, then forward
        proxy.set(status(503), match=r"^GET /v1/models ", count=3)  # a burst of three 503s
        proxy.set(PASS)                             # back to pass-through (clears the bursts)

``set`` without ``match``/``count`` replaces the default fault and clears pending bursts; with
either, it queues a rule that applies to the matching requests (``match`` is a regular expression
searched in the request line, e.g. ``GET /v1/models/instances?model_uid=x HTTP/1.1``) for the next
``count`` of them (all of them when ``count`` is None). Rules are tried in the order they were set;
the first one that matches and has requests left applies, else the default.

Keep-alive: every request is forwarded on a fresh upstream connection with ``Connection: close``,
and every answer goes back with ``Connection: close``, after which the client connection is closed.
So each client connection carries exactly one request and a fault decided for one request can
never leak into the next; ``requests`` sees the ``close`` and never reuses the connection.

``log`` records ``(request line, action)`` for every request seen (thread-safe), so a test can
assert what reached the server, e.g. that the adapter logged in again after a 401.
"""

from __future__ import annotations

import contextlib
import json
import re
import select
import socket
import struct
import threading
import time
from dataclasses import dataclass

HOST = "127.0.0.1"
MAX_HEAD_BYTES = 64 * 1024
POLL_SECONDS = 0.2

REASONS = {
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    429: "Too Many Requests",
    500: "Internal Server Error",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Gateway Timeout",
}


@dataclass(frozen=True)
class Fault:
    """What to do with a request: ``pass``, ``delay``, ``drop``, ``reset`` or ``status``."""

    kind: str
    seconds: float = 0.0
    code: int = 503
    detail: str = "injected by the fault proxy"

    def __post_init__(self) -> None:
        if self.kind not in ("pass", "delay", "drop", "reset", "status"):
            raise ValueError(f"unknown fault kind {self.kind!r}")

    def describe(self) -> str:
        if self.kind == "delay":
            return f"delay {self.seconds:g}s"
        if self.kind == "status":
            return f"status {self.code}"
        return self.kind


PASS = Fault("pass")
DROP = Fault("drop")
RESET = Fault("reset")


def delay(seconds: float) -> Fault:
    return Fault("delay", seconds=seconds)


def status(code: int = 503, detail: str = "injected by the fault proxy") -> Fault:
    return Fault("status", code=code, detail=detail)


@dataclass
class _Rule:
    fault: Fault
    pattern: re.Pattern[str] | None
    remaining: int | None  # None: unlimited


def http_response(code: int, detail: str) -> bytes:
    """A minimal, valid HTTP/1.1 answer with a JSON ``{"detail": ...}`` body."""
    body = json.dumps({"detail": detail}).encode()
    head = (
        f"HTTP/1.1 {code} {REASONS.get(code, 'Error')}\r\n"
        "Content-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n"
        "Connection: close\r\n\r\n"
    )
    return head.encode("latin-1") + body


def _force_close(head: bytes) -> bytes:
    """The header block (without its final blank line) with ``Connection: close`` and no
    ``Keep-Alive`` / ``Proxy-Connection`` headers."""
    lines = head.split(b"\r\n")
    kept = [lines[0]] + [
        line
        for line in lines[1:]
        if line
        and line.split(b":", 1)[0].strip().lower()
        not in (b"connection", b"keep-alive", b"proxy-connection")
    ]
    return b"\r\n".join([*kept, b"Connection: close"]) + b"\r\n\r\n"


class FaultProxy:
    """Listens on a free 127.0.0.1 port and forwards to ``127.0.0.1:target_port``."""

    def __init__(self, target_port: int, *, upstream_timeout: float = 600.0) -> None:
        self.target_port = target_port
        self.upstream_timeout = upstream_timeout
        self._default = PASS
        self._rules: list[_Rule] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._sockets: set[socket.socket] = set()
        self.log: list[tuple[str, str]] = []
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind((HOST, 0))
        self._listener.listen(128)
        self._listener.settimeout(POLL_SECONDS)
        self.port: int = self._listener.getsockname()[1]
        self.url = f"http://{HOST}:{self.port}"
        self._acceptor = threading.Thread(
            target=self._accept_loop, name="proxy-accept", daemon=True
        )
        self._acceptor.start()

    # --- control ---------------------------------------------------------------------------

    def set(self, fault: Fault, *, match: str | None = None, count: int | None = None) -> None:
        """Replace the default fault (and clear bursts), or queue a rule (``match``/``count``)."""
        with self._lock:
            if match is None and count is None:
                self._default = fault
                self._rules.clear()
            else:
                pattern = re.compile(match) if match is not None else None
                self._rules.append(_Rule(fault, pattern, count))

    def pending(self) -> int:
        """Requests still to be hit by the queued bursts (unlimited rules count as 0)."""
        with self._lock:
            return sum(r.remaining or 0 for r in self._rules)

    def requests(self, pattern: str = "") -> list[str]:
        """Request lines seen so far (matching ``pattern``)."""
        with self._lock:
            return [line for line, _ in self.log if re.search(pattern, line)]

    def _choose(self, request_line: str) -> Fault:
        with self._lock:
            for rule in self._rules:
                if rule.remaining == 0:
                    continue
                if rule.pattern is not None and not rule.pattern.search(request_line):
                    continue
                if rule.remaining is not None:
                    rule.remaining -= 1
                fault = rule.fault
                break
            else:
                fault = self._default
            self._rules = [r for r in self._rules if r.remaining != 0]
            self.log.append((request_line, fault.describe()))
            return fault

    # --- life cycle --------------------------------------------------------------------------

    def __enter__(self) -> FaultProxy:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        """Close the listener and every connection, and wait for the threads."""
        self._stop.set()
        self._acceptor.join(5)
        with contextlib.suppress(OSError):
            self._listener.close()
        with self._lock:
            sockets = list(self._sockets)
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        for thread in list(self._threads):
            thread.join(5)
        with self._lock:
            sockets = list(self._sockets)
            self._sockets.clear()
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.close()

    def _track(self, sock: socket.socket) -> None:
        with self._lock:
            self._sockets.add(sock)

    def _close(self, sock: socket.socket, *, rst: bool = False) -> None:
        with self._lock:
            self._sockets.discard(sock)
        with contextlib.suppress(OSError):
            if rst:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            sock.close()

    def _accept_loop(self) -> None:
        while not self._stop.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self._track(client)
            thread = threading.Thread(
                target=self._serve, args=(client,), name="proxy-conn", daemon=True
            )
            self._threads = [t for t in self._threads if t.is_alive()]
            self._threads.append(thread)
            thread.start()

    # --- one connection, one request -----------------------------------------------------------

    def _recv(self, sock: socket.socket, deadline: float | None = None) -> bytes | None:
        """One chunk; b"" at EOF; None on stop or deadline."""
        while not self._stop.is_set():
            if deadline is not None and time.monotonic() > deadline:
                return None
            try:
                ready, _, _ = select.select([sock], [], [], POLL_SECONDS)
            except (OSError, ValueError):
                return b""
            if ready:
                try:
                    return sock.recv(65536)
                except OSError:
                    return b""
        return None

    def _read_request(self, client: socket.socket) -> bytes | None:
        """The whole request (head + Content-Length body or chunked body), or None."""
        deadline = time.monotonic() + 30
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = self._recv(client, deadline)
            if not chunk:
                return None
            data += chunk
            if len(data) > MAX_HEAD_BYTES and b"\r\n\r\n" not in data:
                return None
        head, _, body = data.partition(b"\r\n\r\n")
        headers = {}
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            headers[name.strip().lower()] = value.strip()
        if headers.get(b"transfer-encoding", b"").lower() == b"chunked":
            while not body.endswith(b"0\r\n\r\n"):
                chunk = self._recv(client, deadline)
                if not chunk:
                    return None
                body += chunk
        else:
            length = int(headers.get(b"content-length", b"0") or 0)
            while len(body) < length:
                chunk = self._recv(client, deadline)
                if not chunk:
                    return None
                body += chunk
        return _force_close(head) + body

    def _serve(self, client: socket.socket) -> None:
        try:
            request = self._read_request(client)
            if request is None:
                return
            line = request.split(b"\r\n", 1)[0].decode("latin-1")
            fault = self._choose(line)
            if fault.kind == "reset":
                self._close(client, rst=True)
                return
            if fault.kind == "drop":
                while self._recv(client) not in (b"", None):
                    pass  # hold it open, answer nothing, until the client gives up or we stop
                return
            if fault.kind == "status":
                client.sendall(http_response(fault.code, fault.detail))
                return
            if fault.kind == "delay" and self._stop.wait(fault.seconds):
                return
            self._forward(client, request)
        except OSError:
            pass
        finally:
            self._close(client)

    def _forward(self, client: socket.socket, request: bytes) -> None:
        try:
            upstream = socket.create_connection((HOST, self.target_port), timeout=5)
        except OSError:
            self._close(client, rst=True)  # the server is down: the closest thing to a refusal
            return
        self._track(upstream)
        try:
            upstream.sendall(request)
            deadline = time.monotonic() + self.upstream_timeout
            data = b""
            while b"\r\n\r\n" not in data:
                chunk = self._recv(upstream, deadline)
                if not chunk:
                    if data:
                        client.sendall(data)
                    else:
                        self._close(client, rst=True)
                    return
                data += chunk
            head, _, rest = data.partition(b"\r\n\r\n")
            client.sendall(_force_close(head) + rest)
            while True:
                chunk = self._recv(upstream, deadline)
                if not chunk:
                    return
                client.sendall(chunk)
        finally:
            self._close(upstream)


__all__ = ["DROP", "PASS", "RESET", "Fault", "FaultProxy", "delay", "http_response", "status"]
