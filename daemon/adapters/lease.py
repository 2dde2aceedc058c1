"""A lease on the cluster, kept in Xinference itself, so that two reconcilers never manage one
cluster (the state-directory lock only stops two daemons sharing a state directory on one host).

The lease is a custom registration of model type ``flexible`` named ``xinference-reconciler-lease``,
registered with ``persist=false`` (it lives in the supervisor's memory: a restarted server has none).
Its ``model_description`` holds who holds it (host, state directory, pid) and a sequence number the
holder raises when it renews. Xinference refuses to register a name that exists, so creating the
lease is atomic; renewing is unregister + register by the holder.

Expiry is judged on the observer's own monotonic clock, never by comparing clocks of two hosts: a
lease whose sequence number has not moved for ``ttl_seconds`` of the observer's time is abandoned
and may be taken over. A daemon that finds a lease of its own host and state directory takes it at
once: it holds that directory's lock, so the process that left the lease behind is gone. A daemon
that stops cleanly releases the lease.

Xinference's UI lists the registration among the custom "flexible" models; it cannot be launched
(it has no launcher) and does no harm.
"""

from __future__ import annotations

import json
import os
import socket
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from daemon.errors import ClusterError, PermanentClusterError, RequestRejected

LEASE_NAME = "xinference-reconciler-lease"
LEASE_TYPE = "flexible"


class RegistrationPort(Protocol):
    def registration(self, model_type: str, name: str) -> dict[str, Any] | None: ...
    def register(
        self, model_type: str, spec: Mapping[str, Any], *, persist: bool = True
    ) -> None: ...
    def unregister(self, model_type: str, name: str) -> None: ...


class LeaseError(PermanentClusterError):
    """The server refused the lease registration itself (not because another holds it)."""


@dataclass(frozen=True, kw_only=True)
class Holder:
    host: str
    state_dir: str
    pid: int
    nonce: str
    seq: int = 0

    def describe(self) -> str:
        return f"pid {self.pid} on {self.host} (state directory {self.state_dir})"

    def same_place(self, other: Holder) -> bool:
        return (self.host, self.state_dir) == (other.host, other.state_dir)


@dataclass(frozen=True, kw_only=True)
class LeaseStatus:
    held: bool  # by us: we may act
    holder: Holder | None  # who holds it (us or another)
    reason: str


def _parse(registration: dict[str, Any] | None) -> Holder | None:
    if registration is None:
        return None
    try:
        doc = json.loads(str(registration.get("model_description") or ""))
        return Holder(
            host=str(doc["host"]),
            state_dir=str(doc["state_dir"]),
            pid=int(doc["pid"]),
            nonce=str(doc["nonce"]),
            seq=int(doc["seq"]),
        )
    except (ValueError, KeyError, TypeError):
        # Someone else's registration under our name, or a garbled one: not a live holder.
        return Holder(host="?", state_dir="?", pid=0, nonce="unreadable", seq=-1)


class ClusterLease:
    """The lease as seen by one reconciler process."""

    def __init__(
        self,
        *,
        state_dir: Path,
        ttl_seconds: float,
        monotonic: Callable[[], float],
        host: str | None = None,
        pid: int | None = None,
    ) -> None:
        self.ttl = ttl_seconds
        self.monotonic = monotonic
        self.me = Holder(
            host=host or socket.gethostname(),
            state_dir=str(state_dir.resolve()),
            pid=os.getpid() if pid is None else pid,
            nonce=uuid.uuid4().hex[:12],
        )
        self._renewed_at: float | None = None  # monotonic, when we last (re)registered
        self._seen: tuple[str, int] | None = None  # (nonce, seq) of another holder
        self._seen_since = 0.0

    def _spec(self) -> dict[str, Any]:
        h = self.me
        body = {"host": h.host, "state_dir": h.state_dir, "pid": h.pid, "nonce": h.nonce}
        return {
            "version": 2,
            "model_name": LEASE_NAME,
            "model_description": json.dumps({**body, "seq": h.seq}),
            "launcher": "xinference_reconciler.lease",
            "launcher_args": None,
            "model_uri": None,
            "virtualenv": None,
        }

    def _write(self, cluster: RegistrationPort, *, replace: bool) -> None:
        if replace:
            cluster.unregister(LEASE_TYPE, LEASE_NAME)
        cluster.register(LEASE_TYPE, self._spec(), persist=False)
        self._renewed_at = self.monotonic()

    def ensure(self, cluster: RegistrationPort) -> LeaseStatus:
        """Take, renew or respect the lease. Raises ClusterError when the server cannot be asked."""
        current = _parse(cluster.registration(LEASE_TYPE, LEASE_NAME))
        if current is None:
            try:
                self._write(cluster, replace=False)
                return LeaseStatus(held=True, holder=self.me, reason="lease taken (it was free)")
            except RequestRejected as exc:  # another reconciler registered it first?
                current = _parse(cluster.registration(LEASE_TYPE, LEASE_NAME))
                if current is None:
                    raise LeaseError(
                        f"cannot register the cluster lease: {exc.detail}",
                        method=exc.method,
                        path=exc.path,
                        status=exc.status,
                    ) from exc
        return self._judge(cluster, current)

    def _judge(self, cluster: RegistrationPort, current: Holder) -> LeaseStatus:
        now = self.monotonic()
        if current.nonce == self.me.nonce:
            if self._renewed_at is None or now - self._renewed_at >= self.ttl / 3:
                self.me = Holder(**{**self.me.__dict__, "seq": current.seq + 1})
                self._write(cluster, replace=True)
            return LeaseStatus(held=True, holder=self.me, reason="lease held")
        if current.same_place(self.me):
            self._write(cluster, replace=True)
            return LeaseStatus(
                held=True,
                holder=self.me,
                reason=f"lease taken over from {current.describe()} (this host and state "
                "directory; that process is gone: this one holds the directory's lock)",
            )
        key = (current.nonce, current.seq)
        if key != self._seen:
            self._seen, self._seen_since = key, now
        idle = now - self._seen_since
        if idle >= self.ttl:
            self._write(cluster, replace=True)
            return LeaseStatus(
                held=True,
                holder=self.me,
                reason=f"lease taken over from {current.describe()}: not renewed for "
                f"{idle:.0f} s (ttl {self.ttl:.0f} s)",
            )
        return LeaseStatus(
            held=False,
            holder=current,
            reason=f"another reconciler manages this cluster: {current.describe()}; this one "
            f"only observes (it takes over if that lease is not renewed for {self.ttl:.0f} s)",
        )

    def release(self, cluster: RegistrationPort) -> None:
        """Give the lease back if we hold it (a clean stop), so a successor need not wait."""
        try:
            current = _parse(cluster.registration(LEASE_TYPE, LEASE_NAME))
            if current is not None and current.nonce == self.me.nonce:
                cluster.unregister(LEASE_TYPE, LEASE_NAME)
        except ClusterError:
            pass  # the server is gone; so is the lease (it was never persisted)
