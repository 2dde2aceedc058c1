"""The memory estimator's formulas, against figures worked out by hand and vLLM's own logs."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from daemon.core.architecture import architecture_from_hf_config
from daemon.core.engines import Engine
from daemon.core.footprint import (
    BLOCK_SIZE,
    EngineLimits,
    QuantizationError,
    bits_per_weight,
    estimate_footprint,
    kv_cache_tokens_at,
    kv_layout,
    max_model_len_at,
    required_utilization,
    weights_bytes,
)
from daemon.core.units import GiB
from daemon.core.vllm_rules import rules_for
from tests.unit.builders import llama_3_8b_hf_config

LLAMA_8B = architecture_from_hf_config(llama_3_8b_hf_config())
QWEN3_14B = architecture_from_hf_config(
    {
        "model_type": "qwen3",
        "num_hidden_layers": 40,
        "hidden_size": 5120,
        "num_attention_heads": 40,
        "num_key_value_heads": 8,
        "head_dim": 128,
        "intermediate_size": 17408,
        "vocab_size": 151936,
    }
)
DEEPSEEK_V3 = architecture_from_hf_config(
    {
        "model_type": "deepseek_v3",
        "num_hidden_layers": 61,
        "hidden_size": 7168,
        "num_attention_heads": 128,
        "num_key_value_heads": 128,
        "kv_lora_rank": 512,
        "qk_rope_head_dim": 64,
        "intermediate_size": 18432,
        "vocab_size": 129280,
    }
)
LIMITS = EngineLimits(max_num_batched_tokens=2048, max_num_seqs=256)


def test_kv_bytes_per_token_for_grouped_query_attention() -> None:
    # 2 (K and V) x 32 layers x 8 KV heads x 128 x 2 bytes
    assert kv_layout(LLAMA_8B).bytes_per_token == 131072


def test_qwen3_14b_matches_the_cache_vllm_reported() -> None:
    """lmcache#1739: 6.51 GiB of KV cache held 42,656 tokens."""
    layout = kv_layout(QWEN3_14B)
    assert layout.bytes_per_token == 163840
    assert layout.tokens_that_fit(round(6.51 * GiB)) == pytest.approx(42656, rel=0.001)


def test_tensor_parallel_splits_kv_heads_and_replicates_when_fewer_than_ranks() -> None:
    assert kv_layout(LLAMA_8B, tensor_parallel_size=2).bytes_per_token == 131072 // 2
    # 8 KV heads over 16 ranks: each rank still holds one head
    assert kv_layout(LLAMA_8B, tensor_parallel_size=16).bytes_per_token == 131072 // 8


def test_fp8_kv_cache_halves_the_bytes() -> None:
    assert kv_layout(LLAMA_8B, kv_dtype_bytes=1).bytes_per_token == 65536


def test_mla_stores_one_latent_per_layer_not_split_by_tensor_parallel() -> None:
    # 61 layers x (512 + 64) x 2 bytes
    assert kv_layout(DEEPSEEK_V3).bytes_per_token == 70272
    assert kv_layout(DEEPSEEK_V3, tensor_parallel_size=8).bytes_per_token == 70272


def test_sliding_window_layers_hold_at_most_the_window() -> None:
    gemma = architecture_from_hf_config(
        {
            "model_type": "gemma3_text",
            "num_hidden_layers": 6,
            "hidden_size": 1024,
            "num_attention_heads": 4,
            "num_key_value_heads": 1,
            "head_dim": 256,
            "intermediate_size": 4096,
            "vocab_size": 1000,
            "sliding_window": 512,
            "sliding_window_pattern": 6,
        }
    )
    layout = kv_layout(gemma)
    per_layer = 2 * 1 * 256 * 2
    assert layout.full_bytes_per_token == per_layer
    assert layout.sliding_bytes_per_token == 5 * per_layer
    long_context = layout.bytes_for_sequences(32768, 1)
    # 5 sliding layers keep (512/16 + 1) blocks, the full layer keeps all 32768 tokens
    assert long_context == 32768 * per_layer + (512 // BLOCK_SIZE + 1) * BLOCK_SIZE * 5 * per_layer


@pytest.mark.parametrize(
    ("fmt", "quant", "bits"),
    [
        ("pytorch", "none", 16.0),
        ("pytorch", None, 16.0),
        ("awq", "Int4", 4.25),
        ("gptq", "Int8", 8.25),
        ("fp8", None, 8.0),
        ("ggufv2", "Q4_K_M", 4.85),
        ("ggufv2", "q8_0", 8.5),
        ("pytorch", "4-bit", 4.25),
    ],
)
def test_bits_per_weight(fmt: str, quant: str | None, bits: float) -> None:
    assert bits_per_weight(fmt, quant) == bits


def test_unknown_quantization_is_an_error_with_the_known_names() -> None:
    with pytest.raises(QuantizationError, match="q4_k_m"):
        bits_per_weight("ggufv2", "Q9_Z")


def test_awq_keeps_embeddings_in_16_bit() -> None:
    """Qwen2.5-32B-AWQ loads as about 18 GiB in vLLM, not the 15.9 GiB a flat 4.25 bits gives."""
    qwen32 = architecture_from_hf_config(
        {
            "model_type": "qwen2",
            "num_hidden_layers": 64,
            "hidden_size": 5120,
            "num_attention_heads": 40,
            "num_key_value_heads": 8,
            "intermediate_size": 27648,
            "vocab_size": 152064,
        }
    )
    w = weights_bytes(qwen32, bits=4.25)
    assert 17.5 * GiB < w < 19 * GiB
    assert weights_bytes(qwen32, bits=4.25, tensor_parallel_size=2) == math.ceil(w / 2)


def test_the_two_directions_agree() -> None:
    fp = estimate_footprint(LLAMA_8B, engine=Engine.VLLM, weights=15 * GiB, limits=LIMITS)
    total = round(79.2 * GiB)
    util = required_utilization(fp, gpu_total_bytes=total, max_model_len=100_000)
    assert kv_cache_tokens_at(fp, utilization=util, gpu_total_bytes=total) >= 100_000
    assert kv_cache_tokens_at(fp, utilization=util - 0.002, gpu_total_bytes=total) < 100_000
    assert max_model_len_at(fp, utilization=util, gpu_total_bytes=total) >= 100_000


@given(
    length=st.integers(min_value=16, max_value=400_000),
    sequences=st.integers(min_value=1, max_value=16),
    total_gib=st.sampled_from([16.0, 23.6, 44.5, 47.5, 79.2, 139.8]),
)
def test_required_utilization_always_holds_the_wanted_sequences(
    length: int, sequences: int, total_gib: float
) -> None:
    fp = estimate_footprint(LLAMA_8B, engine=Engine.VLLM, weights=15 * GiB, limits=LIMITS)
    total = round(total_gib * GiB)
    util = required_utilization(
        fp, gpu_total_bytes=total, max_model_len=length, sequences=sequences
    )
    if util <= 1.0:
        assert (
            max_model_len_at(fp, utilization=util, gpu_total_bytes=total, sequences=sequences)
            >= length
        )


@given(util=st.floats(min_value=0.3, max_value=1.0), seqs=st.integers(1, 8))
def test_max_model_len_at_is_the_largest_that_fits(util: float, seqs: int) -> None:
    fp = estimate_footprint(QWEN3_14B, engine=Engine.VLLM, weights=28 * GiB, limits=LIMITS)
    total = round(79.2 * GiB)
    best = max_model_len_at(fp, utilization=util, gpu_total_bytes=total, sequences=seqs)
    kv = math.floor(util * total) - fp.weights_bytes - fp.budgeted_overhead_bytes
    if best:
        assert fp.kv.bytes_for_sequences(best, seqs) <= kv
        assert fp.kv.bytes_for_sequences(best + BLOCK_SIZE, seqs) > kv


def test_vllm_overhead_counts_cuda_graphs_outside_the_budget_unless_eager() -> None:
    """Up to 0.19 vLLM captures its graphs after sizing the KV cache (docs/vllm-versions.md R6)."""
    r6 = rules_for("0.11.0")
    fp = estimate_footprint(LLAMA_8B, engine=Engine.VLLM, weights=15 * GiB, limits=LIMITS, rules=r6)
    eager = estimate_footprint(
        LLAMA_8B,
        engine=Engine.VLLM,
        weights=15 * GiB,
        limits=EngineLimits(max_num_batched_tokens=2048, max_num_seqs=256, enforce_eager=True),
        rules=r6,
    )
    assert fp.cuda_graph_bytes > 0
    assert eager.cuda_graph_bytes == 0
    assert fp.budgeted_overhead_bytes == eager.budgeted_overhead_bytes
    assert fp.outside_budget_bytes > eager.outside_budget_bytes


def test_tensor_parallel_adds_communication_buffers() -> None:
    one = estimate_footprint(LLAMA_8B, engine=Engine.VLLM, weights=15 * GiB, limits=LIMITS)
    two = estimate_footprint(
        LLAMA_8B, engine=Engine.VLLM, weights=8 * GiB, limits=LIMITS, tensor_parallel_size=2
    )
    assert two.non_torch_bytes > one.non_torch_bytes
