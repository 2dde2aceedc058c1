"""What would fit instead of a refused model: the largest ``max_model_len``, the smallest
tensor-parallel size, an fp8 KV cache, 4-bit weights. Each alternative is one change of config keys,
offered only when the model changed that way fits where it may run now (the caller says, with the
same claims admission uses).

Built on the estimator's public functions (``claim_on`` through the caller's ``fits``,
``resolve_model``), never on its formulas, so the suggestions follow the estimator when it changes.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import replace
from types import MappingProxyType
from typing import Any

from daemon.core.demand import Demand, ResolveError, resolve_model, wanted_context
from daemon.core.engines import FRACTION_ENGINES

Fits = Callable[[Demand], bool]
Change = Mapping[str, Any]  # dotted config key -> value, e.g. {"memory.max_model_len": 8192}

MIN_MAX_MODEL_LEN = 16  # the config's own lower bound (desired.MemorySpec.max_model_len)
_SIXTEEN_BIT = {None, "none", "bf16", "fp16", "float16", "bfloat16"}


def _with_memory(demand: Demand, **memory: Any) -> Demand:
    spec = demand.spec
    new = spec.model_copy(update={"memory": spec.memory.model_copy(update=memory)})
    return replace(demand, spec=new)


def largest_max_model_len(demand: Demand, fits: Fits) -> int | None:
    """The largest ``max_model_len`` below the wanted one with which the model fits, or None."""
    if demand.architecture is None or demand.spec.memory.estimate_gib is not None:
        return None  # a fixed need does not depend on the context
    wanted = wanted_context(demand)
    lo, hi = MIN_MAX_MODEL_LEN, wanted - 1
    if hi < lo or not fits(_with_memory(demand, max_model_len=lo)):
        return None
    while lo < hi:  # the claim grows with the context: binary search the largest that fits
        mid = (lo + hi + 1) // 2
        if fits(_with_memory(demand, max_model_len=mid)):
            lo = mid
        else:
            hi = mid - 1
    return lo


def with_tensor_parallel(demand: Demand, size: int) -> Demand | None:
    """The model split over ``size`` GPUs per replica (None when it cannot be split so): each GPU
    holds 1/size of the weights (the definition of the tensor-parallel split)."""
    spec = demand.spec
    arch = demand.architecture
    if arch is None or demand.weights_per_gpu is None or spec.placement.gpu_indexes is not None:
        return None
    if spec.model_engine in FRACTION_ENGINES and arch.num_attention_heads % size:
        return None  # vLLM/SGLang split the attention heads evenly
    current = spec.placement.gpus
    new_spec = spec.model_copy(
        update={"placement": spec.placement.model_copy(update={"gpus": size})}
    )
    return replace(
        demand,
        spec=new_spec,
        gpus_needed=size * spec.replicas,
        weights_per_gpu=math.ceil(demand.weights_per_gpu * current / size),
    )


def smallest_tensor_parallel(demand: Demand, fits: Fits, *, most_gpus: int) -> int | None:
    """The smallest tensor-parallel size (a power of two, above today's) that fits, or None."""
    if not demand.spec.on_gpu or demand.spec.model_type != "LLM":
        return None
    size = demand.spec.placement.gpus * 2
    while size * demand.spec.replicas <= most_gpus:
        variant = with_tensor_parallel(demand, size)
        if variant is not None and fits(variant):
            return size
        size *= 2
    return None


def _four_bit(demand: Demand) -> Demand | None:
    """The same model as a 4-bit AWQ build (only for a shape the config describes itself: the
    catalogue or inline fields; a config.json read from a file is not at hand here)."""
    spec = demand.spec
    if (
        spec.model_engine not in FRACTION_ENGINES
        or spec.architecture.hf_config is not None
        or spec.architecture.weights_gib is not None
        or (spec.model_format or "pytorch").lower() != "pytorch"
        or (spec.quantization.lower() if spec.quantization else None) not in _SIXTEEN_BIT
    ):
        return None
    new_spec = spec.model_copy(update={"model_format": "awq", "quantization": "Int4"})
    try:
        variant = resolve_model(demand.uid, new_spec)
    except ResolveError:
        return None
    return replace(
        variant,
        correction_bytes=demand.correction_bytes,
        correction_source=demand.correction_source,
    )


def alternatives(demand: Demand, fits: Fits, *, most_gpus: int) -> tuple[Change, ...]:
    """Each single change of config keys with which the refused ``demand`` would fit now."""
    out: list[dict[str, Any]] = []
    length = largest_max_model_len(demand, fits)
    if length is not None:
        out.append({"memory.max_model_len": length})
    tp = smallest_tensor_parallel(demand, fits, most_gpus=most_gpus)
    if tp is not None:
        out.append({"placement.gpus": tp})
    arch = demand.architecture
    mem = demand.spec.memory
    if (
        demand.uses_fraction
        and arch is not None
        and not arch.is_encoder
        and mem.kv_cache_dtype == "auto"
        and fits(_with_memory(demand, kv_cache_dtype="fp8"))
    ):
        out.append({"memory.kv_cache_dtype": "fp8"})
    four_bit = _four_bit(demand)
    if four_bit is not None and fits(four_bit):
        out.append({"model_format": "awq", "quantization": "Int4"})
    return tuple(MappingProxyType(c) for c in out)


def change_text(change: Change) -> str:
    """``memory.max_model_len = 8192`` (TOML spelling; several keys joined by ' and ')."""
    parts = []
    for key, value in change.items():
        shown = f'"{value}"' if isinstance(value, str) else str(value).lower()
        if isinstance(value, int) and not isinstance(value, bool):
            shown = str(value)
        parts.append(f"{key} = {shown}")
    return " and ".join(parts)
