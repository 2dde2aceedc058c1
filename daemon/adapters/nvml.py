"""NVML probe: total, used, free and driver-reserved memory of each local GPU, and who uses it.

The only module that imports ``pynvml``. A host without the library, the driver or a GPU is normal
(CPU-only models still run), so :func:`probe` then returns an empty report with the reason instead
of raising. :func:`gpu_snapshots` turns a report into the core's :class:`GpuSnapshot` values.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any

from daemon.core.observed import GpuRef, GpuSnapshot

# usedGpuMemory when NVML cannot attribute memory to a process (WDDM, some containers and vGPUs).
_NOT_AVAILABLE = 2**64 - 1


@dataclass(frozen=True, kw_only=True)
class NvmlProcess:
    """A compute process on one GPU; ``used_bytes`` includes its CUDA context (None: unknown)."""

    pid: int  # as the driver sees it: in a container this is often the host's PID
    used_bytes: int | None


@dataclass(frozen=True, kw_only=True)
class NvmlGpu:
    """One GPU as NVML sees it.

    ``used_bytes`` is ``total - free``: every process plus the driver's reservation, like NVML's
    classic (v1) ``used``. ``reserved_bytes`` is that reservation alone (None: the driver or
    pynvml predates ``nvmlMemory_v2``).
    """

    index: int
    uuid: str
    name: str
    total_bytes: int
    used_bytes: int
    free_bytes: int
    reserved_bytes: int | None
    processes: tuple[NvmlProcess, ...]


@dataclass(frozen=True, kw_only=True)
class NvmlReport:
    """Every GPU of this host, or none and ``error`` saying why in one line."""

    gpus: tuple[NvmlGpu, ...] = ()
    driver_version: str | None = None
    error: str | None = None


def probe() -> NvmlReport:
    """Read every GPU once. Never raises for a missing library, driver or GPU."""
    try:
        import pynvml  # type: ignore[import-untyped]  # nvidia-ml-py ships no type information
    except ImportError as exc:
        return NvmlReport(error=_one_line(f"pynvml is not installed: {exc}"))
    nvml: Any = pynvml
    try:
        nvml.nvmlInit()
    except nvml.NVMLError as exc:
        return NvmlReport(error=_one_line(f"NVML unavailable: {exc}"))
    driver: str | None = None
    try:
        driver = _text(nvml.nvmlSystemGetDriverVersion())
        gpus = tuple(_gpu(nvml, index) for index in range(nvml.nvmlDeviceGetCount()))
    except nvml.NVMLError as exc:
        return NvmlReport(driver_version=driver, error=_one_line(f"NVML query failed: {exc}"))
    finally:
        with contextlib.suppress(nvml.NVMLError):
            nvml.nvmlShutdown()
    if not gpus:
        return NvmlReport(driver_version=driver, error="NVML found no GPU")
    return NvmlReport(gpus=gpus, driver_version=driver)


def gpu_snapshots(report: NvmlReport, worker_address: str) -> tuple[GpuSnapshot, ...]:
    """The report's GPUs as the core sees them, owned by the worker at ``worker_address``."""
    return tuple(
        GpuSnapshot(
            ref=GpuRef(worker=worker_address, index=gpu.index),
            total_bytes=gpu.total_bytes,
            used_bytes=gpu.used_bytes,
            name=gpu.name,
        )
        for gpu in report.gpus
    )


def _gpu(nvml: Any, index: int) -> NvmlGpu:
    handle = nvml.nvmlDeviceGetHandleByIndex(index)
    total, free, reserved = _memory(nvml, handle)
    return NvmlGpu(
        index=index,
        uuid=_text(nvml.nvmlDeviceGetUUID(handle)),
        name=_text(nvml.nvmlDeviceGetName(handle)),
        total_bytes=total,
        used_bytes=total - free,
        free_bytes=free,
        reserved_bytes=reserved,
        processes=_processes(nvml, handle),
    )


def _memory(nvml: Any, handle: Any) -> tuple[int, int, int | None]:
    """(total, free, reserved): the v2 query when the library and driver have it, else v1."""
    version = getattr(nvml, "nvmlMemory_v2", None)
    if version is not None:
        try:
            info = nvml.nvmlDeviceGetMemoryInfo(handle, version=version)
        except nvml.NVMLError:
            pass  # a driver without nvmlDeviceGetMemoryInfo_v2 (before R510): fall back to v1
        else:
            return int(info.total), int(info.free), int(info.reserved)
    info = nvml.nvmlDeviceGetMemoryInfo(handle)
    return int(info.total), int(info.free), None


def _processes(nvml: Any, handle: Any) -> tuple[NvmlProcess, ...]:
    """Compute processes and their memory; () when the driver cannot list them (MIG, some vGPUs)."""
    # pynvml raises NVMLLibraryMismatchError (not an NVMLError) when it is newer than the driver
    # and the unversioned call is missing there; the _v2 call then still works on older drivers.
    errors = (nvml.NVMLError, getattr(nvml, "NVMLLibraryMismatchError", nvml.NVMLError))
    for name in ("nvmlDeviceGetComputeRunningProcesses", "nvmlDeviceGetComputeRunningProcesses_v2"):
        query = getattr(nvml, name, None)
        if query is None:
            continue
        try:
            running = query(handle)
        except errors:
            continue
        return tuple(_process(proc) for proc in running)
    return ()


def _process(proc: Any) -> NvmlProcess:
    used = proc.usedGpuMemory
    known = used is not None and int(used) != _NOT_AVAILABLE
    return NvmlProcess(pid=int(proc.pid), used_bytes=int(used) if known else None)


def _text(value: str | bytes) -> str:
    """Older pynvml releases return bytes, newer ones str."""
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


def _one_line(message: str) -> str:
    return " ".join(message.split())
