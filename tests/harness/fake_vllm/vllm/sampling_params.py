"""``vllm.sampling_params``: Xinference drops every key this signature does not name."""

from typing import Any


class SamplingParams:
    def __init__(
        self,
        n: int = 1,
        presence_penalty: float = 0.0,
        frequency_penalty: float = 0.0,
        repetition_penalty: float = 1.0,
        temperature: float = 1.0,
        top_p: float = 1.0,
        top_k: int = -1,
        seed: int | None = None,
        stop: Any = None,
        stop_token_ids: Any = None,
        ignore_eos: bool = False,
        max_tokens: int | None = 16,
        logprobs: int | None = None,
        prompt_logprobs: int | None = None,
        skip_special_tokens: bool = True,
    ) -> None:
        self.__dict__.update({k: v for k, v in locals().items() if k not in ("self", "__class__")})
        self.extra_args: dict | None = None


class StructuredOutputsParams:
    """Present so Xinference finds a structured-output class; the fake engine ignores it."""

    def __init__(self, **kwargs: Any) -> None:
        self.__dict__.update(kwargs)
