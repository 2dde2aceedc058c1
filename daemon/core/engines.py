"""Xinference's engine names and the sets of engines that share a memory behaviour."""

from __future__ import annotations

from daemon.core.compat import StrEnum


class Engine(StrEnum):
    """Xinference engine names (``model_engine``), as the server spells them."""

    VLLM = "vLLM"
    SGLANG = "SGLang"
    TRANSFORMERS = "Transformers"
    LLAMA_CPP = "llama.cpp"
    MLX = "MLX"
    SENTENCE_TRANSFORMERS = "sentence_transformers"
    FLAG = "flag"


# Engines that pre-allocate a fraction of the whole GPU and then fill it with KV cache. They only
# run on GPUs (there is no CPU build to fall back to).
FRACTION_ENGINES = frozenset({Engine.VLLM, Engine.SGLANG})

# Which engines Xinference offers per model type.
ENGINES_BY_TYPE: dict[str, frozenset[str]] = {
    "LLM": frozenset(
        {Engine.VLLM, Engine.SGLANG, Engine.TRANSFORMERS, Engine.LLAMA_CPP, Engine.MLX}
    ),
    "embedding": frozenset(
        {Engine.SENTENCE_TRANSFORMERS, Engine.FLAG, Engine.VLLM, Engine.LLAMA_CPP}
    ),
    "rerank": frozenset({Engine.SENTENCE_TRANSFORMERS, Engine.VLLM}),
}

# Lower-case spelling -> the server's spelling (configs and flags may write "vllm").
ENGINE_SPELLING = {e.value.lower(): e.value for e in Engine}


def canonical_engine(name: str | None) -> str | None:
    """The server's spelling of an engine name, or the name unchanged when it is not known."""
    if name is None:
        return None
    return ENGINE_SPELLING.get(name.lower(), name)


# The weight format Xinference assumes when a launch names none: llama.cpp and MLX load only their
# own formats, every other engine loads the PyTorch checkpoint.
_DEFAULT_FORMAT: dict[str, str] = {Engine.LLAMA_CPP: "ggufv2", Engine.MLX: "mlx"}


def default_model_format(engine: str | None) -> str:
    """The model_format a spec without one is estimated with (``pytorch`` unless the engine loads
    only its own format)."""
    return _DEFAULT_FORMAT.get(canonical_engine(engine) or "", "pytorch")
