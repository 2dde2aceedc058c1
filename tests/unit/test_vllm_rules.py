"""vLLM's memory rules by version (docs/vllm-versions.md section 11) and how the estimator uses them."""

from __future__ import annotations

import itertools
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from daemon.core.architecture import architecture_from_hf_config
from daemon.core.demand import claim_on, resolve_model
from daemon.core.desired import ModelSpec
from daemon.core.footprint import BLOCK_SIZE, kv_cache_tokens_at, kv_layout
from daemon.core.units import GiB
from daemon.core.vllm_rules import (
    RULES,
    UNKNOWN,
    Scope,
    Usage,
    VllmVersion,
    Where,
    profile_batch,
    rules_for,
    version_problem,
)
from tests.unit.builders import llama_3_8b_hf_config


@pytest.mark.parametrize(
    ("version", "key"),
    [
        ("0.5.4", "R1"),
        ("0.6.3", "R1"),
        ("0.6.4", "R2"),
        ("0.6.4.post1", "R2"),
        ("0.6.5", "R3"),
        ("0.7.3.dev233+gad5a35c2", "R3"),
        ("0.8.0", "R4/R3"),
        ("0.9.1", "R5/R3"),
        ("0.10.1.1", "R5/R3"),
        ("0.10.2rc1", "R5/R3"),  # a pre-release of 0.10.2 is not assumed to have its features
        ("0.10.2", "R5/R3+kvb"),
        ("0.11.0rc2.dev98+g393de22d2", "R5/R3+kvb"),
        ("0.11.0", "R6"),
        ("0.18.1.dev0+gbcf2be961.d20260324", "R7"),
        ("0.20.0", "R8"),
        ("0.27.1", "R9"),
        ("v0.33.0", "R9"),
        ("0.34.0", "unknown"),
        ("0.5.3", "unknown"),
        ("1.0.0", "unknown"),
    ],
)
def test_each_release_has_its_row(version: str, key: str) -> None:
    assert rules_for(version).key == key


def test_no_version_and_nonsense_are_unknown() -> None:
    assert rules_for(None) is UNKNOWN
    assert rules_for("latest") is UNKNOWN
    assert version_problem("latest") is not None
    assert version_problem("0.11.0") is None
    assert VllmVersion.parse("0.10.2rc1") < VllmVersion.parse("0.10.2")


def test_the_rows_cover_every_release_read_without_overlap() -> None:
    for older, newer in itertools.pairwise(RULES):
        assert older.high == newer.low
    assert RULES[0].low == (0, 5, 4)
    assert RULES[-1].high == (0, 34, 0)


def test_kv_cache_memory_bytes_arrives_in_0_10_2_and_the_gate_in_0_9_1() -> None:
    assert not rules_for("0.10.1.1").kv_cache_memory_bytes
    assert rules_for("0.10.2").kv_cache_memory_bytes
    assert not rules_for("0.9.0").startup_gate
    assert rules_for("0.9.1").startup_gate
    assert not UNKNOWN.kv_cache_memory_bytes


def test_the_rows_follow_the_source() -> None:
    """Spot checks against docs/vllm-versions.md section 2."""
    assert rules_for("0.6.4").scope is Scope.GLOBAL  # R2: other processes count
    assert rules_for("0.6.4").cuda_context is Where.INSIDE
    assert rules_for("0.10.2").communication is Where.INSIDE  # NCCL after the snapshot until 0.11
    assert rules_for("0.11.0").communication is Where.OUTSIDE
    assert rules_for("0.19.0").cuda_graphs is Where.OUTSIDE  # estimate off by default
    assert rules_for("0.20.0").cuda_graphs is Where.INSIDE  # on from 0.20.0 (the log says 0.21)
    assert rules_for("0.11.0").with_exact_kv().cuda_graphs is Where.OUTSIDE


def test_unknown_is_the_most_conservative_choice_in_every_column() -> None:
    assert UNKNOWN.scope is Scope.EITHER
    for where in (UNKNOWN.cuda_context, UNKNOWN.communication, UNKNOWN.cuda_graphs):
        assert where.inside
        assert where.outside
    assert UNKNOWN.startup_gate
    assert not UNKNOWN.sliding_window_capped
    for rules in RULES:
        for field in ("forward_factor", "sampler_copies", "non_torch_single_bytes"):
            assert getattr(UNKNOWN.calibration, field) >= getattr(rules.calibration, field)


@pytest.mark.parametrize(
    ("version", "usage", "length", "gpu", "expected"),
    [
        ("0.11.0", Usage.XINFERENCE, 32768, 80, (2048, 256)),
        ("0.11.0", Usage.SERVE, 32768, 80, (8192, 1024)),
        ("0.12.0", Usage.LLM, 32768, 24, (8192, 256)),
        ("0.7.0", Usage.XINFERENCE, 8192, 80, (8192, 256)),  # V0: max(L, 2048)
        ("0.7.0", Usage.XINFERENCE, 65536, 80, (2048, 256)),  # V0 chunked prefill above 32k
        ("0.6.0", Usage.XINFERENCE, 65536, 80, (512, 256)),  # 512-token chunks before 0.6.5
        (None, Usage.XINFERENCE, 16384, 80, (16384, 256)),  # unknown: the larger of V0 and V1
    ],
)
def test_the_profiling_batch_under_each_version(
    version: str | None, usage: Usage, length: int, gpu: int, expected: tuple[int, int]
) -> None:
    assert (
        profile_batch(
            rules_for(version), usage=usage, max_model_len=length, gpu_total_bytes=gpu * GiB
        )
        == expected
    )


def test_multimodal_and_pooling_floors_apply_where_the_source_has_them() -> None:
    def batch(version: str, *, multimodal: bool = False, pooling: bool = False) -> int:
        return profile_batch(
            rules_for(version),
            usage=Usage.XINFERENCE,
            max_model_len=4096,
            gpu_total_bytes=80 * GiB,
            multimodal=multimodal,
            pooling=pooling,
        )[0]

    assert batch("0.11.0", multimodal=True) == 5120
    assert batch("0.11.0", pooling=True) == 32768
    assert batch("0.12.0", multimodal=True) == 2048
    assert batch("0.12.0", pooling=True) == 4096  # no chunked prefill: the whole sequence


GEMMA3_27B = architecture_from_hf_config(
    {
        "model_type": "gemma3",
        "text_config": {
            "model_type": "gemma3_text",
            "hidden_size": 5376,
            "intermediate_size": 21504,
            "num_hidden_layers": 62,
            "num_attention_heads": 32,
            "num_key_value_heads": 16,
            "head_dim": 128,
            "sliding_window": 1024,
        },
        "vision_config": {"model_type": "siglip_vision_model"},
    }
)


def test_the_hybrid_token_report_matches_a_gemma_3_log() -> None:
    """vLLM 0.11 on Gemma-3-27B: 89,994 blocks of 10 layers ("Add 8 padding layers") -> 205,696
    tokens (code index id 9297248278). 10 full + 52 sliding layers: groups of 10, 7 groups."""
    layout = kv_layout(GEMMA3_27B)
    assert (layout.full_layers, layout.sliding_layers) == (10, 52)
    per_layer_block = BLOCK_SIZE * 2 * 16 * 128 * 2
    assert layout.tokens_that_fit(89_994 * 10 * per_layer_block) == 205_696
    assert GEMMA3_27B.is_multimodal


def test_sliding_layers_keep_every_token_where_the_hybrid_manager_does_not_run() -> None:
    capped = kv_layout(GEMMA3_27B, sliding_window_capped=True)
    uncapped = kv_layout(GEMMA3_27B, sliding_window_capped=False)
    assert uncapped.window is None
    long = 131072
    assert uncapped.bytes_for_sequences(long, 1) > 4 * capped.bytes_for_sequences(long, 1)


QWEN25_32B_AWQ = ModelSpec.model_validate(
    {
        "model_name": "qwen2.5-instruct",
        "model_engine": "vLLM",
        "model_format": "awq",
        "model_size_in_billions": 32,
        "quantization": "Int4",
        "memory": {"max_model_len": 32768, "gpu_memory_utilization": "minimum"},
    }
)


def test_the_48_gb_case_an_older_vllm_counts_the_context_inside() -> None:
    """The field case of issue 9: a 32B model through an older Xinference vLLM on a 48 GB card.
    0.6.4 counts the CUDA context (and everything else on the GPU) inside the budget; with no
    version the estimate counts it too, so it never promises more KV than that vLLM gives."""
    demand = resolve_model("chat", QWEN25_32B_AWQ)
    total = round(47.5 * GiB)
    r2 = claim_on(demand, total, rules=rules_for("0.6.4"))
    unknown = claim_on(demand, total)
    assert r2.footprint is not None
    assert unknown.footprint is not None
    for util in (0.8, 0.85, 0.9, 0.95):
        vllm_064 = kv_cache_tokens_at(r2.footprint, utilization=util, gpu_total_bytes=total)
        ours = kv_cache_tokens_at(unknown.footprint, utilization=util, gpu_total_bytes=total)
        assert ours <= vllm_064
    assert r2.footprint.cuda_context_bytes <= r2.footprint.budgeted_overhead_bytes


ARCHS = [
    llama_3_8b_hf_config(max_position_embeddings=131072),  # dense, GQA
    {  # MoE with sliding windows
        "model_type": "gpt_oss",
        "num_hidden_layers": 24,
        "hidden_size": 2880,
        "num_attention_heads": 64,
        "num_key_value_heads": 8,
        "head_dim": 64,
        "intermediate_size": 2880,
        "vocab_size": 201088,
        "num_local_experts": 32,
        "num_experts_per_tok": 4,
        "sliding_window": 128,
        "layer_types": ["sliding_attention", "full_attention"] * 12,
        "max_position_embeddings": 131072,
    },
    {  # MLA
        "model_type": "deepseek_v2",
        "num_hidden_layers": 27,
        "hidden_size": 2048,
        "num_attention_heads": 16,
        "num_key_value_heads": 16,
        "intermediate_size": 10944,
        "moe_intermediate_size": 1408,
        "n_routed_experts": 64,
        "num_experts_per_tok": 6,
        "n_shared_experts": 2,
        "kv_lora_rank": 512,
        "qk_rope_head_dim": 64,
        "vocab_size": 102400,
        "max_position_embeddings": 163840,
    },
]


@settings(max_examples=60, deadline=None)
@given(
    arch=st.sampled_from(ARCHS),
    tp=st.sampled_from([1, 2, 4]),
    total_gib=st.sampled_from([23.6, 47.5, 79.2, 139.8]),
    length=st.sampled_from([2048, 8192, 32768, 131072]),
    eager=st.booleans(),
)
def test_unknown_never_promises_more_tokens_nor_claims_less_than_any_release(
    arch: dict[str, object], tp: int, total_gib: float, length: int, eager: bool
) -> None:
    """For every row: with the version unknown the KV tokens at any utilization are no more, and the
    memory claimed no less, than that release's."""
    spec = ModelSpec.model_validate(
        {
            "model_name": "m",
            "model_engine": "vLLM",
            "placement": {"gpus": tp},
            "architecture": {"fields": arch, "weights_gib": 10.0},
            "memory": {"max_model_len": length, "enforce_eager": eager},
        }
    )
    demand = resolve_model("m", spec)
    total = round(total_gib * GiB)
    unknown = claim_on(demand, total)
    assert unknown.footprint is not None
    for rules in RULES:
        known = claim_on(demand, total, rules=rules)
        assert known.footprint is not None
        for util in (0.5, 0.9):
            assert kv_cache_tokens_at(
                unknown.footprint, utilization=util, gpu_total_bytes=total
            ) <= kv_cache_tokens_at(known.footprint, utilization=util, gpu_total_bytes=total)
        assert unknown.bytes >= known.bytes or math.isclose(unknown.bytes, known.bytes)
        assert unknown.footprint.outside_budget_bytes >= known.footprint.outside_budget_bytes


def test_the_engine_allocation_is_outside_for_a_version_with_exact_kv() -> None:
    """From 0.10.2 the plan passes kv_cache_memory_bytes: vLLM skips its graph estimate, so CUDA
    graphs are counted on top of the budget, and the claim says how many KV bytes to pass."""
    demand = resolve_model("chat", QWEN25_32B_AWQ)
    claim = claim_on(demand, round(47.5 * GiB), rules=rules_for("0.21.0"))
    assert claim.footprint is not None
    assert claim.footprint.cuda_graphs is Where.OUTSIDE
    assert claim.kv_cache_bytes is not None
    assert claim.kv_cache_bytes >= claim.footprint.kv.bytes_for_sequences(32768, 1, chunk=2048)
    assert claim_on(demand, round(47.5 * GiB), rules=rules_for("0.10.1")).kv_cache_bytes is None
    assert claim_on(demand, round(47.5 * GiB)).kv_cache_bytes is None
