"""Measure GPU memory on a real GPU and set it beside the estimator's numbers (issue #6).

What it measures (each step is timed and wrapped: a failing step is recorded, the rest still run):

1. NVML (``daemon.adapters.nvml.probe``) beside ``nvidia-smi``: total / used / free / reserved.
2. The CUDA context: what this process holds after ``torch.cuda.init()`` and a tiny allocation
   (and after the first matmul, which adds cuBLAS), against ``CUDA_CONTEXT_BYTES``; CUDA's total
   (``torch.cuda.mem_get_info``) beside NVML's total.
5. Two processes on one GPU: a child holding 6 GiB and this process holding 3 GiB; NVML must list
   both with about the right sizes (context included), and its ``used`` must cover both.
3. Weights of Qwen2.5-0.5B, Llama-3.1-8B and Qwen2.5-14B shapes (bf16, random weights, no
   download): parameter bytes, allocator delta and NVML delta against ``weights_bytes``.
4. KV cache of the 0.5B and 8B shapes: one prefill of N tokens with ``use_cache=True``; the cache
   tensors' bytes and the allocator delta against ``kv_layout(arch).bytes_per_token x N``, the same
   cache cast to fp8 (transformers has no fp8 cache of its own), and the forward pass's activation
   peak against the estimator's transformers-engine activation.
7. Admission with a process it does not manage: the NVML probe's snapshot fed to the planner
   refuses a model that only fits the idle GPU while another process holds 20 GiB.
6. A bge-m3 shaped encoder (XLM-RoBERTa large, fp32, SDPA): peak memory of a batch of 32 texts of
   512 and 1024 tokens under ``torch.no_grad()`` against the encoder activation estimate.

Steps run in the order 1, 2, 5, 3/4, 6, then the 14B weights, so that the slowest step is the one
a time budget (``--budget-s``) cuts first. Relative difference = (estimate - measured) / measured:
positive means the estimator over-estimates (the safe side).

Run on a GPU machine (needs python3 with torch+CUDA, transformers, nvidia-ml-py; no project
install, no network):

    cd <repo> && python3 benchmarks/gpu/measure.py --out "$OUT"

Check the plumbing on a CPU machine (tiny models on the CPU, NVML and CUDA steps recorded as
unavailable or skipped):

    python benchmarks/gpu/measure.py --dry-run --out /tmp/gpu-dry

Writes ``OUT/gpu_results.json`` and ``OUT/gpu_results.md`` after every step (a run cut short keeps
what it measured) and prints the table at the end. Of the project it imports only modules that need
nothing beyond the standard library (the estimator and the NVML adapter), so pydantic, structlog
and friends need not be installed.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import os
import platform
import subprocess
import sys
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
import transformers
from transformers import (
    AutoModel,
    AutoModelForCausalLM,
    LlamaConfig,
    Qwen2Config,
    XLMRobertaConfig,
    cache_utils,
)

# The repository root goes on sys.path so `daemon` imports without installing the project.
ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

# These imports need the path set above; all of them are standard-library-only modules.
from daemon.adapters.nvml import NvmlGpu, NvmlReport, probe  # noqa: E402
from daemon.core.architecture import (  # noqa: E402
    Architecture,
    architecture_from_hf_config,
    estimate_params,
)
from daemon.core.engines import Engine  # noqa: E402
from daemon.core.footprint import (  # noqa: E402
    CUDA_CONTEXT_BYTES,
    EngineLimits,
    estimate_footprint,
    kv_layout,
    weights_bytes,
)
from daemon.core.units import GiB, MiB  # noqa: E402

# --- what is measured ---------------------------------------------------------------------------

# Published config.json shapes (only the fields that size memory; rope settings do not).
DECODERS: dict[str, tuple[str, dict[str, Any]]] = {
    "qwen2.5-0.5b": (
        "qwen2",
        {
            "hidden_size": 896,
            "intermediate_size": 4864,
            "num_hidden_layers": 24,
            "num_attention_heads": 14,
            "num_key_value_heads": 2,
            "vocab_size": 151936,
            "tie_word_embeddings": True,
            "max_position_embeddings": 32768,
        },
    ),
    "llama-3.1-8b": (
        "llama",
        {
            "hidden_size": 4096,
            "intermediate_size": 14336,
            "num_hidden_layers": 32,
            "num_attention_heads": 32,
            "num_key_value_heads": 8,
            "vocab_size": 128256,
            "tie_word_embeddings": False,
            "max_position_embeddings": 131072,
        },
    ),
    "qwen2.5-14b": (
        "qwen2",
        {
            "hidden_size": 5120,
            "intermediate_size": 13824,
            "num_hidden_layers": 48,
            "num_attention_heads": 40,
            "num_key_value_heads": 8,
            "vocab_size": 152064,
            "tie_word_embeddings": False,
            "max_position_embeddings": 32768,
        },
    ),
}
KV_MODELS = ("qwen2.5-0.5b", "llama-3.1-8b")
KV_TOKENS = (1024, 4096, 16384)
LATE_MODELS = ("qwen2.5-14b",)  # measured last: the slowest load, cut first by the budget

ENCODER: dict[str, Any] = {  # BAAI/bge-m3 (XLM-RoBERTa large)
    "vocab_size": 250002,
    "hidden_size": 1024,
    "num_hidden_layers": 24,
    "num_attention_heads": 16,
    "intermediate_size": 4096,
    "max_position_embeddings": 8194,
    "type_vocab_size": 1,
    "pad_token_id": 1,
    "layer_norm_eps": 1e-5,
}
ENCODER_BATCH = 32
ENCODER_LENGTHS = (512, 1024)

CHILD_BYTES = 6 * GiB
PARENT_BYTES = 3 * GiB

# Tiny stand-ins for --dry-run on a CPU: same code paths, seconds instead of minutes.
DRY_DECODERS: dict[str, tuple[str, dict[str, Any]]] = {
    "qwen2.5-0.5b": (
        "qwen2",
        {
            "hidden_size": 64,
            "intermediate_size": 128,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "num_key_value_heads": 2,
            "vocab_size": 512,
            "tie_word_embeddings": True,
            "max_position_embeddings": 4096,
        },
    ),
    "llama-3.1-8b": (
        "llama",
        {
            "hidden_size": 128,
            "intermediate_size": 256,
            "num_hidden_layers": 3,
            "num_attention_heads": 8,
            "num_key_value_heads": 4,
            "vocab_size": 1024,
            "tie_word_embeddings": False,
            "max_position_embeddings": 4096,
        },
    ),
    "qwen2.5-14b": (
        "qwen2",
        {
            "hidden_size": 96,
            "intermediate_size": 192,
            "num_hidden_layers": 2,
            "num_attention_heads": 6,
            "num_key_value_heads": 2,
            "vocab_size": 800,
            "tie_word_embeddings": False,
            "max_position_embeddings": 4096,
        },
    ),
}
DRY_KV_TOKENS = (16, 64, 256)
DRY_ENCODER = ENCODER | {
    "vocab_size": 500,
    "hidden_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "intermediate_size": 256,
    "max_position_embeddings": 130,
}
DRY_ENCODER_BATCH = 4
DRY_ENCODER_LENGTHS = (32, 64)


# --- results ------------------------------------------------------------------------------------


@dataclass
class Row:
    """One comparison. ``unit``: "B" (bytes), "B/token", "params", "s", "ratio" or a count."""

    item: str
    measured: float | None
    estimate: float | None
    unit: str = "B"
    note: str = ""

    @property
    def rel_diff(self) -> float | None:
        if self.measured is None or self.estimate is None or self.measured == 0:
            return None
        return (self.estimate - self.measured) / self.measured


@dataclass
class Step:
    name: str
    status: str = "ok"  # ok | failed | skipped
    seconds: float = 0.0
    error: str | None = None
    rows: list[Row] = field(default_factory=list)
    data: dict[str, Any] = field(default_factory=dict)

    def row(self, item: str, measured: float | None, estimate: float | None, **kw: Any) -> None:
        self.rows.append(Row(item, measured, estimate, **kw))


@dataclass
class Run:
    """Everything the script measured, and where and how it ran."""

    out: Path
    dry_run: bool
    budget_s: float
    started: float = field(default_factory=time.monotonic)
    meta: dict[str, Any] = field(default_factory=dict)
    steps: list[Step] = field(default_factory=list)
    # NVML's index of the GPU under test (CUDA device 0), set by the CUDA context step.
    nvml_index: int = 0

    @property
    def device(self) -> torch.device:
        return torch.device("cpu" if self.dry_run else "cuda")

    @property
    def cuda(self) -> bool:
        return not self.dry_run

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def step(self, name: str, body: Callable[[Step], None], *, needs_cuda: bool = False) -> Step:
        """Run one step; record its rows, its time and any failure, then save the results."""
        step = Step(name)
        self.steps.append(step)
        if needs_cuda and not self.cuda:
            step.status, step.error = "skipped", "needs CUDA (dry run)"
        elif self.elapsed() > self.budget_s:
            step.status, step.error = "skipped", f"time budget of {self.budget_s:.0f} s spent"
        else:
            t0 = time.monotonic()
            try:
                body(step)
            except Exception as exc:  # a failed step is a result; the next step still runs
                step.status = "failed"
                step.error = f"{type(exc).__name__}: {exc}".strip()[:500]
                step.data["traceback"] = traceback.format_exc(limit=-8)[-3000:]  # innermost frames
            finally:
                release_memory(self)
            step.seconds = time.monotonic() - t0
        detail = f" ({step.error})" if step.error else ""
        print(f"[{self.elapsed():7.1f} s] {name}: {step.status} in {step.seconds:.1f} s{detail}")
        self.save()
        return step

    def save(self) -> None:
        self.meta["elapsed_s"] = round(self.elapsed(), 2)
        self.out.mkdir(parents=True, exist_ok=True)
        (self.out / "gpu_results.json").write_text(json.dumps(self.as_json(), indent=2) + "\n")
        (self.out / "gpu_results.md").write_text(self.markdown())

    def as_json(self) -> dict[str, Any]:
        steps = []
        for step in self.steps:
            record = asdict(step)
            for row, raw in zip(step.rows, record["rows"], strict=True):
                raw["rel_diff"] = row.rel_diff
            steps.append(record)
        return {"meta": self.meta, "steps": steps}

    def markdown(self) -> str:
        lines = ["# GPU memory: measured vs estimated", ""]
        lines += [f"- {key}: {value}" for key, value in self.meta.items()]
        lines += ["", "diff = (estimate - measured) / measured; positive = over-estimate.", ""]
        lines += [
            "| step | item | measured | estimate | diff | note |",
            "|---|---|---|---|---|---|",
        ]
        for step in self.steps:
            for row in step.rows:
                diff = "" if row.rel_diff is None else f"{row.rel_diff:+.1%}"
                cells = [step.name, row.item, fmt(row.measured, row.unit)]
                cells += [fmt(row.estimate, row.unit), diff, row.note]
                lines.append("| " + " | ".join(c.replace("|", "/") for c in cells) + " |")
        lines += ["", "| step | status | seconds | error |", "|---|---|---|---|"]
        for step in self.steps:
            error = (step.error or "").replace("|", "/").replace("\n", " ")
            lines.append(f"| {step.name} | {step.status} | {step.seconds:.1f} | {error} |")
        return "\n".join(lines) + "\n"


def fmt(value: float | None, unit: str) -> str:
    if value is None:
        return "-"
    if unit == "B":
        if abs(value) >= GiB:
            return f"{value / GiB:.3f} GiB"
        return f"{value / MiB:.1f} MiB" if abs(value) >= MiB else f"{value:,.0f} B"
    if unit == "params":
        return f"{value / 1e6:,.2f} M"
    if unit == "s":
        return f"{value:.2f} s"
    if unit == "ratio":
        return f"{value:.3f}"
    return f"{value:,.0f} {unit}"


# --- memory helpers -----------------------------------------------------------------------------


def release_memory(run: Run) -> None:
    gc.collect()
    if run.cuda and torch.cuda.is_initialized():
        torch.cuda.synchronize()
        torch.cuda.empty_cache()


def allocated(run: Run) -> int | None:
    return torch.cuda.memory_allocated() if run.cuda else None


def start_peak(run: Run) -> int | None:
    """Reset the allocator's peak and return what is allocated now."""
    if not run.cuda:
        return None
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    return torch.cuda.memory_allocated()


def peak_since(run: Run, start: int | None) -> int | None:
    if not run.cuda or start is None:
        return None
    torch.cuda.synchronize()
    return torch.cuda.max_memory_allocated() - start


def minus(a: int | None, *bs: int | None) -> int | None:
    if a is None or any(b is None for b in bs):
        return None
    return a - sum(b for b in bs if b is not None)


def tensor_bytes(tensors: Iterator[torch.Tensor]) -> int:
    """Bytes of distinct tensors (a view of storage counted twice would lie)."""
    seen: set[tuple[int, int]] = set()
    total = 0
    for t in tensors:
        key = (t.data_ptr(), t.nbytes)
        if key not in seen:
            seen.add(key)
            total += t.nbytes
    return total


def cache_tensors(obj: Any, depth: int = 0) -> Iterator[torch.Tensor]:
    """Every tensor inside a transformers cache, whatever its layout in this version.

    Legacy tuples, ``DynamicCache.key_cache/value_cache`` (4.x) and ``DynamicCache.layers[i]
    .keys/values`` (4.56+) are all reached by walking lists, tuples and attributes.
    """
    if isinstance(obj, torch.Tensor):
        yield obj
    elif isinstance(obj, list | tuple):
        for item in obj:
            yield from cache_tensors(item, depth + 1)
    elif depth < 4 and hasattr(obj, "__dict__"):
        for value in vars(obj).values():
            yield from cache_tensors(value, depth + 1)


def nvml_gpu(run: Run, report: NvmlReport) -> NvmlGpu:
    if report.error:
        raise RuntimeError(report.error)
    for gpu in report.gpus:
        if gpu.index == run.nvml_index:
            return gpu
    raise RuntimeError(f"NVML lists no GPU {run.nvml_index}")


def own_process_bytes(run: Run, report: NvmlReport) -> tuple[int | None, str]:
    """This process's memory as NVML attributes it, and how it was found."""
    gpu = nvml_gpu(run, report)
    mine = [p for p in gpu.processes if p.pid == os.getpid()]
    if mine:
        return mine[0].used_bytes, "by pid"
    if len(gpu.processes) == 1:
        # In a container NVML reports host PIDs; alone on the GPU, the one process is this one.
        return gpu.processes[0].used_bytes, f"pid {os.getpid()} not listed; the only process"
    return None, f"pid {os.getpid()} not among {[p.pid for p in gpu.processes]}"


# --- the steps ----------------------------------------------------------------------------------


def step_nvml(run: Run, step: Step) -> None:
    """1a. What NVML reports (before this process touches CUDA)."""
    report = probe()
    step.data["report"] = asdict(report)
    run.meta["driver"] = report.driver_version
    if report.error and run.dry_run:
        step.status, step.error = "skipped", report.error  # expected on a machine without a GPU
        return
    if report.error:
        raise RuntimeError(report.error)
    for gpu in report.gpus:
        step.row(f"gpu{gpu.index} total", gpu.total_bytes, None, note=gpu.name)
        step.row(f"gpu{gpu.index} used (total - free)", gpu.used_bytes, None)
        step.row(f"gpu{gpu.index} reserved (v2)", gpu.reserved_bytes, None)
        step.row(f"gpu{gpu.index} processes", len(gpu.processes), None, unit="procs")
    run.meta["gpu"] = report.gpus[0].name if report.gpus else None


def nvidia_smi(query: str, what: str = "gpu") -> list[list[str]]:
    result = subprocess.run(
        ["nvidia-smi", f"--query-{what}={query}", "--format=csv,noheader,nounits"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return [[c.strip() for c in line.split(",")] for line in result.stdout.splitlines() if line]


def step_smi(step: Step) -> None:
    """1b. nvidia-smi beside NVML, in bytes (nvidia-smi prints MiB)."""
    rows = nvidia_smi("index,name,memory.total,memory.used,memory.free")
    step.data["query_gpu"] = rows
    try:
        step.data["reserved_mib"] = nvidia_smi("index,memory.reserved")
    except (subprocess.CalledProcessError, OSError) as exc:  # older nvidia-smi lacks the field
        step.data["reserved_mib"] = f"not available: {exc}"
    try:
        step.data["compute_apps"] = nvidia_smi("pid,used_memory", what="compute-apps")
    except (subprocess.CalledProcessError, OSError) as exc:
        step.data["compute_apps"] = f"not available: {exc}"
    report = probe()
    gpus = {g.index: g for g in report.gpus}
    for index, _name, total, used, free in rows:
        gpu = gpus.get(int(index))
        if gpu is None:
            continue
        note = "measured = nvidia-smi, estimate = NVML"
        step.row(f"gpu{index} total", int(total) * MiB, gpu.total_bytes, note=note)
        step.row(f"gpu{index} used vs NVML total-free", int(used) * MiB, gpu.used_bytes, note=note)
        if gpu.reserved_bytes is not None:
            v2_used = gpu.used_bytes - gpu.reserved_bytes
            step.row(f"gpu{index} used vs NVML v2 used", int(used) * MiB, v2_used, note=note)
        step.row(f"gpu{index} free", int(free) * MiB, gpu.free_bytes, note=note)


def step_context(run: Run, step: Step) -> None:
    """2. The CUDA context of one process, and CUDA's view of total/free beside NVML's."""
    # CUDA device 0 is the first of CUDA_VISIBLE_DEVICES; checked by UUID once CUDA is up.
    visible = os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",")[0].strip()
    run.nvml_index = int(visible) if visible.isdigit() else 0
    before = nvml_gpu(run, probe())
    torch.cuda.init()
    uuid = str(getattr(torch.cuda.get_device_properties(0), "uuid", "")).removeprefix("GPU-")
    step.data["cuda0_is_nvml_gpu"] = uuid == before.uuid.removeprefix("GPU-") if uuid else None
    run.meta["torch_device"] = torch.cuda.get_device_name(0)
    run.meta["cuda_module_loading"] = os.environ.get("CUDA_MODULE_LOADING", "(unset)")
    tiny = torch.ones(1, device=run.device)
    torch.cuda.synchronize()
    report = probe()
    after = nvml_gpu(run, report)
    own, how = own_process_bytes(run, report)
    reserved = torch.cuda.memory_reserved()
    step.data |= {"pid_lookup": how, "allocator_reserved": reserved}
    estimate = CUDA_CONTEXT_BYTES + reserved
    step.row("this process after init + 1 tensor (NVML)", own, estimate, note=how)
    step.row("GPU used delta after init + 1 tensor", after.used_bytes - before.used_bytes, estimate)
    step.row("context alone (process - allocator)", minus(own, reserved), CUDA_CONTEXT_BYTES)

    a = torch.randn(1024, 1024, device=run.device, dtype=torch.bfloat16)
    (a @ a).sum().item()  # the first matmul loads cuBLAS and its workspace
    del a, tiny
    torch.cuda.empty_cache()
    report = probe()
    own, how = own_process_bytes(run, report)
    reserved = torch.cuda.memory_reserved()
    step.row(
        "context after first matmul (process - allocator)",
        minus(own, reserved),
        CUDA_CONTEXT_BYTES,
        note=how,
    )

    cuda_free, cuda_total = torch.cuda.mem_get_info()
    gpu = nvml_gpu(run, report)
    note = "measured = CUDA mem_get_info, estimate = NVML"
    step.row("CUDA total vs NVML total", cuda_total, gpu.total_bytes, note=note)
    step.row("CUDA free vs NVML free", cuda_free, gpu.free_bytes, note=note)
    if gpu.reserved_bytes is not None:
        step.row(
            "NVML total - CUDA total vs NVML reserved",
            gpu.total_bytes - cuda_total,
            gpu.reserved_bytes,
        )


CHILD = """
import sys, torch
block = torch.empty(int(sys.argv[1]), dtype=torch.uint8, device=sys.argv[2])
if block.is_cuda:
    torch.cuda.synchronize()
print("ready", flush=True)
sys.stdin.readline()  # hold the memory until the parent closes stdin
"""


@contextlib.contextmanager
def holding_child(run: Run, n_bytes: int) -> Iterator[subprocess.Popen[str]]:
    """Another process that holds ``n_bytes`` on the GPU until the block ends."""
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(n_bytes), run.device.type],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout is not None  # Popen(stdout=PIPE)
        if child.stdout.readline().strip() != "ready":
            raise RuntimeError(f"child exited with {child.wait(timeout=30)} before allocating")
        yield child
    finally:
        if child.stdin is not None:
            child.stdin.close()
        if child.stdout is not None:
            child.stdout.close()
        try:
            child.wait(timeout=30)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()


def step_two_processes(run: Run, step: Step) -> None:
    """5. A child with 6 GiB and this process with 3 GiB: both in NVML, with their contexts."""
    release_memory(run)
    with holding_child(run, CHILD_BYTES) as child:
        block = torch.empty(PARENT_BYTES, dtype=torch.uint8, device=run.device)
        torch.cuda.synchronize()
        time.sleep(0.5)
        report = probe()
        gpu = nvml_gpu(run, report)
        procs = {p.pid: p.used_bytes for p in gpu.processes}
        step.data |= {"child_pid": child.pid, "parent_pid": os.getpid(), "nvml_processes": procs}
        child_bytes, parent_bytes, how = procs.get(child.pid), procs.get(os.getpid()), "by pid"
        if child_bytes is None and parent_bytes is None and len(procs) == 2:
            # Host PIDs in a container: tell them apart by size (the child holds twice as much).
            parent_bytes, child_bytes = sorted(procs.values(), key=lambda b: b or 0)
            how = "pids not listed (container?); matched by size"
        step.data["match"] = how
        parent_est = torch.cuda.memory_reserved() + CUDA_CONTEXT_BYTES
        step.row(
            "child process (6 GiB + context)",
            child_bytes,
            CHILD_BYTES + CUDA_CONTEXT_BYTES,
            note=how,
        )
        step.row("this process (allocator + context)", parent_bytes, parent_est, note=how)
        listed = sum(b for b in procs.values() if b is not None)
        step.row("GPU used vs sum of processes", gpu.used_bytes, listed, note="estimate = sum")
        if gpu.reserved_bytes is not None:
            note = "measured = used - processes"
            step.row(
                "GPU used - processes vs reserved",
                gpu.used_bytes - listed,
                gpu.reserved_bytes,
                note=note,
            )
        step.data["both_listed"] = child.pid in procs and os.getpid() in procs
        del block


ADMISSION_CHILD_BYTES = 20 * 2**30


def step_admission(run: Run, step: Step) -> None:
    """7. Admission respects a process it does not manage: NVML -> ObservedState -> plan.

    A model sized to fit the idle GPU (with 4 GiB to spare) is admitted; while another process holds
    20 GiB it is refused, and the plan counts that process's memory as used outside the plan.
    Needs pydantic (carried as wheels to the GPU machine; see docs/estimator.md).
    """
    try:
        from daemon.adapters.nvml import gpu_snapshots
        from daemon.core.demand import resolve_model
        from daemon.core.desired import Config
        from daemon.core.observed import ObservedState, Worker
        from daemon.core.planning import plan
    except ImportError as exc:
        step.status, step.error = "skipped", f"planner needs pydantic: {exc}"
        return
    release_memory(run)
    worker = "gpu-host:30001"

    def observed() -> ObservedState:
        snaps = tuple(g for g in gpu_snapshots(probe(), worker) if g.ref.index == run.nvml_index)
        return ObservedState(workers=(Worker(address=worker, gpus=snaps),))

    idle = observed()
    (gpu,) = idle.gpus
    policy = {"mode": "enforce", "gpu_reserve_gib": 0.5, "gpu_max_fraction": 0.95}
    limit = int(gpu.total_bytes * 0.95) - 2**29
    need_gib = round((limit - gpu.used_bytes) / 2**30 - 4.0, 2)
    cfg = Config.model_validate(
        {
            "policy": policy,
            "models": {
                "probe-model": {
                    "model_name": "m",
                    "model_engine": "Transformers",
                    "memory": {"estimate_gib": need_gib},
                }
            },
        }
    )
    demands = {uid: resolve_model(uid, spec) for uid, spec in cfg.models.items()}
    before = plan(cfg, demands, idle)
    step.row(
        "idle GPU: model admitted (1 = yes)",
        float(not before.refused),
        1.0,
        unit="ratio",
        note=f"needs {need_gib} GiB",
    )
    with holding_child(run, ADMISSION_CHILD_BYTES):
        time.sleep(0.5)
        busy = observed()
        after = plan(cfg, demands, busy)
        step.row(
            "20 GiB held by another process: admitted (0 = refused)",
            float(not after.refused),
            0.0,
            unit="ratio",
            note=after.refused[0].reason[:160] if after.refused else "",
        )
        (budget,) = after.budgets
        step.row(
            "memory the plan counts as outside it",
            budget.external,
            ADMISSION_CHILD_BYTES + CUDA_CONTEXT_BYTES + gpu.used_bytes,
            note="estimate = child's 20 GiB + one CUDA context + idle used",
        )


def decoder_config(model_type: str, fields: dict[str, Any]) -> Any:
    config_class = {"qwen2": Qwen2Config, "llama": LlamaConfig}[model_type]
    return config_class(**fields)


def build(run: Run, auto: Any, config: Any, dtype: torch.dtype, step: Step) -> Any:
    """Random-weight model straight on the device, in ``dtype`` (no download, no CPU copy)."""
    kwargs: dict[str, Any] = {"attn_implementation": "sdpa"}
    with torch.device(run.device):
        try:
            model = auto.from_config(config, dtype=dtype, **kwargs)
        except TypeError:  # transformers before 4.56 names it torch_dtype
            model = auto.from_config(config, torch_dtype=dtype, **kwargs)
    devices = {p.device.type for p in model.parameters()}
    if devices != {run.device.type}:  # a transformers that ignored the device context
        step.data["moved_to_device"] = sorted(devices)
        model = model.to(run.device)
    return model.eval()


def step_weights(
    run: Run, step: Step, name: str, arch: Architecture, models: dict[str, Any]
) -> None:
    """3. Weights of one decoder in bf16."""
    model_type, fields = (DRY_DECODERS if run.dry_run else DECODERS)[name]
    before_alloc = allocated(run)
    before_nvml = own_process_bytes(run, probe())[0] if run.cuda else None
    t0 = time.monotonic()
    model = build(
        run, AutoModelForCausalLM, decoder_config(model_type, fields), torch.bfloat16, step
    )
    if run.cuda:
        torch.cuda.synchronize()
    step.data["load_s"] = round(time.monotonic() - t0, 2)
    models[name] = model
    after_nvml = own_process_bytes(run, probe())[0] if run.cuda else None
    params = sum(p.numel() for p in model.parameters())
    param_bytes = tensor_bytes(t for t in model.parameters())
    buffer_bytes = tensor_bytes(t for t in model.buffers())
    estimate = weights_bytes(arch, bits=16)
    step.data |= {"params": params, "param_bytes": param_bytes, "buffer_bytes": buffer_bytes}
    step.row("parameters", params, estimate_params(arch), unit="params")
    step.row("parameter bytes", param_bytes, estimate)
    step.row("allocator delta", minus(allocated(run), before_alloc), estimate)
    step.row(
        "NVML process delta", minus(after_nvml, before_nvml), estimate, note="allocator blocks"
    )
    step.row("load time", step.data["load_s"], None, unit="s")


def step_kv(run: Run, step: Step, arch: Architecture, model: Any) -> None:
    """4. KV cache of one prefill of N tokens, bf16 and cast to fp8."""
    layout = kv_layout(arch)
    fp8_layout = kv_layout(arch, kv_dtype_bytes=1)
    step.data["bytes_per_token_estimate"] = layout.bytes_per_token
    step.data["transformers_quantized_caches"] = [
        n for n in dir(cache_utils) if "Quant" in n or "8" in n
    ]
    tokens = DRY_KV_TOKENS if run.dry_run else KV_TOKENS
    for n in tokens:
        ids = torch.randint(0, arch.vocab_size, (1, n), device=run.device)
        start = start_peak(run)
        with torch.no_grad():
            out = model.model(input_ids=ids, use_cache=True)  # no lm_head: generate() keeps 1 token
        peak = peak_since(run, start)
        cache = list(cache_tensors(out.past_key_values))
        cache_bytes = tensor_bytes(iter(cache))
        hidden = out.last_hidden_state.nbytes
        held = minus(allocated(run), start, hidden)
        step.row(f"{n} tokens: cache tensors", cache_bytes, layout.bytes_per_token * n)
        step.row(f"{n} tokens: allocator delta - output", held, layout.bytes_per_token * n)
        limits = EngineLimits(max_num_batched_tokens=n, max_num_seqs=1)
        fp = estimate_footprint(arch, engine=Engine.TRANSFORMERS, weights=0, limits=limits)
        note = "peak - cache; estimate includes 1 token of fp32 logits"
        step.row(
            f"{n} tokens: forward activation",
            minus(peak, cache_bytes),
            fp.activation_bytes,
            note=note,
        )
        if n == tokens[-1]:
            step.row("bytes per token", cache_bytes / n, layout.bytes_per_token, unit="B/token")
            fp8 = [t.to(torch.float8_e4m3fn) for t in cache]
            fp8_bytes = tensor_bytes(iter(fp8))
            note = "cache cast to float8_e4m3fn (transformers has no fp8 KV cache)"
            step.row(f"{n} tokens: fp8 cache", fp8_bytes, fp8_layout.bytes_per_token * n, note=note)
            step.row("fp8 / bf16 bytes", fp8_bytes / cache_bytes, 0.5, unit="ratio")
            del fp8
        del out, cache, ids
        release_memory(run)


def step_encoder(run: Run, step: Step) -> None:
    """6. bge-m3 shaped encoder in fp32: peak activation of one batch."""
    fields = DRY_ENCODER if run.dry_run else ENCODER
    batch = DRY_ENCODER_BATCH if run.dry_run else ENCODER_BATCH
    lengths = DRY_ENCODER_LENGTHS if run.dry_run else ENCODER_LENGTHS
    arch = architecture_from_hf_config(
        {"model_type": "xlm-roberta", **fields, "torch_dtype": "float32"}
    )
    before = allocated(run)
    model = build(run, AutoModel, XLMRobertaConfig(**fields), torch.float32, step)
    step.data["attn_implementation"] = getattr(model.config, "_attn_implementation", None)
    weights_est = weights_bytes(arch, bits=32)
    step.row("parameter bytes (fp32)", tensor_bytes(t for t in model.parameters()), weights_est)
    step.row("allocator delta (weights)", minus(allocated(run), before), weights_est)
    for length in lengths:
        ids = torch.randint(3, arch.vocab_size, (batch, length), device=run.device)
        mask = torch.ones_like(ids)
        start = start_peak(run)
        with torch.no_grad():
            out = model(input_ids=ids, attention_mask=mask)
        peak = peak_since(run, start)
        limits = EngineLimits(max_num_batched_tokens=length, max_num_seqs=batch)
        fp = estimate_footprint(
            arch, engine=Engine.SENTENCE_TRANSFORMERS, weights=weights_est, limits=limits
        )
        step.row(f"{batch} x {length} tokens: activation peak", peak, fp.activation_bytes)
        total = None if peak is None or start is None else start + peak - (before or 0)
        step.row(
            f"{batch} x {length} tokens: weights + peak", total, weights_est + fp.activation_bytes
        )
        del out, ids, mask
        release_memory(run)
    del model


def measure_decoder(run: Run, name: str) -> None:
    """Steps 3 and 4 for one model: load once, measure weights, then the KV cache."""
    model_type, fields = (DRY_DECODERS if run.dry_run else DECODERS)[name]
    arch = architecture_from_hf_config(
        {"model_type": model_type, **fields, "torch_dtype": "bfloat16"}
    )
    models: dict[str, Any] = {}
    run.step(f"3 weights {name}", lambda s: step_weights(run, s, name, arch, models))
    if name in KV_MODELS:
        if name in models:
            run.step(f"4 kv {name}", lambda s: step_kv(run, s, arch, models[name]))
        else:
            run.steps.append(Step(f"4 kv {name}", status="skipped", error="model did not load"))
    models.clear()
    release_memory(run)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="folder for gpu_results.json/.md")
    parser.add_argument("--dry-run", action="store_true", help="tiny models on the CPU, no NVML")
    parser.add_argument(
        "--budget-s", type=float, default=330.0, help="start no new step after this many seconds"
    )
    args = parser.parse_args(argv)
    run = Run(out=args.out, dry_run=args.dry_run, budget_s=args.budget_s)
    run.meta |= {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "dry_run": args.dry_run,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_cuda": torch.version.cuda,
        "transformers": transformers.__version__,
    }
    # 1 and 2 first: NVML must see the GPU before this process creates its CUDA context.
    run.step("1a nvml probe", lambda s: step_nvml(run, s))
    run.step("1b nvidia-smi vs nvml", step_smi, needs_cuda=True)
    run.step("2 cuda context", lambda s: step_context(run, s), needs_cuda=True)
    run.step("5 two processes", lambda s: step_two_processes(run, s), needs_cuda=True)
    run.step(
        "7 admission vs an unmanaged process", lambda s: step_admission(run, s), needs_cuda=True
    )
    for name in DECODERS:
        if name not in LATE_MODELS:
            measure_decoder(run, name)
    run.step("6 encoder bge-m3", lambda s: step_encoder(run, s))
    for name in LATE_MODELS:
        measure_decoder(run, name)
    run.meta["pydantic_imported"] = "pydantic" in sys.modules
    run.save()
    print()
    print(run.markdown())
    return 0


if __name__ == "__main__":
    sys.exit(main())
