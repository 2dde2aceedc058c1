"""A FAKE ``vllm`` package for the integration tests -- not vLLM.

It exists only so that a real Xinference 4.1.0 server on a machine without GPU (and without
vLLM) accepts ``model_engine="vLLM"`` for the harness's tiny LLM, builds its engine arguments as
it would for real vLLM, and hands them to this package, which records them and then starts or
fails as a test scripted. See ``tests/harness/fake_vllm/README.md`` and ``_fake.py``.
"""

from . import envs
from ._fake import version as _version
from .engine.arg_utils import AsyncEngineArgs, EngineArgs
from .engine.async_llm_engine import AsyncLLMEngine
from .inputs import TextPrompt, TokensPrompt
from .outputs import CompletionOutput, RequestOutput
from .sampling_params import SamplingParams

__version__ = _version()
XR_FAKE_VLLM = True  # how a test (or a curious reader) tells this package from the real one

__all__ = [
    "XR_FAKE_VLLM",
    "AsyncEngineArgs",
    "AsyncLLMEngine",
    "CompletionOutput",
    "EngineArgs",
    "RequestOutput",
    "SamplingParams",
    "TextPrompt",
    "TokensPrompt",
    "__version__",
    "envs",
]
