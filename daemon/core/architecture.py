"""Model architecture facts that decide memory use, read from a Hugging Face ``config.json`` mapping.

Only what the estimator needs is kept: layer and head counts for the KV cache, sizes for the
parameter count and activation peak, and the attention layout (full, sliding-window, MLA).
Multimodal wrappers keep the language model under ``text_config``; a key that a real config leaves
out there takes the default of the model class that transformers would use (``_CLASS_DEFAULTS``),
as vLLM itself does when it builds that class.
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
_TEXT_KEYS = ("text_config", "language_config", "llm_config")
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
    shared_expert_intermediate_size: int = 0  # always-on experts beside the routed ones
    is_encoder: bool = False
    is_multimodal: bool = False  # a wrapper with a vision (or audio) tower beside the text model
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


# transformers' defaults for the text models that multimodal wrappers embed, for the keys the
# estimator reads (transformers/models/<name>/configuration_<name>.py, __init__ defaults). A real
# config.json leaves a key out when it equals the default, e.g. Gemma 3's text_config has no
# vocab_size (262208) and the 4B one no head counts (8 heads, 4 KV heads, head_dim 256).
_CLASS_DEFAULTS: dict[str, dict[str, Any]] = {
    "gemma3_text": {
        "vocab_size": 262208,
        "hidden_size": 2304,
        "intermediate_size": 9216,
        "num_hidden_layers": 26,
        "num_attention_heads": 8,
        "num_key_value_heads": 4,
        "head_dim": 256,
        "max_position_embeddings": 131072,
        "sliding_window": 4096,
        "sliding_window_pattern": 6,
        "tie_word_embeddings": True,
    },
    "gemma2": {
        "vocab_size": 256000,
        "hidden_size": 2304,
        "intermediate_size": 9216,
        "num_hidden_layers": 26,
        "num_attention_heads": 8,
        "num_key_value_heads": 4,
        "head_dim": 256,
        "max_position_embeddings": 8192,
        "sliding_window": 4096,
        "tie_word_embeddings": True,
    },
    "llama": {
        "vocab_size": 32000,
        "hidden_size": 4096,
        "intermediate_size": 11008,
        "num_hidden_layers": 32,
        "num_attention_heads": 32,
        "max_position_embeddings": 2048,
    },
    "mistral": {
        "vocab_size": 32000,
        "hidden_size": 4096,
        "intermediate_size": 14336,
        "num_hidden_layers": 32,
        "num_attention_heads": 32,
        "num_key_value_heads": 8,
        "max_position_embeddings": 131072,
        "sliding_window": 4096,
    },
    "qwen2": {
        "vocab_size": 151936,
        "hidden_size": 4096,
        "intermediate_size": 22016,
        "num_hidden_layers": 32,
        "num_attention_heads": 32,
        "num_key_value_heads": 32,
        "max_position_embeddings": 32768,
    },
    "qwen2_vl_text": {
        "vocab_size": 152064,
        "hidden_size": 8192,
        "intermediate_size": 29568,
        "num_hidden_layers": 80,
        "num_attention_heads": 64,
        "num_key_value_heads": 8,
        "max_position_embeddings": 32768,
    },
    "qwen3": {
        "vocab_size": 151936,
        "hidden_size": 4096,
        "intermediate_size": 22016,
        "num_hidden_layers": 32,
        "num_attention_heads": 32,
        "num_key_value_heads": 32,
        "head_dim": 128,
        "max_position_embeddings": 32768,
    },
}
_CLASS_DEFAULTS["qwen2_5_vl_text"] = _CLASS_DEFAULTS["qwen2_vl_text"]
# wrapper model_type -> the text model it embeds when its text_config does not say
_WRAPPED_TEXT = {
    "gemma3": "gemma3_text",
    "llava": "llama",
    "llava_next": "llama",
    "mistral3": "mistral",
    "qwen2_vl": "qwen2_vl_text",
    "qwen2_5_vl": "qwen2_5_vl_text",
}


def _text_config(cfg: Mapping[str, Any]) -> Mapping[str, Any]:
    """The language model's keys. Multimodal configs (Gemma 3, Llama 4, Qwen2-VL, LLaVA ...) keep
    it under a sub-key; the keys it leaves out take its model class's defaults."""
    text: Mapping[str, Any] = cfg
    for key in _TEXT_KEYS:
        sub = cfg.get(key)
        if isinstance(sub, Mapping) and sub:
            text = sub
            break
    model_type = str(text.get("model_type") or "")
    if text is not cfg and not model_type:
        model_type = _WRAPPED_TEXT.get(str(cfg.get("model_type", "")), "")
    defaults = _CLASS_DEFAULTS.get(model_type, {})
    if text is cfg and not defaults:
        return cfg
    merged = {**defaults, **text}  # an explicit null (Mistral's sliding_window) stays null
    if model_type:
        merged["model_type"] = model_type
    if text is not cfg:
        for key in ("torch_dtype", "dtype", "tie_word_embeddings"):
            if key not in merged and cfg.get(key) is not None:
                merged[key] = cfg[key]
    return merged


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


def _shared_experts(cfg: Mapping[str, Any]) -> int:
    """Width of the always-on shared experts: Qwen-MoE's ``shared_expert_intermediate_size``, or
    DeepSeek's ``n_shared_experts x moe_intermediate_size``."""
    width = _optional_int(cfg, ("shared_expert_intermediate_size",))
    if width:
        return width
    count = _optional_int(cfg, ("n_shared_experts",)) or 0
    return count * (_optional_int(cfg, ("moe_intermediate_size",)) or 0)


def architecture_from_hf_config(
    cfg: Mapping[str, Any], *, params: int | None = None
) -> Architecture:
    """Build an :class:`Architecture` from a ``config.json`` mapping (raises ArchitectureError)."""
    text = _text_config(cfg)
    model_type = str(text.get("model_type") or cfg.get("model_type") or "unknown")
    multimodal = text is not cfg and any(isinstance(cfg.get(k), Mapping) for k in _TEXT_KEYS)
    multimodal = multimodal or isinstance(cfg.get("vision_config"), Mapping)
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
        experts_per_token=_optional_int(
            text, ("num_experts_per_tok", "moe_topk", "experts_per_token")
        )
        or 0,
        moe_intermediate_size=_optional_int(text, ("moe_intermediate_size",)) or None,
        shared_expert_intermediate_size=_shared_experts(text),
        is_encoder=model_type in ENCODER_MODEL_TYPES,
        is_multimodal=multimodal,
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
