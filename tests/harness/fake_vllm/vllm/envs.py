"""``vllm.envs``: only what Xinference reads (``is_set``, ``VLLM_USE_V1``)."""

import os


def is_set(name: str) -> bool:
    return name in os.environ


def __getattr__(name: str) -> object:
    if name == "VLLM_USE_V1":
        return os.environ.get("VLLM_USE_V1", "1") not in ("0", "false", "False")
    raise AttributeError(name)
