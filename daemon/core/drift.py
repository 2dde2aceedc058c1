"""Desired vs observed, model by model: in sync, missing, changed, failed, launching or unexpected.

Every status carries human-readable reasons; ``changed`` names each field that differs.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from daemon.core.compat import StrEnum
from daemon.core.desired import ModelSpec, changed_keys
from daemon.core.naming import sizes_equal
from daemon.core.observed import (
    ERROR,
    IN_PROGRESS,
    TERMINATING,
    ObservedState,
    RunningModel,
    worker_matches,
)


class State(StrEnum):
    IN_SYNC = "in_sync"
    MISSING = "missing"
    CHANGED = "changed"
    FAILED = "failed"
    LAUNCHING = "launching"
    TERMINATING = "terminating"
    UNEXPECTED = "unexpected"


# States that count as drift (people alert on these).
DRIFT_STATES = frozenset({State.MISSING, State.CHANGED, State.FAILED, State.UNEXPECTED})


@dataclass(frozen=True, kw_only=True)
class ModelStatus:
    uid: str
    state: State
    reasons: tuple[str, ...] = ()
    desired: bool = True
    managed: bool = False  # launched by this tool (its state file says so)

    @property
    def is_drift(self) -> bool:
        return self.state in DRIFT_STATES


def _same_text(a: str | None, b: str | None) -> bool:
    return (a or "").lower() == (b or "").lower()


def differences(spec: ModelSpec, running: RunningModel) -> list[str]:
    """Fields the server shows that differ from the spec ("field: running X, wanted Y")."""
    out = []

    def differ(field: str, have: object, want: object) -> None:
        out.append(f"{field}: running {have!r}, wanted {want!r}")

    if spec.model_name != running.model_name:
        differ("model_name", running.model_name, spec.model_name)
    # Fields the server did not report (None) are unknown, never a difference: an instance that
    # /v1/models does not list yet (its ~3 s cache) or any more (a dead worker) is not "changed".
    if running.model_type is not None and spec.model_type.lower() != running.model_type.lower():
        differ("model_type", running.model_type, spec.model_type)
    if (
        spec.model_engine
        and running.model_engine
        and not _same_text(spec.model_engine, running.model_engine)
    ):
        differ("model_engine", running.model_engine, spec.model_engine)
    if (
        spec.model_format
        and running.model_format
        and not _same_text(spec.model_format, running.model_format)
    ):
        differ("model_format", running.model_format, spec.model_format)
    if (
        spec.model_size_in_billions is not None
        and running.model_size_in_billions is not None
        and not sizes_equal(spec.model_size_in_billions, running.model_size_in_billions)
    ):
        differ(
            "model_size_in_billions", running.model_size_in_billions, spec.model_size_in_billions
        )
    if (
        spec.quantization
        and running.quantization
        and not _same_text(spec.quantization, running.quantization)
    ):
        differ("quantization", running.quantization, spec.quantization)
    if spec.replicas != running.replicas:
        differ("replicas", running.replicas, spec.replicas)
    place = spec.placement
    if place.worker and running.worker and not worker_matches(running.worker, place.worker):
        differ("placement.worker", running.worker, place.worker)
    if (
        place.gpu_indexes is not None
        and running.gpu_indexes
        and (sorted(place.gpu_indexes) != sorted(running.gpu_indexes))
    ):
        differ("placement.gpu_indexes", list(running.gpu_indexes), list(place.gpu_indexes))
    return out


def model_status(uid: str, spec: ModelSpec, observed: ObservedState) -> ModelStatus:
    record = observed.managed.get(uid)
    managed = record is not None
    running = observed.model(uid)
    if running is None and record is not None and record.loading:
        # Sent, and not listed yet (a slow server, an answer lost in a timeout): still a launch
        # in progress, never a reason to send it again (core/lifecycle.py decides when it is gone).
        return ModelStatus(
            uid=uid, state=State.LAUNCHING, reasons=("sent; not listed yet",), managed=managed
        )
    if running is None:
        return ModelStatus(uid=uid, state=State.MISSING, reasons=("not running",), managed=managed)
    if running.status == ERROR:
        why = running.error_message or "launch failed"
        return ModelStatus(uid=uid, state=State.FAILED, reasons=(why,), managed=managed)
    if running.status in IN_PROGRESS:
        return ModelStatus(
            uid=uid, state=State.LAUNCHING, reasons=(running.status.lower(),), managed=managed
        )
    if running.status == TERMINATING:
        return ModelStatus(
            uid=uid, state=State.TERMINATING, reasons=("terminating",), managed=managed
        )
    reasons = differences(spec, running)
    if record is not None and record.spec_hash != spec.spec_hash():
        keys = changed_keys(record.spec, spec.launch_spec()) if record.spec else []
        reasons += [f"changed in the file: {k}" for k in keys] or [
            "changed in the file (launched before this tool recorded specs; keys unknown)"
        ]
    if reasons:
        return ModelStatus(uid=uid, state=State.CHANGED, reasons=tuple(reasons), managed=managed)
    return ModelStatus(uid=uid, state=State.IN_SYNC, managed=managed)


def detect_drift(
    models: Mapping[str, ModelSpec], observed: ObservedState
) -> tuple[ModelStatus, ...]:
    """The status of every model that is desired or running, sorted by uid."""
    out = [model_status(uid, spec, observed) for uid, spec in models.items()]
    for running in observed.models:
        if running.uid not in models:
            out.append(
                ModelStatus(
                    uid=running.uid,
                    state=State.UNEXPECTED,
                    reasons=(f"running ({running.status}) but not in the file",),
                    desired=False,
                    managed=running.uid in observed.managed,
                )
            )
    return tuple(sorted(out, key=lambda s: s.uid))
