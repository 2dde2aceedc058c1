"""Builders of observed values for tests and benchmarks."""

from __future__ import annotations

from daemon.core.observed import GpuRef, GpuSnapshot, Worker
from daemon.core.units import GiB


def gpu_worker(address: str, *totals_gib: float, used_gib: float = 0.0) -> Worker:
    """A worker with GPUs of the given sizes (GiB), each with ``used_gib`` already in use."""
    return Worker(
        address=address,
        gpus=tuple(
            GpuSnapshot(
                ref=GpuRef(worker=address, index=i),
                total_bytes=round(t * GiB),
                used_bytes=round(used_gib * GiB),
            )
            for i, t in enumerate(totals_gib)
        ),
    )
