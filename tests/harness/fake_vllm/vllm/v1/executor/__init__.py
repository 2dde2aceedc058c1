"""``vllm.v1.executor`` (vLLM >= 0.11.1 layout)."""

from .abstract import Executor

__all__ = ["Executor"]
