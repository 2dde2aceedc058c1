"""``vllm.engine.arg_utils``: engine arguments that keep exactly what they were given."""

from typing import Any


class EngineArgs:
    """Accepts any keyword argument and keeps the exact set in ``xr_kwargs`` (what the fake
    engine records). Unlike real vLLM it rejects nothing: the tests want to see what arrives."""

    def __init__(self, **kwargs: Any) -> None:
        self.xr_kwargs = dict(kwargs)
        self.__dict__.update(kwargs)

    def create_engine_config(self, *args: Any, **kwargs: Any) -> Any:
        from vllm._fake import make_vllm_config

        del args, kwargs
        return make_vllm_config(self.xr_kwargs)


class AsyncEngineArgs(EngineArgs):
    pass
