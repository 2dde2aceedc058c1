"""The test-only fake vLLM engine: records its engine arguments, then starts or fails as scripted.

Everything here runs inside the Xinference model process (the sub pool that Xinference's own
``xinference/model/llm/vllm/core.py`` loads the model in). Standard library only, except
``transformers`` (for the tokenizer of a chat request) and ``torch`` (only to raise a genuine
``torch.OutOfMemoryError`` when a script asks for one); both are in the server venv.

Environment of the server process (inherited by its model processes):

``XR_FAKE_VLLM_VERSION``  ``vllm.__version__`` (default :data:`DEFAULT_VERSION`).
``XR_FAKE_VLLM_RECORD``   a directory: each engine construction writes ``<uid>.json`` (the latest
                          construction of that model uid) and appends one line to
                          ``<uid>.jsonl`` (every construction), see :func:`record`.
``XR_FAKE_VLLM_SCRIPT``   a directory of scripts, see :func:`find_script`.
``XR_FAKE_VLLM_REPLY``    the text every generation answers (default :data:`DEFAULT_REPLY`).

The model uid is the one Xinference puts in ``XINFERENCE_MODEL_UID`` for the model process
(``<uid>-rep<n>``); the ``-rep<n>`` replica suffix is removed for file names.
"""

from __future__ import annotations

import builtins
import contextlib
import importlib
import json
import os
import re
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any

DEFAULT_VERSION = "0.11.0"
DEFAULT_REPLY = "This is the fake vLLM engine speaking."
VERSION_ENV = "XR_FAKE_VLLM_VERSION"
RECORD_ENV = "XR_FAKE_VLLM_RECORD"
SCRIPT_ENV = "XR_FAKE_VLLM_SCRIPT"
REPLY_ENV = "XR_FAKE_VLLM_REPLY"

# What vLLM V1's front end raises when its EngineCore process died during start-up; the root
# cause is only printed by the EngineCore process (vllm/v1/engine/utils.py, wait_for_engine_startup).
ENGINE_CORE_WRAPPER = (
    "Engine core initialization failed. See root cause above. Failed core proc(s): {}"
)

_REPLICA_SUFFIX = re.compile(r"-rep\d+$")
_lock = threading.Lock()


def version() -> str:
    return os.environ.get(VERSION_ENV) or DEFAULT_VERSION


def replica_model_uid() -> str:
    return os.environ.get("XINFERENCE_MODEL_UID", "")


def model_uid() -> str:
    """The launch's model uid (without Xinference's ``-rep<n>`` replica suffix)."""
    return _REPLICA_SUFFIX.sub("", replica_model_uid()) or "unknown-model"


def _safe_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._=-]", "_", name)


def _jsonable(value: Any) -> Any:
    """JSON values stay as they are; anything else becomes its repr (so a test sees it)."""
    try:
        json.dumps(value)
    except (TypeError, ValueError):
        if isinstance(value, Mapping):
            return {str(k): _jsonable(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [_jsonable(v) for v in value]
        return repr(value)
    return value


# ---------------------------------------------------------------------------------- scripts


def find_script(engine_kwargs: Mapping[str, Any]) -> tuple[str | None, dict | None]:
    """The script for this construction: the first of ``<uid>.json``,
    ``max_model_len=<N>.json`` (``max_model_len=None.json`` when not set) and ``default.json`` in
    ``$XR_FAKE_VLLM_SCRIPT``; ``(None, None)`` when none exists (the engine starts).

    A script is a JSON object::

        {"outcome": "ready"}                        start normally (the default)
        {"outcome": "raise", "exception": "ValueError", "message": "..."}
                                                    raise that exception from from_engine_args,
                                                    as an in-process engine would
        {"outcome": "engine_core", "exception": "ValueError", "message": "...",
         "wrapper": "..."}                          what vLLM V1 does: print the root cause to
                                                    stderr as the EngineCore process would, then
                                                    raise RuntimeError(<wrapper>) (default
                                                    :data:`ENGINE_CORE_WRAPPER`)

    plus, for any outcome, ``"delay_s"`` (sleep first, a slow load) and ``"times"`` (the script
    applies to the first N constructions that select it; later ones start normally).
    ``exception`` is a builtin name (``ValueError``, ``RuntimeError``...) or a dotted path
    (``torch.OutOfMemoryError``).
    """
    root = os.environ.get(SCRIPT_ENV)
    if not root:
        return None, None
    keys = [model_uid(), f"max_model_len={engine_kwargs.get('max_model_len')}", "default"]
    for key in keys:
        path = Path(root) / f"{_safe_name(key)}.json"
        if not path.is_file():
            continue
        script = json.loads(path.read_text())
        if not isinstance(script, dict):
            raise TypeError(f"fake vllm script {path} is not a JSON object")
        times = script.get("times")
        if times is not None:
            used = _count_use(path)
            if used > int(times):
                return key, {"outcome": "ready", "exhausted": script}
        return key, script
    return None, None


def _count_use(path: Path) -> int:
    """How many constructions (this one included) selected the script at ``path``."""
    counter = path.with_suffix(".used")
    with _lock, open(counter, "a+", encoding="utf-8") as f:
        f.write("x")
        f.flush()
        f.seek(0)
        return len(f.read())


def build_exception(name: str, message: str) -> BaseException:
    if "." in name:
        module_name, _, attr = name.rpartition(".")
        cls = getattr(importlib.import_module(module_name), attr)
    else:
        cls = getattr(builtins, name)
    if not (isinstance(cls, type) and issubclass(cls, BaseException)):
        raise TypeError(f"fake vllm script: {name} is not an exception class")
    return cls(message)


def _print_engine_core_root_cause(exc: BaseException) -> None:
    """Print the root cause the way vLLM's EngineCore process logs it (to stderr)."""
    prefix = f"(EngineCore_DP0 pid={os.getpid()}) "
    stamp = time.strftime("%m-%d %H:%M:%S")
    lines = [f"ERROR {stamp} [core.py:708] EngineCore failed to start."]
    lines += traceback.format_exception_only(type(exc), exc)
    text = "".join(prefix + line.rstrip("\n") + "\n" for line in "\n".join(lines).splitlines())
    sys.stderr.write(text)
    sys.stderr.flush()


# ---------------------------------------------------------------------------------- records


def record(entry: dict) -> None:
    """Write ``<uid>.json`` (latest construction) and append to ``<uid>.jsonl`` (all of them)."""
    root = os.environ.get(RECORD_ENV)
    if not root:
        return
    directory = Path(root)
    directory.mkdir(parents=True, exist_ok=True)
    name = _safe_name(entry["model_uid"])
    text = json.dumps(_jsonable(entry), sort_keys=True)
    with _lock:
        fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{name}.", suffix=".tmp")
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text + "\n")
        os.replace(tmp, directory / f"{name}.json")
        with open(directory / f"{name}.jsonl", "a", encoding="utf-8") as f:
            f.write(text + "\n")


# ---------------------------------------------------------------------------------- engine


class _Namespace:
    def __init__(self, **fields: Any) -> None:
        self.__dict__.update(fields)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.__dict__!r})"


class ModelConfig(_Namespace):
    model: str
    max_model_len: int


class CacheConfig(_Namespace):
    pass


class VllmConfig(_Namespace):
    model_config: ModelConfig
    cache_config: CacheConfig


def _default_max_model_len(model_path: str) -> int:
    """What vLLM derives when max_model_len is not given: the model's own context length."""
    try:
        config = json.loads((Path(model_path) / "config.json").read_text())
    except (OSError, ValueError):
        return 2048
    return int(config.get("max_position_embeddings") or 2048)


def make_vllm_config(engine_kwargs: Mapping[str, Any]) -> VllmConfig:
    model = str(engine_kwargs.get("model", ""))
    max_model_len = engine_kwargs.get("max_model_len") or _default_max_model_len(model)
    model_config = ModelConfig(model=model, max_model_len=int(max_model_len))
    cache_config = CacheConfig(
        gpu_memory_utilization=engine_kwargs.get("gpu_memory_utilization", 0.9),
        kv_cache_memory_bytes=engine_kwargs.get("kv_cache_memory_bytes"),
        block_size=engine_kwargs.get("block_size"),
    )
    return VllmConfig(
        model_config=model_config,
        cache_config=cache_config,
        structured_outputs_config=None,
        reasoning_config=None,
    )


class _Executor:
    def shutdown(self) -> None:
        return None


class FakeAsyncEngine:
    """What ``AsyncLLMEngine.from_engine_args`` returns once the engine "started"."""

    def __init__(self, engine_kwargs: Mapping[str, Any]) -> None:
        self.engine_kwargs = dict(engine_kwargs)
        self.vllm_config = make_vllm_config(engine_kwargs)
        self.model_config = self.vllm_config.model_config
        # the V0 layout (engine.engine.vllm_config / .model_executor) that Xinference reads when
        # it decides the engine is not V1
        self.engine = _Namespace(vllm_config=self.vllm_config, model_executor=_Executor())
        self._tokenizer: Any = None

    # -- lifecycle ------------------------------------------------------------------------
    async def check_health(self) -> None:
        return None

    def shutdown(self) -> None:
        return None

    async def get_supported_tasks(self) -> tuple:
        return ("generate",)

    # -- generation -----------------------------------------------------------------------
    async def get_tokenizer(self, *args: Any, **kwargs: Any) -> Any:
        del args, kwargs  # vLLM's signature changed between releases; the tokenizer is one
        if self._tokenizer is None:
            from transformers import AutoTokenizer

            self._tokenizer = AutoTokenizer.from_pretrained(self.model_config.model)
        return self._tokenizer

    async def abort(self, request_id: Any) -> None:
        del request_id

    async def generate(
        self, prompt: Any, sampling_params: Any, request_id: str, **kwargs: Any
    ) -> AsyncIterator[Any]:
        from .outputs import CompletionOutput, RequestOutput

        del kwargs
        if isinstance(prompt, Mapping) and "prompt_token_ids" in prompt:
            prompt_text, prompt_ids = None, list(prompt["prompt_token_ids"])
        else:
            prompt_text = prompt.get("prompt") if isinstance(prompt, Mapping) else str(prompt)
            tokenizer = await self.get_tokenizer()
            prompt_ids = list(tokenizer(prompt_text).input_ids)
        words = (os.environ.get(REPLY_ENV) or DEFAULT_REPLY).split(" ")
        limit = getattr(sampling_params, "max_tokens", None)
        finish_reason = "stop"
        if limit is not None and len(words) > int(limit):
            words, finish_reason = words[: max(int(limit), 0)], "length"
        if not words:
            words = [""]
        for i in range(len(words)):
            done = i == len(words) - 1
            yield RequestOutput(
                request_id=request_id,
                prompt=prompt_text,
                prompt_token_ids=prompt_ids,
                outputs=[
                    CompletionOutput(
                        index=0,
                        text=" ".join(words[: i + 1]),
                        token_ids=list(range(i + 1)) if words[0] else [],
                        finish_reason=finish_reason if done else None,
                    )
                ],
                finished=done,
            )


def construct_engine(engine_args: Any, from_engine_args_kwargs: Mapping[str, Any]) -> Any:
    """``AsyncLLMEngine.from_engine_args``: record, then do what the script says."""
    engine_kwargs = dict(getattr(engine_args, "xr_kwargs", {}))
    key, script = find_script(engine_kwargs)
    entry: dict[str, Any] = {
        "model_uid": model_uid(),
        "replica_model_uid": replica_model_uid(),
        "pid": os.getpid(),
        "time": time.time(),
        "vllm_version": version(),
        "engine_args_class": type(engine_args).__name__,
        "engine_args": engine_kwargs,
        "from_engine_args_kwargs": dict(from_engine_args_kwargs),
        "env": {
            k: os.environ.get(k)
            for k in ("CUDA_VISIBLE_DEVICES", "VLLM_USE_V1", "VLLM_WORKER_MULTIPROC_METHOD")
        },
        "script_key": key,
        "script": script,
    }
    script = script or {}
    outcome = script.get("outcome", "ready")
    with contextlib.suppress(TypeError, ValueError):
        time.sleep(max(float(script.get("delay_s", 0)), 0.0))
    if outcome == "ready":
        engine = FakeAsyncEngine(engine_kwargs)
        entry.update(outcome="ready", error=None)
        record(entry)
        return engine
    if outcome not in ("raise", "engine_core"):
        raise ValueError(f"fake vllm script {key}: unknown outcome {outcome!r}")
    root = build_exception(str(script.get("exception", "RuntimeError")), str(script["message"]))
    raised: BaseException = root
    if outcome == "engine_core":
        _print_engine_core_root_cause(root)
        raised = RuntimeError(str(script.get("wrapper") or ENGINE_CORE_WRAPPER))
    entry.update(
        outcome=outcome,
        error="".join(traceback.format_exception_only(type(raised), raised)).strip(),
        root_cause="".join(traceback.format_exception_only(type(root), root)).strip(),
    )
    record(entry)
    raise raised
