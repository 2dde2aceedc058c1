"""``vllm.v1.executor.abstract``: only imported, never run (no multi-GPU path on CPU)."""

from typing import Any


class Executor:
    supports_async_scheduling = False

    @classmethod
    def get_class(cls, vllm_config: Any) -> type:
        del vllm_config
        return cls
