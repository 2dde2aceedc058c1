"""Observed-state snapshots as JSON files: the offline input of ``plan`` and ``fit``, and the
output of ``snapshot``. The format is documented in ``docs/snapshot-format.md``."""

from __future__ import annotations

from pathlib import Path
from types import MappingProxyType
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, Strict, StringConstraints, ValidationError

from daemon.adapters.json_file import JsonFileError, read_json_object
from daemon.core.observed import (
    GpuRef,
    GpuSnapshot,
    ObservedState,
    Registration,
    RunningModel,
    Worker,
)
from daemon.core.ownership import LaunchRecord
from daemon.core.units import GiB
from daemon.errors import SnapshotError

Int = Annotated[int, Strict()]
MAX_BYTES = 1 << 50  # 1 PiB: more than any GPU; larger numbers are corrupt input
Bytes = Annotated[int, Strict(), Field(ge=0, le=MAX_BYTES)]
Gib = Annotated[float, Strict(), Field(ge=0, le=MAX_BYTES / 2**30, allow_inf_nan=False)]
Index = Annotated[str, StringConstraints(pattern=r"^[0-9]{1,4}$")]  # a GPU index as a JSON key
SNAPSHOT_FORMAT = 1


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class GpuEntry(_Strict):
    index: Int = Field(ge=0)
    name: str = ""
    total_bytes: Annotated[Bytes, Field(gt=0)] | None = None
    used_bytes: Bytes | None = None
    total_gib: Annotated[Gib, Field(gt=0)] | None = None
    used_gib: Gib | None = None

    def bytes(self) -> tuple[int, int]:
        total = self.total_bytes if self.total_bytes is not None else _gib(self.total_gib)
        used = (
            self.used_bytes if self.used_bytes is not None else round((self.used_gib or 0.0) * GiB)
        )
        if total is None:
            raise ValueError(f"gpu {self.index}: give total_bytes or total_gib")
        return total, used


def _gib(value: float | None) -> int | None:
    return None if value is None else round(value * GiB)


class WorkerEntry(_Strict):
    address: str
    gpus: list[GpuEntry] = []
    vllm_version: str | None = None  # reported by a running vLLM model on this worker


class ModelEntry(_Strict):
    uid: str
    model_name: str
    model_type: str | None = None
    model_engine: str | None = None
    model_format: str | None = None
    model_size_in_billions: str | float | None = None
    quantization: str | None = None
    replicas: Int = 1
    status: str = "READY"
    worker: str | None = None
    gpu_indexes: list[Int] = []
    gpu_memory_bytes: dict[Index, Bytes] = {}
    error_message: str | None = None


class ManagedEntry(_Strict):
    uid: str
    spec_hash: str
    config_revision: str = ""
    worker: str | None = None
    claims_bytes: dict[Index, Bytes] = {}
    loading: bool = False  # sent, not yet seen READY/ERROR: its GPUs take no other load meanwhile


class RegistrationEntry(_Strict):
    model_type: str
    model_name: str
    digest: str | None = None  # of the spec this tool registered under the name (state file)


class SnapshotFile(_Strict):
    format: Literal[1] = 1
    workers: list[WorkerEntry] = []
    models: list[ModelEntry] = []
    managed: list[ManagedEntry] = []
    backing_off: list[str] = []
    registrations: list[RegistrationEntry] | None = None  # absent: not looked at


def _refs(worker: str | None, by_index: dict[str, int]) -> dict[GpuRef, int]:
    if worker is None:
        return {}
    return {GpuRef(worker=worker, index=int(i)): b for i, b in by_index.items()}


def observed_from_document(doc: Any, *, name: str = "snapshot") -> ObservedState:
    """A parsed JSON document -> ObservedState (SnapshotError on any mismatch)."""
    try:
        snap = SnapshotFile.model_validate(doc)
        workers = tuple(
            Worker(
                address=w.address,
                gpus=tuple(
                    GpuSnapshot(
                        ref=GpuRef(worker=w.address, index=g.index),
                        name=g.name,
                        total_bytes=g.bytes()[0],
                        used_bytes=g.bytes()[1],
                    )
                    for g in sorted(w.gpus, key=lambda g: g.index)
                ),
                vllm_version=w.vllm_version,
            )
            for w in snap.workers
        )
    except (ValidationError, ValueError) as exc:
        raise SnapshotError(f"{name}: not a valid snapshot: {_short(exc)}") from None
    models = tuple(
        RunningModel(
            uid=m.uid,
            model_name=m.model_name,
            model_type=m.model_type,
            model_engine=m.model_engine,
            model_format=m.model_format,
            model_size_in_billions=None
            if m.model_size_in_billions is None
            else str(m.model_size_in_billions),
            quantization=m.quantization,
            replicas=m.replicas,
            status=m.status,
            worker=m.worker,
            gpu_indexes=tuple(m.gpu_indexes),
            gpu_memory=MappingProxyType(_refs(m.worker, m.gpu_memory_bytes)),
            error_message=m.error_message,
        )
        for m in snap.models
    )
    managed = {
        r.uid: LaunchRecord(
            uid=r.uid,
            spec_hash=r.spec_hash,
            config_revision=r.config_revision,
            claims=MappingProxyType(_refs(r.worker, r.claims_bytes)),
            loading=r.loading,
        )
        for r in snap.managed
    }
    registrations = None
    if snap.registrations is not None:
        registrations = tuple(
            Registration(model_type=r.model_type, model_name=r.model_name, digest=r.digest)
            for r in snap.registrations
        )
    return ObservedState(
        workers=workers,
        models=models,
        managed=MappingProxyType(managed),
        backing_off=frozenset(snap.backing_off),
        registrations=registrations,
    )


def _short(exc: Exception) -> str:
    if isinstance(exc, ValidationError):
        return "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}"
            for e in exc.errors(include_url=False, include_input=False)
        )
    return str(exc)


def load_snapshot(path: Path) -> ObservedState:
    try:
        doc = read_json_object(path, what="snapshot")
    except JsonFileError as exc:
        raise SnapshotError(str(exc)) from None
    return observed_from_document(doc, name=str(path))


def observed_to_document(observed: ObservedState) -> dict[str, Any]:
    """ObservedState -> the JSON snapshot document (bytes exact, sorted for stable diffs)."""
    doc: dict[str, Any] = {
        "format": SNAPSHOT_FORMAT,
        "workers": [
            {
                "address": w.address,
                "gpus": [
                    {
                        "index": g.ref.index,
                        "name": g.name,
                        "total_bytes": g.total_bytes,
                        "used_bytes": g.used_bytes,
                    }
                    for g in w.gpus
                ],
                **({"vllm_version": w.vllm_version} if w.vllm_version is not None else {}),
            }
            for w in sorted(observed.workers, key=lambda w: w.address)
        ],
        "models": [
            {
                "uid": m.uid,
                "model_name": m.model_name,
                "model_type": m.model_type,
                "model_engine": m.model_engine,
                "model_format": m.model_format,
                "model_size_in_billions": m.model_size_in_billions,
                "quantization": m.quantization,
                "replicas": m.replicas,
                "status": m.status,
                "worker": m.worker,
                "gpu_indexes": list(m.gpu_indexes),
                "gpu_memory_bytes": {str(r.index): b for r, b in sorted(m.gpu_memory.items())},
                "error_message": m.error_message,
            }
            for m in sorted(observed.models, key=lambda m: m.uid)
        ],
        "managed": [
            {
                "uid": r.uid,
                "spec_hash": r.spec_hash,
                "config_revision": r.config_revision,
                "worker": next(iter(r.claims), GpuRef(worker="", index=0)).worker or None,
                "claims_bytes": {str(g.index): b for g, b in sorted(r.claims.items())},
                "loading": r.loading,
            }
            for r in sorted(observed.managed.values(), key=lambda r: r.uid)
        ],
        "backing_off": sorted(observed.backing_off),
    }
    if observed.registrations is not None:
        doc["registrations"] = [
            {"model_type": r.model_type, "model_name": r.model_name, "digest": r.digest}
            for r in sorted(observed.registrations, key=lambda r: (r.model_type, r.model_name))
        ]
    return doc
