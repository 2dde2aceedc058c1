"""What the cluster looks like right now, as plain frozen values the planner reads.

The shell builds it from Xinference (``/status``, ``/v1/models``, ``/v1/models/instances``), NVML and
the state file, or from a snapshot file for offline planning (format in ``docs/snapshot-format.md``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # ownership.py imports GpuRef from here
    from daemon.core.ownership import LaunchRecord


@dataclass(frozen=True, order=True, kw_only=True)
class GpuRef:
    """One GPU: the worker that owns it and its index on that worker."""

    worker: str
    index: int

    def __str__(self) -> str:
        return f"{self.worker}/gpu{self.index}"


READY = "READY"
ERROR = "ERROR"
IN_PROGRESS = frozenset({"CREATING", "LOADING", "UPDATING", "PENDING"})
TERMINATING = "TERMINATING"


def worker_matches(address: str, wanted: str) -> bool:
    """A config may name a worker by full address (``ip:port``) or by IP/host alone."""
    host = address.rsplit(":", 1)[0] if ":" in address else address
    return wanted in (address, host)


@dataclass(frozen=True, kw_only=True)
class GpuSnapshot:
    """One GPU as its worker reports it. ``used_bytes`` includes every process on it."""

    ref: GpuRef
    total_bytes: int
    used_bytes: int
    name: str = ""

    @property
    def free_bytes(self) -> int:
        return max(0, self.total_bytes - self.used_bytes)


@dataclass(frozen=True, kw_only=True)
class Worker:
    """A worker process of the cluster, by the address Xinference lists it under (``ip:port``)."""

    address: str
    gpus: tuple[GpuSnapshot, ...] = ()
    # The vLLM release a running vLLM model on this worker reports (Xinference's engine_version),
    # None when no model reported one.
    vllm_version: str | None = None

    @property
    def host(self) -> str:
        return self.address.rsplit(":", 1)[0] if ":" in self.address else self.address

    def matches(self, wanted: str) -> bool:
        return worker_matches(self.address, wanted)


@dataclass(frozen=True, kw_only=True)
class RunningModel:
    """A model instance the server knows about, in any state (launching, ready, failed)."""

    uid: str
    model_name: str
    model_type: str | None = None  # None: the server did not describe it (not in /v1/models)
    model_engine: str | None = None
    model_format: str | None = None
    model_size_in_billions: str | None = None
    quantization: str | None = None
    replicas: int = 1
    status: str = READY
    worker: str | None = None
    gpu_indexes: tuple[int, ...] = ()
    # Memory the server reports for this model per GPU, when it does (``gpu_memory`` in /v1/models).
    gpu_memory: Mapping[GpuRef, int] = field(default_factory=lambda: MappingProxyType({}))
    error_message: str | None = None

    @property
    def gpu_refs(self) -> tuple[GpuRef, ...]:
        if self.worker is None:
            return ()
        return tuple(GpuRef(worker=self.worker, index=i) for i in self.gpu_indexes)


@dataclass(frozen=True, kw_only=True)
class Registration:
    """A custom model the server has registered (looked up by name for the file's custom models),
    with the digest of the spec this tool registered under that name (its state file), or None
    when this tool did not register it."""

    model_type: str
    model_name: str
    digest: str | None = None


@dataclass(frozen=True, kw_only=True)
class ObservedState:
    """The whole observed cluster plus this tool's own records.

    ``backing_off`` names models whose failed launch may not be retried yet, ``timed_out`` loads past
    their deadline (the shell owns the clock and decides; the planner only obeys).
    """

    workers: tuple[Worker, ...] = ()
    models: tuple[RunningModel, ...] = ()
    managed: Mapping[str, LaunchRecord] = field(default_factory=lambda: MappingProxyType({}))
    backing_off: frozenset[str] = frozenset()
    timed_out: frozenset[str] = frozenset()  # loads past their deadline (core/lifecycle.py)
    # Memory failures the engine measured, within their backoff: uid -> digest of the failed
    # launch arguments; the plan retries them now only with other arguments (core/retry.py).
    retry_if_changed: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    # The file's custom models the server has registered; None: not looked at (an older snapshot).
    registrations: tuple[Registration, ...] | None = None

    @property
    def gpus(self) -> tuple[GpuSnapshot, ...]:
        return tuple(g for w in self.workers for g in w.gpus)

    def model(self, uid: str) -> RunningModel | None:
        for m in self.models:
            if m.uid == uid:
                return m
        return None

    def registration(self, model_type: str, model_name: str) -> Registration | None:
        for r in self.registrations or ():
            if (r.model_type, r.model_name) == (model_type, model_name):
                return r
        return None
