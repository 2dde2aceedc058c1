"""Architecture parsing and parameter counts: the estimator's inputs."""

from __future__ import annotations

from typing import Any

import pytest

from daemon.core import catalogue
from daemon.core.architecture import (
    ArchitectureError,
    architecture_from_hf_config,
    estimate_params,
)
from tests.unit.builders import llama_3_8b_hf_config

LLAMA_8B = llama_3_8b_hf_config(max_position_embeddings=131072, torch_dtype="bfloat16")


def test_head_dim_defaults_to_hidden_over_heads() -> None:
    arch = architecture_from_hf_config(LLAMA_8B)
    assert arch.head_dim == 128
    assert arch.num_kv_heads == 8


def test_parameter_count_of_llama_3_8b_matches_the_model_card() -> None:
    assert estimate_params(architecture_from_hf_config(LLAMA_8B)) == pytest.approx(
        8.03e9, rel=0.002
    )


@pytest.mark.parametrize(
    "entry",
    [e for e in catalogue.ENTRIES if e.params],
    ids=lambda e: f"{e.name}:{e.size_in_billions}",
)
def test_every_catalogue_entry_parses_and_dense_counts_agree(
    entry: catalogue.CatalogueEntry,
) -> None:
    """Every bundled entry is a usable architecture; for dense decoders the shape-derived count
    agrees with the published one (a typo in the catalogue would show here)."""
    arch = architecture_from_hf_config(entry.config)
    assert arch.num_layers > 0
    if (
        not arch.num_experts
        and not arch.uses_mla
        and not arch.is_encoder
        and entry.model_type == "LLM"
    ):
        derived = estimate_params(arch)
        assert derived == pytest.approx(entry.params, rel=0.12), entry.hf_repo


def test_qwen2_sliding_window_is_off_unless_enabled() -> None:
    cfg = {**LLAMA_8B, "model_type": "qwen2", "sliding_window": 4096, "use_sliding_window": False}
    assert architecture_from_hf_config(cfg).sliding_layers == 0


def test_gemma3_pattern_makes_five_of_six_layers_slide() -> None:
    cfg = {
        **LLAMA_8B,
        "model_type": "gemma3_text",
        "num_hidden_layers": 48,
        "sliding_window": 1024,
        "sliding_window_pattern": 6,
    }
    arch = architecture_from_hf_config(cfg)
    assert (arch.sliding_layers, arch.full_attention_layers) == (40, 8)


def test_layer_types_list_is_counted() -> None:
    cfg = {
        **LLAMA_8B,
        "num_hidden_layers": 4,
        "sliding_window": 128,
        "layer_types": ["sliding_attention", "full_attention"] * 2,
    }
    assert architecture_from_hf_config(cfg).sliding_layers == 2


def test_multimodal_configs_use_their_text_config() -> None:
    cfg = {"model_type": "gemma3", "text_config": {**LLAMA_8B, "num_hidden_layers": 62}}
    assert architecture_from_hf_config(cfg).num_layers == 62


def test_mla_is_recognised() -> None:
    cfg = {**LLAMA_8B, "model_type": "deepseek_v3", "kv_lora_rank": 512, "qk_rope_head_dim": 64}
    arch = architecture_from_hf_config(cfg)
    assert arch.uses_mla
    assert arch.qk_rope_head_dim == 64


@pytest.mark.parametrize(
    ("cfg", "message"),
    [
        ({"hidden_size": 64}, "num_hidden_layers"),
        ({**LLAMA_8B, "num_hidden_layers": 0}, "positive integer"),
        ({**LLAMA_8B, "vocab_size": "many"}, "vocab_size"),
    ],
)
def test_incomplete_configs_say_which_field(cfg: dict[str, object], message: str) -> None:
    with pytest.raises(ArchitectureError, match=message):
        architecture_from_hf_config(cfg)


def test_catalogue_finds_by_xinference_name_size_and_hf_repo() -> None:
    by_name = catalogue.find("qwen2.5-instruct", 32)
    assert by_name is not None
    assert by_name.hf_repo == "Qwen/Qwen2.5-32B-Instruct"
    assert catalogue.find("Qwen/Qwen2.5-32B-Instruct") == by_name
    assert catalogue.find("qwen2.5-instruct", "1_5") is not None
    assert catalogue.find("qwen2.5-instruct") is None  # ambiguous without a size
    assert catalogue.find("bge-m3") is not None


def test_a_text_config_takes_its_class_defaults_for_the_keys_it_leaves_out() -> None:
    """Gemma 3's config.json: text_config has no vocab_size, the 4B one no head counts either."""
    arch = architecture_from_hf_config(
        {
            "model_type": "gemma3",
            "text_config": {
                "model_type": "gemma3_text",
                "hidden_size": 2560,
                "intermediate_size": 10240,
                "num_hidden_layers": 34,
                "sliding_window": 1024,
            },
            "vision_config": {"model_type": "siglip_vision_model"},
        }
    )
    assert (arch.vocab_size, arch.num_attention_heads, arch.num_kv_heads, arch.head_dim) == (
        262208,
        8,
        4,
        256,
    )
    assert arch.is_multimodal
    assert arch.tie_word_embeddings


def test_an_explicit_null_is_not_replaced_by_a_class_default() -> None:
    """Mistral v0.2+ disables the window with sliding_window: null (the class default is 4096)."""
    cfg: dict[str, Any] = {
        "model_type": "llava_next",
        "text_config": {**LLAMA_8B, "model_type": "mistral"},
    }
    cfg["text_config"]["sliding_window"] = None
    assert architecture_from_hf_config(cfg).sliding_layers == 0


def test_shared_experts_are_read() -> None:
    qwen = {**LLAMA_8B, "num_experts": 8, "shared_expert_intermediate_size": 512}
    deepseek = {
        **LLAMA_8B,
        "n_routed_experts": 8,
        "n_shared_experts": 2,
        "moe_intermediate_size": 96,
    }
    assert architecture_from_hf_config(qwen).shared_expert_intermediate_size == 512
    assert architecture_from_hf_config(deepseek).shared_expert_intermediate_size == 192
