"""Small builders for core tests: configs from dicts, observed clusters from GPU sizes, and the
Llama-3 8B ``config.json`` the estimator tests share."""

from __future__ import annotations

from typing import Any

from daemon.core.demand import Demand, resolve_model
from daemon.core.desired import Config
from daemon.core.observed import ObservedState, Worker
from daemon.core.planning import Plan, plan
from daemon.testing.builders import gpu_worker

# A one-model config file for daemon tests: model "a" needs a fixed 4 GiB.
DAEMON_CONFIG = """
[policy]
mode = "enforce"
gpu_reserve_gib = 0.0
[models.a]
model_name = "m"
model_engine = "Transformers"
[models.a.memory]
estimate_gib = 4.0
"""

TINY_ARCH = {
    "model_type": "llama",
    "num_hidden_layers": 8,
    "hidden_size": 1024,
    "num_attention_heads": 8,
    "num_key_value_heads": 8,
    "intermediate_size": 2048,
    "vocab_size": 32000,
    "max_position_embeddings": 4096,
}


def llama_3_8b_hf_config(**extra: Any) -> dict[str, Any]:
    """The fields of Meta-Llama-3(.1)-8B's published ``config.json`` that size its memory (a fresh
    dict each call); ``extra`` adds or overrides fields (``max_position_embeddings=131072``...)."""
    return {
        "model_type": "llama",
        "num_hidden_layers": 32,
        "hidden_size": 4096,
        "num_attention_heads": 32,
        "num_key_value_heads": 8,
        "intermediate_size": 14336,
        "vocab_size": 128256,
        **extra,
    }


def model(
    name: str = "m", *, gib: float | None = None, engine: str = "Transformers", **extra: Any
) -> dict[str, Any]:
    """A model entry; with ``gib`` its need per GPU is fixed (memory.estimate_gib)."""
    spec: dict[str, Any] = {"model_name": name, "model_engine": engine, **extra}
    if gib is not None:
        spec.setdefault("memory", {})["estimate_gib"] = gib
    else:
        spec.setdefault("architecture", {})["fields"] = dict(TINY_ARCH)
    return spec


def config(models: dict[str, dict[str, Any]], **policy: Any) -> Config:
    return Config.model_validate(
        {
            "policy": {
                "mode": "enforce",
                "gpu_reserve_gib": 0.0,
                "gpu_max_fraction": 1.0,
                **policy,
            },
            "models": models,
        }
    )


def demands(cfg: Config) -> dict[str, Demand]:
    return {uid: resolve_model(uid, spec) for uid, spec in cfg.models.items()}


def cluster(*workers: Worker, **kw: Any) -> ObservedState:
    return ObservedState(workers=tuple(workers), **kw)


def plan_for(cfg: Config, observed: ObservedState) -> Plan:
    return plan(cfg, demands(cfg), observed)


__all__ = [
    "DAEMON_CONFIG",
    "cluster",
    "config",
    "demands",
    "gpu_worker",
    "llama_3_8b_hf_config",
    "model",
    "plan_for",
]
