"""Learning from the engine: when a launch fails on memory, the engine's own message says by how much
the estimate was wrong; that becomes a measured correction for the model's memory identity, and the
next plan uses it at once (a launch that fits, or a refusal that says why, never the same failing
arguments again). A READY model that holds more than it claimed is corrected the same way.

Messages understood (texts and version ranges in docs/vllm-versions.md section 4):

- V0 ``The model's max seq len (N) is larger than the maximum number of tokens that can be stored
  in KV cache (M)``: the cache held M tokens;
- V1 ``To serve at least one request with the model's max seq len (N), (X GiB KV cache is needed,
  which is larger than the available KV cache memory (Y GiB)`` (optionally ``the estimated maximum
  model length is W``): the cache had Y GiB;
- ``No available memory for the cache blocks``: the cache had nothing;
- the start-up gate ``Free memory on device (F/T GiB) on startup is less than desired GPU memory
  utilization (U, R GiB)``: R GiB were wanted where F were free;
- PyTorch's ``CUDA out of memory. Tried to allocate A ... of which F is free``: A more were needed
  where F were free; and vLLM's ``CUDA out of memory occurred when warming up sampler``.

Every correction is an upper bound of what the estimate missed (numbers the engine prints are
rounded: each is taken at the unsafe end of its rounding), plus a margin; corrections only ever add
memory. Pure: the shell parses nothing else and passes the clock's reading in.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, replace
from types import MappingProxyType
from typing import Literal, get_args

from daemon.core.demand import Demand, footprint_of
from daemon.core.footprint import BLOCK_SIZE, kv_cache_bytes_at
from daemon.core.units import GiB, MiB, fmt_gib

# Added to every learned figure: a second attempt must not fail by a rounding error.
MARGIN_BYTES = 256 * MiB
# A READY model may exceed its claim by this much before it is called an overrun (allocator noise).
OVERRUN_TOLERANCE = 0.02

Kind = Literal["kv_cache", "no_cache_memory", "startup_gate", "out_of_memory", "overrun", "ledger"]
KINDS: tuple[str, ...] = get_args(Kind)

_GIB = r"(\d+(?:\.\d+)?)"
_V0_MAX_LEN = re.compile(
    r"max seq len \((\d+)\) is larger than the maximum number of tokens that can be stored in KV "
    r"cache \((\d+)\)"
)
_V1_MAX_LEN = re.compile(
    r"max seq len \((\d+)\), \(" + _GIB + r" Gi?B KV cache is needed, which is larger than the "
    r"available KV cache memory \(" + _GIB + r" Gi?B\)"
)
_ESTIMATED_LEN = re.compile(r"the estimated maximum model length is (\d+)")
_NO_MEMORY = re.compile(r"No available memory for the cache blocks")
_GATE = re.compile(
    r"Free memory on device(?: \S+)? \(" + _GIB + "/" + _GIB + r" GiB\) on startup is less than "
    r"desired GPU memory utilization \(([\d.]+), " + _GIB + r" GiB\)"
)
_SIZE = r"(\d+(?:\.\d+)?) (bytes|KiB|MiB|GiB)"
_TORCH_OOM = re.compile(
    r"Tried to allocate "
    + _SIZE
    + r"\. GPU (\d+) has a total capacit?y of "
    + _SIZE
    + r" of which "
    + _SIZE
    + r" is free"
)
_WARMUP_OOM = re.compile(r"CUDA out of memory occurred when warming up (sampler|pooler)")
_UNITS = {"bytes": 1, "KiB": 1024, "MiB": MiB, "GiB": GiB}
# What vLLM V1's front end raises when its EngineCore process died at start-up: the cause is only
# in the worker's log (daemon/adapters/xinference.py engine_log).
ENGINE_CORE_WRAPPER = "Engine core initialization failed"


@dataclass(frozen=True, kw_only=True)
class Finding:
    """What an engine's failure message says, in bytes and tokens (None: not stated)."""

    kind: Kind
    kv_tokens: int | None = None  # the KV cache held this many tokens (V0)
    kv_bytes_at_most: int | None = None  # the KV cache had at most this many bytes
    short_bytes: int | None = None  # at least this many more bytes were needed
    text: str = ""


def _bytes(value: str, unit: str = "GiB", *, rounding: float = 0.005) -> int:
    """A printed size at the unsafe end of its rounding: the largest it can have been."""
    return math.ceil((float(value) + rounding) * _UNITS[unit])


def _smallest(value: str, unit: str = "GiB", *, rounding: float = 0.005) -> int:
    return max(0, math.floor((float(value) - rounding) * _UNITS[unit]))


def parse_engine_error(message: str | None) -> Finding | None:
    """The memory finding in an engine's failure message, or None when it is not about memory."""
    if not message:
        return None
    text = message[:2000]
    if m := _V0_MAX_LEN.search(text):
        return Finding(kind="kv_cache", kv_tokens=int(m.group(2)), text=m.group(0))
    if m := _V1_MAX_LEN.search(text):
        return Finding(kind="kv_cache", kv_bytes_at_most=_bytes(m.group(3)), text=m.group(0))
    if m := _NO_MEMORY.search(text):
        return Finding(kind="no_cache_memory", kv_bytes_at_most=0, text=m.group(0))
    if m := _GATE.search(text):
        free, wanted = _bytes(m.group(1)), _smallest(m.group(4))
        return Finding(kind="startup_gate", short_bytes=max(0, wanted - free), text=m.group(0))
    if m := _TORCH_OOM.search(text):
        asked = _smallest(m.group(1), m.group(2))
        free = _bytes(m.group(6), m.group(7))
        return Finding(kind="out_of_memory", short_bytes=max(0, asked - free), text=m.group(0))
    if m := _WARMUP_OOM.search(text):
        return Finding(kind="out_of_memory", short_bytes=0, text=m.group(0))
    return None


def latest_finding(log_text: str | None) -> Finding | None:
    """The most recent memory finding in a worker's log tail (newest line first)."""
    for line in reversed((log_text or "").splitlines()):
        found = parse_engine_error(line)
        if found is not None:
            return found
    return None


@dataclass(frozen=True, kw_only=True)
class Correction:
    """Memory the estimate missed for one model identity (ModelSpec.memory_key()), per GPU."""

    key: str
    model: str  # what it was learned on: uid and model name, for people
    kind: Kind
    extra_bytes: int  # added to the engine's overhead before the KV cache (>= 0)
    estimated_bytes: int  # the claim per GPU the failed launch had
    evidence: str  # the engine's words
    gpu_name: str = ""
    engine_version: str | None = None
    learned_at: float = 0.0  # wall clock

    def describe(self) -> str:
        return (
            f"{self.model}: +{fmt_gib(self.extra_bytes)} per GPU measured by the engine "
            f"({self.kind}: {self.evidence})"
        )


def learn(
    finding: Finding,
    *,
    demand: Demand,
    launch_args: Mapping[str, object],
    gpu_total_bytes: int,
    claim_bytes: int,
    now: float,
    gpu_name: str = "",
    engine_version: str | None = None,
    previous: Correction | None = None,
) -> Correction:
    """The correction one failure proves: at least what the estimate missed, plus a margin, on
    top of any correction the failed launch already carried (they add up: each failure shows
    what was still missing)."""
    fp = footprint_of(demand)
    missed = 0
    utilization = launch_args.get("gpu_memory_utilization")
    if fp is not None and isinstance(utilization, float | int):
        predicted = kv_cache_bytes_at(
            fp, utilization=float(utilization), gpu_total_bytes=gpu_total_bytes
        )
        kv_cap = launch_args.get("kv_cache_memory_bytes")
        if isinstance(kv_cap, int):
            predicted = kv_cap  # the KV size was given outright
        actual: int | None = finding.kv_bytes_at_most
        if finding.kv_tokens is not None:  # V0 prints blocks x block size: exact
            blocks = math.ceil(finding.kv_tokens / BLOCK_SIZE)
            actual = blocks * BLOCK_SIZE * max(fp.kv.bytes_per_token, 1)
        if actual is not None:
            missed = max(0, predicted - actual)
    if finding.short_bytes is not None:
        missed = max(missed, finding.short_bytes)
    if finding.kind in ("no_cache_memory", "out_of_memory") and missed == 0:
        missed = max(claim_bytes // 20, MARGIN_BYTES)  # no size printed: 5% of the claim
    key = demand.spec.memory_key()
    base = previous.extra_bytes if previous is not None and previous.key == key else 0
    return Correction(
        key=key,
        model=f"{demand.uid} ({demand.spec.model_name})",
        kind=finding.kind,
        extra_bytes=base + missed + MARGIN_BYTES,
        estimated_bytes=claim_bytes,
        evidence=finding.text,
        gpu_name=gpu_name,
        engine_version=engine_version,
        learned_at=now,
    )


def overrun(
    *,
    demand: Demand,
    held_bytes: int,
    claim_bytes: int,
    now: float,
    gpu_name: str = "",
    previous: Correction | None = None,
) -> Correction | None:
    """A READY model holding more than it claimed (beyond allocator noise): a correction for its
    next launch, or None when it is within its claim."""
    if held_bytes <= claim_bytes * (1 + OVERRUN_TOLERANCE):
        return None
    base = previous.extra_bytes if previous is not None else 0
    return Correction(
        key=demand.spec.memory_key(),
        model=f"{demand.uid} ({demand.spec.model_name})",
        kind="overrun",
        extra_bytes=max(base, held_bytes - claim_bytes + MARGIN_BYTES),
        estimated_bytes=claim_bytes,
        evidence=f"holds {fmt_gib(held_bytes)} per GPU, claimed {fmt_gib(claim_bytes)}",
        gpu_name=gpu_name,
        learned_at=now,
    )


def corrected(
    demands: Mapping[str, Demand], corrections: Mapping[str, Correction]
) -> Mapping[str, Demand]:
    """The demands with what the engine measured applied (by memory identity)."""
    if not corrections:
        return demands
    out = {}
    for uid, demand in demands.items():
        found = corrections.get(demand.spec.memory_key())
        if found is None or found.extra_bytes <= demand.correction_bytes:
            out[uid] = demand
        else:
            out[uid] = replace(
                demand, correction_bytes=found.extra_bytes, correction_source=found.describe()
            )
    return MappingProxyType(out)
