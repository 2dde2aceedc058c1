"""``vllm.config``: only imported (multi-GPU path)."""

from ._fake import VllmConfig

__all__ = ["VllmConfig"]
