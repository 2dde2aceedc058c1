"""GPU-memory estimate for one model instance on one GPU: weights + KV cache + runtime overhead.

Pure functions over :class:`~daemon.core.architecture.Architecture`. Every figure is per GPU (after
the tensor-parallel split). The formulas and their calibration are explained in ``docs/estimator.md``;
what vLLM counts inside its budget, version by version, and the fitted constants live in
``vllm_rules.py`` (checked against the public start-up logs of ``tests/data/vllm_logs.json`` by
``benchmarks/calibrate_estimator.py`` and its test).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from daemon.core.architecture import Architecture, embedding_params, estimate_params
from daemon.core.engines import FRACTION_ENGINES
from daemon.core.units import MiB
from daemon.core.vllm_rules import (
    COMMUNICATION_BYTES,
    CUDA_GRAPH_EXCESS_BYTES,
    UNKNOWN,
    VllmRules,
    Where,
    cuda_graph_bytes,
)

BLOCK_SIZE = 16  # vLLM's paged-attention block, tokens (Xinference passes block_size=16)
# Each CUDA process before it allocates anything: 610 MiB measured on an H200 (driver 580), 676 MiB
# once cuBLAS is loaded by the first matmul (benchmarks/gpu/measure.py, docs/estimator.md).
CUDA_CONTEXT_BYTES = 680 * MiB
# measured: memory outside PyTorch's allocator of an eager (transformers, encoder) process.
NON_TORCH_BYTES_SINGLE = 256 * MiB


class QuantizationError(ValueError):
    """An unknown weight format or quantization name."""


# Bits per weight of the quantized (linear) layers. Token embeddings and the output head stay
# 16-bit in AWQ/GPTQ/FP8/bitsandbytes checkpoints; GGUF quantizes them too.
_LINEAR_BITS: dict[str, float] = {
    "none": 16.0,
    "bf16": 16.0,
    "fp16": 16.0,
    "f16": 16.0,
    "float16": 16.0,
    "bfloat16": 16.0,
    "fp32": 32.0,
    "f32": 32.0,
    "float32": 32.0,
    "fp8": 8.0,
    "fp8_e4m3": 8.0,
    "int8": 8.25,
    "8-bit": 8.25,
    "int4": 4.25,
    "4-bit": 4.25,
    "awq": 4.25,
    "gptq": 4.25,
    "nf4": 4.5,
    "w8a8": 8.0,
    "w4a16": 4.25,
}
# GGUF: whole-file bits per weight (llama.cpp's quantize table; k-quants mix block types).
_GGUF_BITS: dict[str, float] = {
    "q2_k": 3.0,
    "q3_k_s": 3.5,
    "q3_k_m": 3.9,
    "q3_k_l": 4.3,
    "iq4_xs": 4.25,
    "iq4_nl": 4.5,
    "q4_0": 4.55,
    "q4_1": 5.0,
    "q4_k_s": 4.6,
    "q4_k_m": 4.85,
    "q5_0": 5.55,
    "q5_1": 6.0,
    "q5_k_s": 5.55,
    "q5_k_m": 5.7,
    "q6_k": 6.6,
    "q8_0": 8.5,
    "f16": 16.0,
    "bf16": 16.0,
}


def known_quantizations() -> tuple[str, ...]:
    """Every quantization name :func:`bits_per_weight` understands (for help texts and errors)."""
    return tuple(sorted(set(_LINEAR_BITS) | set(_GGUF_BITS)))


def bits_per_weight(model_format: str, quantization: str | None, *, dtype_bytes: int = 2) -> float:
    """Bits per weight for Xinference's (``model_format``, ``quantization``) pair."""
    fmt = model_format.lower()
    quant = (quantization or "none").lower().replace("-", "_") if quantization else "none"
    quant = {"4_bit": "4-bit", "8_bit": "8-bit"}.get(quant, quant)
    if fmt.startswith("gguf"):
        if quant in _GGUF_BITS:
            return _GGUF_BITS[quant]
        raise QuantizationError(
            f"unknown GGUF quantization {quantization!r}; known: {', '.join(sorted(_GGUF_BITS))}"
        )
    if fmt in {"awq", "gptq"} and quant in {"none", "int4", "4-bit"}:
        return _LINEAR_BITS["int4"]
    if fmt == "fp8" and quant == "none":
        return 8.0
    if quant in _LINEAR_BITS:
        if quant == "none":
            return 8.0 * dtype_bytes
        return _LINEAR_BITS[quant]
    raise QuantizationError(
        f"unknown quantization {quantization!r} for format {model_format!r}; "
        f"known: {', '.join(sorted(_LINEAR_BITS))}"
    )


def weights_bytes(
    arch: Architecture, *, bits: float, tensor_parallel_size: int = 1, gguf: bool = False
) -> int:
    """Weight bytes on each GPU: linear layers at ``bits``, embeddings/head at 16 bit unless GGUF."""
    total = estimate_params(arch)
    if bits >= 16 or gguf:
        whole = total * bits / 8
    else:
        emb = min(embedding_params(arch), total)
        whole = (total - emb) * bits / 8 + emb * 2
    return math.ceil(whole / tensor_parallel_size)


@dataclass(frozen=True, kw_only=True)
class KvLayout:
    """KV-cache bytes per token on one GPU, split by attention kind.

    ``full_bytes_per_token`` covers layers that keep every token; ``sliding_bytes_per_token`` covers
    sliding-window layers, which keep at most ``window`` (+ one prefill chunk) tokens per sequence
    when the engine caps them (``window`` is None when it does not: every layer keeps every token).
    ``full_layers`` and ``sliding_layers`` count the layers, for vLLM's grouped token report.
    """

    full_bytes_per_token: int
    sliding_bytes_per_token: int = 0
    window: int | None = None
    full_layers: int = 0
    sliding_layers: int = 0

    @property
    def bytes_per_token(self) -> int:
        """What one more token costs while a sequence is shorter than the window."""
        return self.full_bytes_per_token + self.sliding_bytes_per_token

    def bytes_for_sequences(self, tokens: int, sequences: int, *, chunk: int = 0) -> int:
        """Memory for ``sequences`` sequences of ``tokens`` tokens, rounded up to whole blocks
        (vLLM's ``max_memory_usage_bytes``: a sliding layer keeps ``window - 1 + chunk`` tokens,
        in blocks, plus one block)."""
        blocks_full = math.ceil(tokens / BLOCK_SIZE)
        if self.window is None:
            return blocks_full * BLOCK_SIZE * self.bytes_per_token * sequences
        need = blocks_full * BLOCK_SIZE * self.full_bytes_per_token
        if self.sliding_bytes_per_token:
            kept = min(tokens, self.window - 1 + chunk) if chunk else min(tokens, self.window)
            blocks_sliding = math.ceil(kept / BLOCK_SIZE) + 1
            need += blocks_sliding * BLOCK_SIZE * self.sliding_bytes_per_token
        return need * sequences

    def tokens_that_fit(self, kv_bytes: int) -> int:
        """Tokens of cache that ``kv_bytes`` hold, as vLLM reports them ("GPU KV cache size").

        One block type: whole blocks of every layer. Full and capped sliding layers (vLLM's hybrid
        manager, 0.11-0.23 report): layers are grouped by the smaller count, every group draws
        blocks from one pool, and the report divides the pool by the number of groups
        (docs/vllm-versions.md section 6)."""
        if kv_bytes <= 0 or self.bytes_per_token <= 0:
            return 0
        hybrid = self.window is not None and self.full_layers and self.sliding_layers
        if not hybrid:
            return int(kv_bytes // (BLOCK_SIZE * self.bytes_per_token)) * BLOCK_SIZE
        group = min(self.full_layers, self.sliding_layers)
        per_layer = self.full_bytes_per_token // self.full_layers
        groups = math.ceil(self.full_layers / group) + math.ceil(self.sliding_layers / group)
        blocks = kv_bytes // (BLOCK_SIZE * per_layer * group)
        return int(blocks // groups) * BLOCK_SIZE


def kv_layout(
    arch: Architecture,
    *,
    kv_dtype_bytes: int | None = None,
    tensor_parallel_size: int = 1,
    sliding_window_capped: bool = True,
) -> KvLayout:
    """KV layout on one GPU.

    Standard and grouped-query attention: ``2 x layers x kv_heads x head_dim x bytes``, with the KV
    heads split across tensor-parallel ranks (replicated when there are fewer heads than ranks).
    MLA: ``layers x (kv_lora_rank + qk_rope_head_dim) x bytes``, the same on every rank. Sliding
    layers keep only their window when the engine caps them (``sliding_window_capped``).
    """
    dtype = kv_dtype_bytes or arch.dtype_bytes
    if arch.is_encoder:
        return KvLayout(full_bytes_per_token=0)  # encoders keep no cache between requests
    if arch.uses_mla:
        per_layer = ((arch.kv_lora_rank or 0) + (arch.qk_rope_head_dim or 0)) * dtype
        return KvLayout(
            full_bytes_per_token=arch.num_layers * per_layer, full_layers=arch.num_layers
        )
    heads_per_rank = max(1, arch.num_kv_heads // tensor_parallel_size)
    per_layer = 2 * heads_per_rank * arch.head_dim * dtype
    return KvLayout(
        full_bytes_per_token=arch.full_attention_layers * per_layer,
        sliding_bytes_per_token=arch.sliding_layers * per_layer,
        window=arch.sliding_window if arch.sliding_layers and sliding_window_capped else None,
        full_layers=arch.full_attention_layers,
        sliding_layers=arch.sliding_layers,
    )


@dataclass(frozen=True, kw_only=True)
class EngineLimits:
    """Scheduler limits that size the engine's profiling run (and so its activation peak)."""

    max_num_batched_tokens: int
    max_num_seqs: int
    enforce_eager: bool = False


# measured: allocator slack over the per-token figures of eager (transformers, encoder) forwards.
ACT_SLACK_EAGER = 1.03


def forward_bytes_per_token(
    arch: Architecture, *, tensor_parallel_size: int = 1, moe_tokens_share: float = 1.0
) -> float:
    """Bytes one batched token holds at the peak of a vLLM forward pass (16-bit activations).

    Hidden state and residual (2 x hidden); a dense MLP's fused gate/up output and activated product
    (3 x intermediate / tp); a MoE layer's fused buffers instead (docs/vllm-versions.md 5.3: per
    token and expert ``max(2 x moe_inter / tp, hidden) + max(moe_inter / tp, hidden)``, for the
    ``moe_tokens_share`` of the batch one chunk holds), its fp32 router logits and shared experts.
    """
    tp = tensor_parallel_size
    per_token = 2.0 * 2 * arch.hidden_size
    if arch.num_experts and arch.experts_per_token:
        inter = (arch.moe_intermediate_size or arch.intermediate_size) / tp
        fused = arch.experts_per_token * (
            max(2 * inter, arch.hidden_size) + max(inter, arch.hidden_size)
        )
        per_token += 2 * fused * moe_tokens_share + 4 * arch.num_experts
        per_token += 2 * 3 * arch.shared_expert_intermediate_size / tp
    else:
        per_token += 2 * 3 * arch.intermediate_size / tp
    return per_token


def vllm_activation_bytes(
    arch: Architecture,
    limits: EngineLimits,
    *,
    tensor_parallel_size: int = 1,
    rules: VllmRules = UNKNOWN,
) -> int:
    """Peak activation of vLLM's profiling run: the forward pass over ``max_num_batched_tokens``
    tokens, or the dummy sampler over ``max_num_seqs`` rows of fp32 logits (its top-k/top-p sort
    keeps several copies), whichever is larger, plus the hidden states the sampler reads."""
    cal = rules.calibration
    tokens = limits.max_num_batched_tokens
    chunk = rules.moe_chunk_tokens
    share = 1.0 if chunk is None or tokens <= chunk else chunk / tokens
    forward = (
        cal.forward_factor
        * tokens
        * forward_bytes_per_token(
            arch, tensor_parallel_size=tensor_parallel_size, moe_tokens_share=share
        )
    )
    sampler = cal.sampler_copies * 4 * min(limits.max_num_seqs, tokens) * arch.vocab_size
    kept = 2 * tokens * arch.hidden_size
    return math.ceil(max(forward, sampler + kept))


@dataclass(frozen=True, kw_only=True)
class Footprint:
    """What one model instance needs on each GPU it uses.

    ``budgeted_overhead_bytes`` is what a fraction engine (vLLM) subtracts from its budget before the
    KV cache; ``outside_budget_bytes`` is what it holds on top of ``utilization x total``. Where the
    CUDA context, the communication buffers and the CUDA graphs count depends on the vLLM version
    (``vllm_rules.py``): ``EITHER`` counts them on both sides. For other engines everything adds to
    the fixed need.
    """

    engine: str
    weights_bytes: int
    kv: KvLayout
    activation_bytes: int
    non_torch_bytes: int
    cuda_graph_bytes: int
    cuda_context_bytes: int
    communication_bytes: int = 0  # NCCL / custom all-reduce buffers held outside the budget
    cuda_context: Where = Where.OUTSIDE
    cuda_graphs: Where = Where.OUTSIDE
    cuda_graph_excess_bytes: int = 0  # graphs beyond vLLM's own estimate (0.20+), held on top
    rules_key: str = ""  # the vllm_rules row this was computed with ("" for other engines)
    # Measured by the engine on this model, GPU model and engine version (core/corrections.py):
    # what the terms above missed. Counted inside the engine's budget, before the KV cache.
    correction_bytes: int = 0

    @property
    def kv_bytes_per_token(self) -> int:
        return self.kv.bytes_per_token

    @property
    def budgeted_overhead_bytes(self) -> int:
        inside = self.activation_bytes + self.non_torch_bytes + self.correction_bytes
        if self.cuda_context.inside and self.uses_fraction:
            inside += self.cuda_context_bytes
        if self.cuda_graphs.inside and self.uses_fraction:
            inside += self.cuda_graph_bytes
        return inside

    @property
    def outside_budget_bytes(self) -> int:
        outside = self.communication_bytes + self.cuda_graph_excess_bytes
        if self.cuda_context.outside or not self.uses_fraction:
            outside += self.cuda_context_bytes
        if self.cuda_graphs.outside or not self.uses_fraction:
            outside += self.cuda_graph_bytes
        return outside

    @property
    def overhead_bytes(self) -> int:
        return self.budgeted_overhead_bytes + self.outside_budget_bytes

    @property
    def uses_fraction(self) -> bool:
        return self.engine in FRACTION_ENGINES


def estimate_footprint(
    arch: Architecture,
    *,
    engine: str,
    weights: int,
    tensor_parallel_size: int = 1,
    kv_dtype_bytes: int | None = None,
    limits: EngineLimits,
    rules: VllmRules = UNKNOWN,
) -> Footprint:
    """Per-GPU footprint of one instance of ``arch`` served by ``engine``; ``rules`` say how the
    fraction engine's version accounts for memory (unknown: the most conservative)."""
    tp = tensor_parallel_size
    if engine in FRACTION_ENGINES:
        kv = kv_layout(
            arch,
            kv_dtype_bytes=kv_dtype_bytes,
            tensor_parallel_size=tp,
            sliding_window_capped=rules.sliding_window_capped,
        )
        cal = rules.calibration
        graphs = cuda_graph_bytes(arch.num_layers, enforce_eager=limits.enforce_eager)
        excess = CUDA_GRAPH_EXCESS_BYTES if graphs and rules.cuda_graphs is Where.INSIDE else 0
        return Footprint(
            engine=engine,
            weights_bytes=weights,
            kv=kv,
            activation_bytes=vllm_activation_bytes(
                arch, limits, tensor_parallel_size=tp, rules=rules
            ),
            non_torch_bytes=cal.non_torch_parallel_bytes if tp > 1 else cal.non_torch_single_bytes,
            cuda_graph_bytes=graphs,
            cuda_context_bytes=CUDA_CONTEXT_BYTES,
            communication_bytes=COMMUNICATION_BYTES
            if tp > 1 and rules.communication.outside
            else 0,
            cuda_context=rules.cuda_context,
            cuda_graphs=rules.cuda_graphs,
            cuda_graph_excess_bytes=excess,
            rules_key=rules.key,
        )
    kv = kv_layout(arch, kv_dtype_bytes=kv_dtype_bytes, tensor_parallel_size=tp)
    # Engines that allocate as they go: the activation of one batch at the intended length.
    # Measured on an H100 and an H200 (docs/estimator.md): a transformers decoder forward holds 8 bytes per
    # hidden unit and 6 per intermediate unit per token (bf16); an fp32 encoder 16 and 7. PyTorch's
    # SDPA kernels never materialise the (heads x L x L) scores, so nothing grows with L squared.
    act_tokens = limits.max_num_batched_tokens
    per_token: float
    if arch.is_encoder:
        tokens = act_tokens * limits.max_num_seqs  # a batch of max_num_seqs texts
        per_token = arch.hidden_size * 16 + arch.intermediate_size * 7
        activation = ACT_SLACK_EAGER * tokens * per_token
    else:
        per_token = arch.hidden_size * 8 + arch.intermediate_size * 6 / tp
        activation = ACT_SLACK_EAGER * act_tokens * per_token
        activation += 4 * arch.vocab_size * min(limits.max_num_seqs, act_tokens)
    return Footprint(
        engine=engine,
        weights_bytes=weights,
        kv=kv,
        activation_bytes=math.ceil(activation),
        non_torch_bytes=NON_TORCH_BYTES_SINGLE,
        cuda_graph_bytes=0,
        cuda_context_bytes=CUDA_CONTEXT_BYTES,
    )


# --- the two directions users need ---------------------------------------------------------------


def kv_cache_bytes_at(fp: Footprint, *, utilization: float, gpu_total_bytes: int) -> int:
    """KV-cache bytes a fraction engine gets at ``utilization`` (may be negative: does not fit)."""
    return math.floor(utilization * gpu_total_bytes) - fp.weights_bytes - fp.budgeted_overhead_bytes


def kv_cache_tokens_at(fp: Footprint, *, utilization: float, gpu_total_bytes: int) -> int:
    """KV-cache tokens vLLM would report at ``utilization`` ("GPU KV cache size: N tokens")."""
    kv_bytes = kv_cache_bytes_at(fp, utilization=utilization, gpu_total_bytes=gpu_total_bytes)
    return fp.kv.tokens_that_fit(kv_bytes)


def kv_bytes_needed(fp: Footprint, *, max_model_len: int, sequences: int, chunk: int = 0) -> int:
    """KV bytes for ``sequences`` concurrent sequences of ``max_model_len`` tokens."""
    return fp.kv.bytes_for_sequences(max_model_len, sequences, chunk=chunk)


UTILIZATION_STEP = 0.001  # computed utilizations are rounded up to this step


def required_utilization(
    fp: Footprint, *, gpu_total_bytes: int, max_model_len: int, sequences: int = 1, chunk: int = 0
) -> float:
    """Smallest ``gpu_memory_utilization`` whose KV cache holds the wanted sequences.

    May exceed 1.0, meaning no utilization fits on this GPU.
    """
    need = fp.weights_bytes + fp.budgeted_overhead_bytes
    need += kv_bytes_needed(fp, max_model_len=max_model_len, sequences=sequences, chunk=chunk)
    if gpu_total_bytes <= 0:
        return math.inf  # a GPU that reports no memory fits nothing
    steps = math.ceil(need / gpu_total_bytes / UTILIZATION_STEP - 1e-9)
    return round(steps * UTILIZATION_STEP, 3)


def max_model_len_at(
    fp: Footprint, *, utilization: float, gpu_total_bytes: int, sequences: int = 1
) -> int:
    """Largest ``max_model_len`` whose ``sequences`` sequences fit at ``utilization`` (0: none)."""
    kv_bytes = kv_cache_bytes_at(fp, utilization=utilization, gpu_total_bytes=gpu_total_bytes)
    if kv_bytes <= 0:
        return 0
    if fp.kv.bytes_per_token == 0:
        return 1 << 31
    lo, hi = 0, max(1, kv_bytes // max(fp.kv.full_bytes_per_token, 1) + BLOCK_SIZE)
    while lo < hi:  # bytes_for_sequences is monotone in tokens: binary search the largest fit
        mid = (lo + hi + 1) // 2
        if fp.kv.bytes_for_sequences(mid, sequences) <= kv_bytes:
            lo = mid
        else:
            hi = mid - 1
    return lo
