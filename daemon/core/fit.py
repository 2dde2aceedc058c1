"""The ``fit`` view: each GPU's memory split into what the plan puts there (weights, KV cache, overhead
per model), what is used outside the plan, the reserve (``gpu_reserve_gib`` and the part above
``gpu_max_fraction``) and what stays free; and the CPU models, which hold no GPU memory. A display
model, pure."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace

from daemon.core.admission import GpuCapacity, Placement
from daemon.core.demand import Claim, Demand, claim_on
from daemon.core.observed import GpuRef, ObservedState


@dataclass(frozen=True, kw_only=True)
class Segment:
    """Part of one GPU's memory in the plan, for ``fit``."""

    uid: str
    weights: int
    kv: int
    overhead: int
    state: str  # running | planned
    measured: int = 0  # of the overhead, what the engine measured beyond the estimate


@dataclass(frozen=True, kw_only=True)
class GpuBudget:
    ref: GpuRef
    name: str
    total: int
    reserve: int  # total minus the plan limit: reserve_fixed + reserve_above_fraction
    external: int
    segments: tuple[Segment, ...]
    reserve_fixed: int = 0  # policy.gpu_reserve_gib

    @property
    def reserve_above_fraction(self) -> int:
        """The part of the total above ``policy.gpu_max_fraction``."""
        return self.reserve - self.reserve_fixed

    @property
    def free(self) -> int:
        used = sum(s.weights + s.kv + s.overhead for s in self.segments)
        return self.total - self.reserve - self.external - used


@dataclass(frozen=True, kw_only=True)
class CpuModel:
    """A model that holds no GPU memory: desired on the CPU, or running without a GPU and not in
    the file. ``state``: planned (admitted this pass), or its drift state (in_sync, missing, ...)."""

    uid: str
    model_name: str
    model_engine: str | None
    worker: str | None
    state: str


def segment_of(claim: Claim, uid: str, state: str) -> Segment:
    fp = claim.footprint
    if fp is None:
        return Segment(uid=uid, weights=0, kv=0, overhead=claim.bytes, state=state)
    kv = max(0, claim.bytes - fp.weights_bytes - fp.overhead_bytes)
    return Segment(
        uid=uid,
        weights=fp.weights_bytes,
        kv=kv,
        overhead=fp.overhead_bytes,
        state=state,
        measured=fp.correction_bytes,
    )


def gpu_budgets(
    *,
    observed: ObservedState,
    demands: Mapping[str, Demand],
    held: Mapping[GpuRef, Mapping[str, int]],
    caps: list[GpuCapacity],
    placements: Mapping[str, Placement],
    leaving: frozenset[str],
    reserve_bytes: int = 0,
) -> tuple[GpuBudget, ...]:
    names = {g.ref: g.name for g in observed.gpus}
    planned: dict[GpuRef, list[Segment]] = {}
    for p in sorted(placements.values(), key=lambda p: p.uid):
        for ref, claim in zip(p.gpus, p.claims, strict=True):
            planned.setdefault(ref, []).append(segment_of(claim, p.uid, "planned"))
    out = []
    for cap in caps:
        segments: list[Segment] = []
        for uid, held_bytes in sorted(held[cap.ref].items()):
            if uid in leaving:
                continue
            demand = demands.get(uid)
            estimate = claim_on(demand, cap.total, rules=cap.rules) if demand else None
            fp = estimate.footprint if estimate else None
            if estimate is not None and (
                fp is None or held_bytes >= fp.weights_bytes + fp.overhead_bytes
            ):
                # split what it holds as its estimate would; KV cache takes what is left
                segments.append(segment_of(replace(estimate, bytes=held_bytes), uid, "running"))
            else:
                segments.append(
                    Segment(uid=uid, weights=0, kv=0, overhead=held_bytes, state="running")
                )
        segments.extend(planned.get(cap.ref, ()))
        out.append(
            GpuBudget(
                ref=cap.ref,
                name=names.get(cap.ref, ""),
                total=cap.total,
                reserve=cap.total - cap.limit,
                reserve_fixed=min(reserve_bytes, cap.total - cap.limit),
                external=cap.external,
                segments=tuple(segments),
            )
        )
    return tuple(out)
