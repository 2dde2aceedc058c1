"""The NVML probe: what it reads from each GPU, and that a host without NVML is a report, not a crash.

``FakeNvml`` stands in for the ``pynvml`` module: only the calls the probe makes, with scripted
answers, installed in ``sys.modules`` so the probe's ``import pynvml`` finds it.
"""

# The fake copies pynvml's camelCase names so the probe cannot tell it from the real module.
# ruff: noqa: N802, N815

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from daemon.adapters import nvml
from daemon.adapters.nvml import NvmlGpu, NvmlProcess, NvmlReport, gpu_snapshots, probe
from daemon.core.observed import GpuRef, GpuSnapshot
from daemon.core.units import GiB, MiB

NOT_AVAILABLE = 2**64 - 1


class FakeNvmlError(Exception):
    """Like pynvml.NVMLError: its text is the library's one-line message."""


class FakeLibraryMismatch(Exception):
    """Like pynvml.NVMLLibraryMismatchError, which is not an NVMLError."""


@dataclass(frozen=True)
class FakeMemory:
    total: int
    free: int
    used: int
    reserved: int = 0


@dataclass(frozen=True)
class FakeProcess:
    pid: int
    usedGpuMemory: int | None


@dataclass(frozen=True)
class FakeDevice:
    name: str | bytes
    uuid: str | bytes
    memory: FakeMemory
    processes: tuple[FakeProcess, ...] = ()
    processes_error: Exception | None = None


@dataclass
class FakeNvml:
    """The subset of pynvml the probe calls, answering from ``devices``."""

    devices: list[FakeDevice] = field(default_factory=list)
    driver: str | bytes = "580.95.05"
    init_error: Exception | None = None
    query_error: Exception | None = None
    has_v2: bool = True  # the driver has nvmlDeviceGetMemoryInfo_v2
    calls: list[str] = field(default_factory=list)

    NVMLError = FakeNvmlError
    NVMLLibraryMismatchError = FakeLibraryMismatch
    nvmlMemory_v2 = 0x02000028

    def nvmlInit(self) -> None:
        self.calls.append("init")
        if self.init_error is not None:
            raise self.init_error

    def nvmlShutdown(self) -> None:
        self.calls.append("shutdown")

    def nvmlSystemGetDriverVersion(self) -> str | bytes:
        return self.driver

    def nvmlDeviceGetCount(self) -> int:
        if self.query_error is not None:
            raise self.query_error
        return len(self.devices)

    def nvmlDeviceGetHandleByIndex(self, index: int) -> FakeDevice:
        return self.devices[index]

    def nvmlDeviceGetName(self, handle: FakeDevice) -> str | bytes:
        return handle.name

    def nvmlDeviceGetUUID(self, handle: FakeDevice) -> str | bytes:
        return handle.uuid

    def nvmlDeviceGetMemoryInfo(self, handle: FakeDevice, version: int | None = None) -> Any:
        if version is None:  # v1: used counts the reservation, there is no reserved field
            mem = handle.memory
            return FakeMemory(total=mem.total, free=mem.free, used=mem.total - mem.free)
        if not self.has_v2:
            raise FakeNvmlError("Function Not Found")
        return handle.memory

    def nvmlDeviceGetComputeRunningProcesses(self, handle: FakeDevice) -> list[FakeProcess]:
        if handle.processes_error is not None:
            raise handle.processes_error
        return list(handle.processes)

    def nvmlDeviceGetComputeRunningProcesses_v2(self, handle: FakeDevice) -> list[FakeProcess]:
        self.calls.append("processes_v2")
        return list(handle.processes)


def h100(**changes: Any) -> FakeDevice:
    """An H100 with 0.5 GiB reserved by the driver and one 6.6 GiB process."""
    memory = FakeMemory(total=80 * GiB, free=73 * GiB, used=int(6.5 * GiB), reserved=512 * MiB)
    defaults: dict[str, Any] = {
        "name": "NVIDIA H100 80GB HBM3",
        "uuid": "GPU-0000",
        "memory": memory,
        "processes": (FakeProcess(pid=4242, usedGpuMemory=int(6.5 * GiB)),),
    }
    return FakeDevice(**(defaults | changes))


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> FakeNvml:
    lib = FakeNvml(devices=[h100()])
    monkeypatch.setitem(sys.modules, "pynvml", lib)
    return lib


def test_probe_never_raises_on_this_host() -> None:
    """With the real library: either GPUs and no error, or no GPUs and a one-line reason."""
    report = probe()
    if report.gpus:
        assert report.error is None
    else:
        assert report.error
        assert "\n" not in report.error


def test_a_missing_pynvml_is_an_empty_report(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", None)  # makes `import pynvml` raise ImportError
    report = probe()
    assert report.gpus == ()
    assert report.error is not None
    assert report.error.startswith("pynvml is not installed")


def test_no_driver_is_an_empty_report_with_the_library_message(fake: FakeNvml) -> None:
    fake.init_error = FakeNvmlError("Driver Not Loaded")
    assert probe() == NvmlReport(error="NVML unavailable: Driver Not Loaded")
    assert "shutdown" not in fake.calls  # nothing to shut down after a failed init


def test_no_gpu_is_an_empty_report(fake: FakeNvml) -> None:
    fake.devices = []
    assert probe() == NvmlReport(driver_version="580.95.05", error="NVML found no GPU")


def test_a_failed_query_is_reported_and_nvml_is_shut_down(fake: FakeNvml) -> None:
    fake.query_error = FakeNvmlError("GPU is lost")
    report = probe()
    assert report.gpus == ()
    assert report.error == "NVML query failed: GPU is lost"
    assert fake.calls == ["init", "shutdown"]


def test_probe_reads_memory_v2_with_the_reservation_counted_as_used(fake: FakeNvml) -> None:
    report = probe()
    assert report.error is None
    assert report.driver_version == "580.95.05"
    assert report.gpus == (
        NvmlGpu(
            index=0,
            uuid="GPU-0000",
            name="NVIDIA H100 80GB HBM3",
            total_bytes=80 * GiB,
            used_bytes=7 * GiB,  # 6.5 GiB of processes + 0.5 GiB reserved = total - free
            free_bytes=73 * GiB,
            reserved_bytes=512 * MiB,
            processes=(NvmlProcess(pid=4242, used_bytes=int(6.5 * GiB)),),
        ),
    )
    assert fake.calls == ["init", "shutdown"]


def test_a_driver_without_memory_v2_falls_back_to_v1(fake: FakeNvml) -> None:
    fake.has_v2 = False
    (gpu,) = probe().gpus
    assert gpu.reserved_bytes is None
    assert (gpu.total_bytes, gpu.used_bytes, gpu.free_bytes) == (80 * GiB, 7 * GiB, 73 * GiB)


@pytest.mark.usefixtures("fake")
def test_a_pynvml_without_memory_v2_falls_back_to_v1(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delattr(FakeNvml, "nvmlMemory_v2")
    (gpu,) = probe().gpus
    assert gpu.reserved_bytes is None
    assert gpu.used_bytes == 7 * GiB


def test_unattributed_process_memory_is_none(fake: FakeNvml) -> None:
    procs = (
        FakeProcess(pid=1, usedGpuMemory=None),
        FakeProcess(pid=2, usedGpuMemory=NOT_AVAILABLE),
    )
    fake.devices = [h100(processes=procs)]
    (gpu,) = probe().gpus
    assert gpu.processes == (
        NvmlProcess(pid=1, used_bytes=None),
        NvmlProcess(pid=2, used_bytes=None),
    )


def test_a_gpu_that_cannot_list_processes_still_reports_its_memory(fake: FakeNvml) -> None:
    fake.devices = [h100(processes_error=FakeNvmlError("Not Supported"))]
    # this one test swaps the fake's method for one that fails as an old driver does
    fake.nvmlDeviceGetComputeRunningProcesses_v2 = _not_supported  # type: ignore[method-assign]
    (gpu,) = probe().gpus
    assert gpu.processes == ()
    assert gpu.free_bytes == 73 * GiB


def _not_supported(handle: FakeDevice) -> list[FakeProcess]:  # noqa: ARG001  # pynvml's signature
    raise FakeNvmlError("Not Supported")


def test_a_pynvml_newer_than_the_driver_lists_processes_with_the_v2_call(fake: FakeNvml) -> None:
    fake.devices = [h100(processes_error=FakeLibraryMismatch("use a versioned function"))]
    (gpu,) = probe().gpus
    assert gpu.processes == (NvmlProcess(pid=4242, used_bytes=int(6.5 * GiB)),)
    assert "processes_v2" in fake.calls


def test_bytes_from_older_pynvml_releases_are_decoded(fake: FakeNvml) -> None:
    fake.driver = b"470.82.01"
    fake.devices = [h100(name=b"Tesla T4", uuid=b"GPU-abcd")]
    report = probe()
    assert report.driver_version == "470.82.01"
    assert (report.gpus[0].name, report.gpus[0].uuid) == ("Tesla T4", "GPU-abcd")


def test_errors_are_one_line(fake: FakeNvml) -> None:
    fake.init_error = FakeNvmlError("Driver Not Loaded\n  (see dmesg)")
    assert probe().error == "NVML unavailable: Driver Not Loaded (see dmesg)"


def test_gpu_snapshots_name_each_gpu_by_worker_and_index(fake: FakeNvml) -> None:
    second = h100(uuid="GPU-0001", memory=FakeMemory(total=80 * GiB, free=80 * GiB, used=0))
    fake.devices = [h100(), second]
    snapshots = gpu_snapshots(probe(), "10.0.0.5:30001")
    assert snapshots == (
        GpuSnapshot(
            ref=GpuRef(worker="10.0.0.5:30001", index=0),
            total_bytes=80 * GiB,
            used_bytes=7 * GiB,
            name="NVIDIA H100 80GB HBM3",
        ),
        GpuSnapshot(
            ref=GpuRef(worker="10.0.0.5:30001", index=1),
            total_bytes=80 * GiB,
            used_bytes=0,
            name="NVIDIA H100 80GB HBM3",
        ),
    )
    assert snapshots[0].free_bytes == 73 * GiB


def test_an_empty_report_has_no_snapshots() -> None:
    assert gpu_snapshots(NvmlReport(error="NVML found no GPU"), "w:1") == ()


def test_only_the_nvml_adapter_imports_pynvml() -> None:
    """STYLE.md: the core and the other adapters stay free of pynvml."""
    package = Path(nvml.__file__).resolve().parents[1]
    importers = sorted(
        str(path.relative_to(package))
        for path in package.rglob("*.py")
        if "import pynvml" in path.read_text() or "from pynvml" in path.read_text()
    )
    assert importers == ["adapters/nvml.py"]
