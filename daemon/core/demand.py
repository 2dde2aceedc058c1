"""What each desired model asks of a GPU: its resolved architecture and per-GPU memory claim.

``resolve_model`` turns a :class:`~daemon.core.desired.ModelSpec` (plus an already-read
``config.json`` mapping, if the spec names one) into a :class:`Demand`; ``claim_on`` answers how many
bytes the model would hold on a GPU of a given size under a given vLLM version's rules, with the
engine arguments that make it so. The ``estimate`` command and the config path both call these two
functions: one estimator.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from daemon.core import catalogue
from daemon.core.architecture import Architecture, ArchitectureError, architecture_from_hf_config
from daemon.core.desired import ModelSpec
from daemon.core.engines import FRACTION_ENGINES, Engine, default_model_format
from daemon.core.footprint import (
    EngineLimits,
    Footprint,
    QuantizationError,
    bits_per_weight,
    estimate_footprint,
    kv_cache_bytes_at,
    kv_cache_tokens_at,
    required_utilization,
    weights_bytes,
)
from daemon.core.units import GiB
from daemon.core.vllm_rules import UNKNOWN, Usage, VllmRules, profile_batch

# Context assumed for engines without pre-allocation when no max_model_len is given.
DEFAULT_CONTEXT_TOKENS = 4096
# Batch assumed for embedding/rerank engines (sentence-transformers' default batch of 32 sentences).
ENCODER_BATCH = 32
# Tokens per text assumed for encoders when no max_model_len is given (sentence-transformers pads
# each batch to its longest text; RAG chunks are usually at most a few hundred tokens).
ENCODER_DEFAULT_LEN = 512


_NEVER_FITS = 1 << 62  # bytes no GPU has


class ResolveError(ValueError):
    """The model's architecture or weights cannot be worked out; ``path`` is the config key to fix."""

    def __init__(self, path: str, message: str) -> None:
        self.path = path
        super().__init__(message)


@dataclass(frozen=True, kw_only=True)
class Demand:
    """A desired model, resolved: what it needs on each GPU it occupies."""

    uid: str
    spec: ModelSpec
    architecture: Architecture | None
    weights_per_gpu: int | None  # None: a fixed estimate_gib replaces the estimator
    gpus_needed: int  # GPUs on one worker: gpus x replicas (0 for CPU models)
    # What the engine proved the estimate missed, per GPU (core/corrections.py): added to the
    # overhead the engine takes before its KV cache. Never negative: memory errs on the safe side.
    correction_bytes: int = 0
    correction_source: str | None = None  # where the correction was measured, for plan and fit

    @property
    def tensor_parallel_size(self) -> int:
        return self.spec.placement.gpus

    @property
    def uses_fraction(self) -> bool:
        return self.spec.model_engine in FRACTION_ENGINES and self.spec.memory.estimate_gib is None


@dataclass(frozen=True, kw_only=True)
class Claim:
    """Bytes a model holds on one GPU of ``gpu_total_bytes``, or why it cannot fit any utilization.

    For fraction engines ``utilization`` is the smallest that satisfies the memory intent and
    ``bytes`` is ``utilization x total`` plus what the engine uses outside that budget.
    """

    bytes: int
    footprint: Footprint | None
    utilization: float | None = None
    max_model_len: int | None = None
    kv_tokens: int | None = None
    impossible: str | None = None
    # vLLM >= 0.10.2: the KV-cache bytes to pass as kv_cache_memory_bytes (the engine then sizes
    # its cache exactly, whatever its own profile says); None where the version does not take it.
    kv_cache_bytes: int | None = None
    rules: VllmRules | None = None  # the vLLM rules this claim was computed with (fraction engines)


def _architecture(spec: ModelSpec, hf_config: Mapping[str, Any] | None) -> Architecture | None:
    arch_spec = spec.architecture
    base: dict[str, Any] = {}
    params: int | None = None
    if hf_config is not None:
        base = dict(hf_config)
    else:
        name, size = spec.model_name, spec.model_size_in_billions
        if arch_spec.catalogue:
            name, _, size_text = arch_spec.catalogue.partition(":")
            size = size_text or size
        entry = catalogue.find(name, size)
        if entry is not None:
            base, params = dict(entry.config), entry.params
        elif arch_spec.catalogue:
            sizes = catalogue.sizes_for(name)
            hint = f" (sizes known: {', '.join(f'{s:g}' for s in sizes)})" if sizes else ""
            raise ResolveError(
                "architecture.catalogue", f"no catalogue entry {arch_spec.catalogue!r}{hint}"
            )
    base.update(arch_spec.fields)
    if not base:
        return None
    if arch_spec.params_billions is not None:
        params = round(arch_spec.params_billions * 1e9)
    try:
        return architecture_from_hf_config(base, params=params)
    except ArchitectureError as exc:
        raise ResolveError("architecture", f"incomplete architecture: {exc}") from exc


def resolve_model(
    uid: str, spec: ModelSpec, *, hf_config: Mapping[str, Any] | None = None
) -> Demand:
    """Resolve one model. Raises :class:`ResolveError` with the key path to fix."""
    arch = _architecture(spec, hf_config)
    gpus_needed = spec.placement.gpus * spec.replicas if spec.on_gpu else 0
    weights: int | None = None
    tp = spec.placement.gpus
    if spec.memory.estimate_gib is None and spec.on_gpu:
        if spec.architecture.weights_gib is not None:
            weights = round(spec.architecture.weights_gib * GiB)
        if arch is None:
            if weights is None:
                raise ResolveError(
                    "architecture",
                    f"model {spec.model_name!r} (size {spec.model_size_in_billions}) is not in the "
                    "bundled catalogue; give architecture.hf_config, architecture.fields or "
                    "memory.estimate_gib",
                )
            raise ResolveError(
                "architecture",
                "weights_gib alone is not enough: the KV cache "
                "needs the layer shape (hf_config or fields)",
            )
        if spec.model_engine in FRACTION_ENGINES and arch.num_attention_heads % tp:
            raise ResolveError(
                "placement.gpus",
                f"tensor-parallel size {tp} must divide the {arch.num_attention_heads} attention heads",
            )
        if weights is None:
            fmt = spec.model_format or default_model_format(spec.model_engine)
            dtype = arch.dtype_bytes
            if spec.model_engine in FRACTION_ENGINES:
                dtype = min(dtype, 2)  # vLLM's dtype "auto" serves fp32 checkpoints in 16 bit
            try:
                bits = bits_per_weight(fmt, spec.quantization, dtype_bytes=dtype)
            except QuantizationError as exc:
                raise ResolveError("quantization", str(exc)) from exc
            weights = weights_bytes(
                arch, bits=bits, tensor_parallel_size=tp, gguf=fmt.lower().startswith("gguf")
            )
    return Demand(
        uid=uid, spec=spec, architecture=arch, weights_per_gpu=weights, gpus_needed=gpus_needed
    )


def engine_limits(
    demand: Demand,
    *,
    rules: VllmRules = UNKNOWN,
    usage: Usage = Usage.XINFERENCE,
    gpu_total_bytes: int = 0,
    gpu_name: str = "",
) -> EngineLimits:
    """Batch limits the engine profiles with: the config's, else what this vLLM version picks when
    ``usage`` starts it on this GPU (vllm_rules.profile_batch); for other engines one batch of the
    intended length."""
    mem = demand.spec.memory
    arch = demand.architecture
    if demand.spec.model_engine in FRACTION_ENGINES:
        tokens, seqs = profile_batch(
            rules,
            usage=usage,
            max_model_len=wanted_context(demand),
            gpu_total_bytes=gpu_total_bytes,
            gpu_name=gpu_name,
            multimodal=bool(arch and arch.is_multimodal),
            pooling=demand.spec.model_type in ("embedding", "rerank"),
            sliding_window=bool(arch and arch.sliding_layers),
            max_num_batched_tokens=mem.max_num_batched_tokens,
            max_num_seqs=mem.max_num_seqs,
        )
        return EngineLimits(
            max_num_batched_tokens=tokens, max_num_seqs=seqs, enforce_eager=mem.enforce_eager
        )
    if arch is not None and arch.is_encoder:
        length = mem.max_model_len or min(arch.max_position_embeddings or 512, ENCODER_DEFAULT_LEN)
        return EngineLimits(max_num_batched_tokens=length, max_num_seqs=ENCODER_BATCH)
    length = mem.max_model_len or DEFAULT_CONTEXT_TOKENS
    return EngineLimits(max_num_batched_tokens=length, max_num_seqs=1)


def _rules_for(demand: Demand, rules: VllmRules) -> VllmRules:
    """The rules the footprint is computed with: vLLM's for this version, with the exact-KV variant
    where ``kv_cache_memory_bytes`` will be passed; the conservative set for other fraction engines
    (SGLang's own accounting is not modelled)."""
    if demand.spec.model_engine != Engine.VLLM:
        return UNKNOWN
    return rules.with_exact_kv() if rules.kv_cache_memory_bytes else rules


def footprint_of(
    demand: Demand,
    *,
    rules: VllmRules = UNKNOWN,
    usage: Usage = Usage.XINFERENCE,
    gpu_total_bytes: int = 0,
    gpu_name: str = "",
) -> Footprint | None:
    """The estimator's footprint (None for fixed estimates and CPU models)."""
    if demand.architecture is None or demand.weights_per_gpu is None:
        return None
    kv_dtype = 1 if demand.spec.memory.kv_cache_dtype.startswith("fp8") else None
    applied = _rules_for(demand, rules)
    fp = estimate_footprint(
        demand.architecture,
        engine=demand.spec.model_engine or "",
        weights=demand.weights_per_gpu,
        tensor_parallel_size=demand.tensor_parallel_size,
        kv_dtype_bytes=kv_dtype,
        limits=engine_limits(
            demand, rules=applied, usage=usage, gpu_total_bytes=gpu_total_bytes, gpu_name=gpu_name
        ),
        rules=applied,
    )
    if demand.correction_bytes > 0:
        fp = replace(fp, correction_bytes=demand.correction_bytes)
    return fp


def wanted_context(demand: Demand) -> int:
    """Tokens per sequence the model must hold: max_model_len, else what the engine will default to."""
    mem = demand.spec.memory
    if mem.max_model_len is not None:
        return mem.max_model_len
    arch = demand.architecture
    if demand.spec.model_engine in FRACTION_ENGINES and arch and arch.max_position_embeddings:
        return arch.max_position_embeddings  # vLLM derives max_model_len from the config
    return DEFAULT_CONTEXT_TOKENS


def claim_on(
    demand: Demand,
    gpu_total_bytes: int,
    *,
    rules: VllmRules = UNKNOWN,
    usage: Usage = Usage.XINFERENCE,
    gpu_name: str = "",
) -> Claim:
    """The smallest claim that satisfies the model's memory intent on a GPU of this size, under
    ``rules`` (the worker's vLLM version; unknown: the most conservative)."""
    mem = demand.spec.memory
    if gpu_total_bytes <= 0:  # a malformed report: nothing can be placed on it
        return Claim(bytes=_NEVER_FITS, footprint=None, impossible="the GPU reports no memory")
    if mem.estimate_gib is not None:
        return Claim(bytes=round(mem.estimate_gib * GiB), footprint=None)
    fp = footprint_of(
        demand, rules=rules, usage=usage, gpu_total_bytes=gpu_total_bytes, gpu_name=gpu_name
    )
    if fp is None:
        return Claim(bytes=0, footprint=None)
    context = wanted_context(demand)
    seqs = mem.concurrent_sequences
    if not demand.uses_fraction:
        need = fp.weights_bytes + fp.overhead_bytes
        need += fp.kv.bytes_for_sequences(context, seqs)
        return Claim(bytes=need, footprint=fp, max_model_len=context)
    applied = _rules_for(demand, rules)
    chunk = engine_limits(
        demand, rules=applied, usage=usage, gpu_total_bytes=gpu_total_bytes, gpu_name=gpu_name
    ).max_num_batched_tokens
    needed_util = required_utilization(
        fp, gpu_total_bytes=gpu_total_bytes, max_model_len=context, sequences=seqs, chunk=chunk
    )
    util = mem.gpu_memory_utilization
    if isinstance(util, float):
        if util + 1e-9 < needed_util:
            tokens = kv_cache_tokens_at(fp, utilization=util, gpu_total_bytes=gpu_total_bytes)
            return Claim(
                bytes=_fraction_bytes(fp, util, gpu_total_bytes),
                footprint=fp,
                utilization=util,
                max_model_len=context,
                kv_tokens=tokens,
                impossible=f"pinned gpu_memory_utilization {util} leaves room for {tokens} KV "
                f"tokens; {seqs} x {context} tokens need at least {needed_util}",
                rules=applied,
            )
        needed_util = util
    impossible = None
    if needed_util > 1.0:
        impossible = (
            f"{seqs} x {context} tokens need gpu_memory_utilization {needed_util} of a "
            f"{gpu_total_bytes / GiB:.1f} GiB GPU (more than the whole GPU)"
        )
    return _fraction_claim(
        fp,
        needed_util,
        gpu_total_bytes,
        context=context,
        rules=applied,
        impossible=impossible,
    )


def _fraction_claim(
    fp: Footprint,
    utilization: float,
    gpu_total_bytes: int,
    *,
    context: int | None,
    rules: VllmRules | None,
    impossible: str | None = None,
) -> Claim:
    exact = rules is not None and rules.kv_cache_memory_bytes and impossible is None
    kv_bytes = kv_cache_bytes_at(fp, utilization=utilization, gpu_total_bytes=gpu_total_bytes)
    return Claim(
        bytes=_fraction_bytes(fp, utilization, gpu_total_bytes),
        footprint=fp,
        utilization=utilization,
        max_model_len=context,
        kv_tokens=fp.kv.tokens_that_fit(kv_bytes),
        impossible=impossible,
        kv_cache_bytes=kv_bytes if exact and kv_bytes > 0 else None,
        rules=rules,
    )


def _fraction_bytes(fp: Footprint, utilization: float, gpu_total_bytes: int) -> int:
    return math.ceil(utilization * gpu_total_bytes) + fp.outside_budget_bytes


def grown_claim(base: Claim, *, extra_bytes: int, gpu_total_bytes: int) -> Claim:
    """A fraction engine given ``extra_bytes`` more on each GPU (utilization 'auto')."""
    if base.footprint is None or base.utilization is None or extra_bytes <= 0:
        return base
    step_bytes = gpu_total_bytes / 1000
    extra_util = math.floor(extra_bytes / step_bytes) / 1000
    util = round(min(1.0, base.utilization + extra_util), 3)
    return _fraction_claim(
        base.footprint, util, gpu_total_bytes, context=base.max_model_len, rules=base.rules
    )
