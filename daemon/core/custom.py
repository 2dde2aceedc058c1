"""The registration JSON Xinference takes for a custom model (``POST /v1/model_registrations/{type}``),
built from a model's config entry. Shapes checked against the real 4.1.0 server
(docs/xinference-observed.md, "Registrations")."""

from __future__ import annotations

import hashlib
import json
from typing import Any

from daemon.core.desired import ModelSpec
from daemon.core.naming import size_text


def registration_json(spec: ModelSpec) -> dict[str, Any]:
    """The custom-model JSON for ``spec`` (which must have a ``custom`` table)."""
    assert spec.custom is not None, "only custom models are registered"
    files: dict[str, Any] = {
        "model_format": spec.model_format or "pytorch",
        "model_hub": "huggingface",
        "model_id": None,
        "model_uri": spec.custom.model_uri,
        "model_revision": None,
        "quantization": spec.quantization or "none",
    }
    base: dict[str, Any] = {"version": 2, "model_name": spec.model_name}
    if spec.model_type == "LLM":
        files["model_size_in_billions"] = size_text(spec.model_size_in_billions)
        base |= {
            "model_lang": ["en"],
            "model_ability": ["chat"],
            "context_length": spec.memory.max_model_len or 4096,
        }
    elif spec.model_type == "rerank":
        base |= {"language": ["en"], "type": "normal", "max_tokens": 512}
    else:
        base |= {"language": ["en"]}
    return {**base, **spec.custom.spec, "model_specs": [files]}


def registration_digest(spec: ModelSpec) -> str:
    """Identity of the registration, to re-register only when it changed."""
    text = json.dumps(registration_json(spec), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]
