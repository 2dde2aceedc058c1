"""Model architecture facts that decide memory use, read from a Hugging Face ``config.json`` mapping.

Only what the estimator needs is kept: layer and head counts for the KV cache, sizes for the
parameter count and activation peak, and the attention layout (full, sliding-window, MLA).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

# Config keys that differ between model families but mean the same thing.
_LAYERS = ("num_hidden_layers", "n_layer", "num_layers", "n_layers")
_HIDDEN = ("hidden_size", "n_embd", "d_model", "dim")
_HEADS = ("num_attention_heads", "n_head", "num_heads", "n_heads")
_KV_HEADS = ("num_key_value_heads", "multi_query_group_num", "num_kv_heads", "n_kv_heads")
_INTERMEDIATE = ("intermediate_size", "ffn_hidden_size", "n_inner", "ffn_dim")
_VOCAB = ("vocab_size", "padded_vocab_size", "n_vocab")
_MAX_POS = ("max_position_embeddings", "seq_length", "n_positions", "max_seq_len")
_DTYPE_BYTES = {"float32": 4, "float": 4, "float16": 2, "half": 2, "bfloat16": 2}
ENCODER_MODEL_TYPES = frozenset(
    {"bert", "xlm-roberta", "roberta", "xlm_roberta", "nomic_bert", "new", "distilbert", "electra"}
)


class ArchitectureError(ValueError):
    """A config mapping lacks a field the estimator needs, or holds a nonsensical value."""


@dataclass(frozen=True, kw_only=True)
class Architecture:
    """The memory-relevant shape of one model (whole model, before any tensor-parallel split)."""

    model_type: str
    num_layers: int
    hidden_size: int
    num_attention_heads: int
    num_kv_heads: int
    head_dim: int
    intermediate_size: int
    vocab_size: int
    max_position_embeddings: int | None = None
    tie_word_embeddings: bool = False
    dtype_bytes: int = 2
    # Sliding-window attention: how many of the layers use a window, and its length in tokens.
    sliding_window: int | None = None
    sliding_layers: int = 0
    # Multi-head latent attention (DeepSeek V2/V3, Kimi K2): one compressed latent per token and layer.
    kv_lora_rank: int | None = None
    qk_rope_head_dim: int | None = None
    # Mixture of experts.
    num_experts: int = 0
    experts_per_token: int = 0
    moe_intermediate_size: int | None = None
    is_encoder: bool = False
    params: int | None = None  # the real parameter count when known (catalogue), else estimated

    @property
    def uses_mla(self) -> bool:
        return self.kv_lora_rank is not None

    @property
    def full_attention_layers(self) -> int:
        return self.num_layers - self.sliding_layers


def _first(cfg: Mapping[str, Any], keys: tuple[str, ...]) -> Any:
    for key in keys:
        value = cfg.get(key)
        if value is not None:
            return value
    return None


def _positive_int(cfg: Mapping[str, Any], keys: tuple[str, ...], *, required: bool = True) -> int:
    value = _first(cfg, keys)
    if value is None:
        if required:
            raise ArchitectureError(f"missing {keys[0]!r} (also looked for {', '.join(keys[1:])})")
        return 0
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ArchitectureError(f"{keys[0]!r} must be a positive integer, got {value!r}")
    return value


def _optional_int(cfg: Mapping[str, Any], keys: tuple[str, ...]) -> int | None:
    """An optional non-negative integer field: None when absent, ArchitectureError when malformed."""
    value = _first(cfg, keys)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ArchitectureError(f"{keys[0]!r} must be a non-negative integer, got {value!r}")
    return value


def _text_config(cfg: Mapping[str, Any]) -> Mapping[str, Any]:
    """Multimodal configs (Gemma 3, Llama 4, Qwen2-VL ...) keep the language model under a sub-key."""
    for key in ("text_config", "language_config", "llm_config"):
        sub = cfg.get(key)
        if isinstance(sub, Mapping) and _first(sub, _LAYERS) is not None:
            merged = dict(sub)
            merged.setdefault("torch_dtype", cfg.get("torch_dtype"))
            return merged
    return cfg


def _sliding(cfg: Mapping[str, Any], num_layers: int) -> tuple[int | None, int]:
    """(window, number of sliding layers) from the several ways configs describe it."""
    window = cfg.get("sliding_window")
    if not isinstance(window, int) or isinstance(window, bool) or window <= 0:
        return None, 0
    max_pos = _optional_int(cfg, _MAX_POS) or 0
    # Qwen2 carries a sliding_window value but disables it unless use_sliding_window is true.
    if cfg.get("use_sliding_window") is False:
        return None, 0
    layer_types = cfg.get("layer_types")
    if isinstance(layer_types, list) and layer_types:
        return window, sum(1 for t in layer_types if t == "sliding_attention")
    pattern = cfg.get("sliding_window_pattern")
    if isinstance(pattern, int) and pattern > 1:
        # Gemma 3: every pattern-th layer is global, the rest slide.
        return window, num_layers - num_layers // pattern
    model_type = str(cfg.get("model_type", ""))
    if model_type in {"gemma2", "cohere2"}:
        return window, num_layers // 2  # alternating local / global layers
    if window >= max_pos > 0:
        return None, 0  # a window at least as long as the context never slides
    return window, num_layers  # Mistral v0.1 style: every layer slides


def architecture_from_hf_config(
    cfg: Mapping[str, Any], *, params: int | None = None
) -> Architecture:
    """Build an :class:`Architecture` from a ``config.json`` mapping (raises ArchitectureError)."""
    text = _text_config(cfg)
    model_type = str(text.get("model_type") or cfg.get("model_type") or "unknown")
    layers = _positive_int(text, _LAYERS)
    hidden = _positive_int(text, _HIDDEN)
    heads = _positive_int(text, _HEADS)
    kv_heads = _positive_int(text, _KV_HEADS, required=False) or heads
    head_dim = _optional_int(text, ("head_dim",)) or hidden // heads
    intermediate = _positive_int(text, _INTERMEDIATE, required=False) or 4 * hidden
    vocab = _positive_int(text, _VOCAB)
    max_pos = _optional_int(text, _MAX_POS)
    window, sliding_layers = _sliding(text, layers)
    experts = _optional_int(text, ("num_local_experts", "num_experts", "n_routed_experts")) or 0
    dtype = str(text.get("torch_dtype") or text.get("dtype") or "bfloat16")
    kv_lora = _optional_int(text, ("kv_lora_rank",))
    rope = _optional_int(text, ("qk_rope_head_dim",))
    return Architecture(
        model_type=model_type,
        num_layers=layers,
        hidden_size=hidden,
        num_attention_heads=heads,
        num_kv_heads=kv_heads,
        head_dim=head_dim,
        intermediate_size=intermediate,
        vocab_size=vocab,
        max_position_embeddings=max_pos or None,
        tie_word_embeddings=bool(text.get("tie_word_embeddings", cfg.get("tie_word_embeddings"))),
        dtype_bytes=_DTYPE_BYTES.get(dtype, 2),
        sliding_window=window,
        sliding_layers=sliding_layers,
        kv_lora_rank=kv_lora or None,
        qk_rope_head_dim=rope if kv_lora else None,
        num_experts=experts,
        experts_per_token=_optional_int(text, ("num_experts_per_tok", "moe_topk")) or 0,
        moe_intermediate_size=_optional_int(text, ("moe_intermediate_size",)) or None,
        is_encoder=model_type in ENCODER_MODEL_TYPES,
        params=params,
    )


def estimate_params(arch: Architecture) -> int:
    """Parameter count from the shape, when no published count is known.

    Attention (q, k, v, o) + gated MLP (three matrices; dense models) or experts (MoE) per layer,
    plus token embeddings and an untied output head. Norms and biases are ignored (< 0.1 %).
    """
    if arch.params:
        return arch.params
    h = arch.hidden_size
    q_out = arch.num_attention_heads * arch.head_dim
    kv_out = arch.num_kv_heads * arch.head_dim
    attention = h * q_out + 2 * h * kv_out + q_out * h
    if arch.is_encoder:
        mlp = 2 * h * arch.intermediate_size  # up and down, no gate
    elif arch.num_experts:
        expert_size = arch.moe_intermediate_size or arch.intermediate_size
        mlp = arch.num_experts * 3 * h * expert_size + h * arch.num_experts
    else:
        mlp = 3 * h * arch.intermediate_size
    embeddings = arch.vocab_size * h * (1 if arch.tie_word_embeddings or arch.is_encoder else 2)
    return arch.num_layers * (attention + mlp) + embeddings


def embedding_params(arch: Architecture) -> int:
    """Parameters in the token embedding and the output head (quantized formats keep these in 16 bit)."""
    return arch.vocab_size * arch.hidden_size * (1 if arch.tie_word_embeddings else 2)
