"""``vllm.inputs.data``: the prompt dictionaries."""

import sys

if sys.version_info >= (3, 11):
    from typing import NotRequired, TypedDict
else:  # Python 3.10 has no typing.NotRequired; the server venv installs typing_extensions
    from typing_extensions import NotRequired, TypedDict


class TextPrompt(TypedDict):
    prompt: str
    cache_salt: NotRequired[str]


class TokensPrompt(TypedDict):
    prompt_token_ids: list[int]
    cache_salt: NotRequired[str]
