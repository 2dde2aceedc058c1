"""``vllm.engine.async_llm_engine``: ``AsyncLLMEngine.from_engine_args`` builds the fake engine."""

from typing import Any


class AsyncEngineDeadError(RuntimeError):
    pass


class AsyncLLMEngine:
    @classmethod
    def from_engine_args(cls, engine_args: Any, **kwargs: Any) -> Any:
        from vllm._fake import construct_engine

        return construct_engine(engine_args, kwargs)
