"""The launch request: the JSON body of Xinference's ``POST /v1/models`` for a planned launch, and
the check that every body this tool builds can be sent (validation, the planner and the adapter all
ask :func:`request_problems`, so whatever ``validate`` accepts, ``apply`` can send).

Which body key comes from which config key is written once here (:data:`BODY_KEYS`): Xinference
4.1.0's REST handler reads these keys itself and passes every other key to the engine
(docs/xinference-observed.md), so ``engine_args`` may not repeat them.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from daemon.core.naming import size_text

if TYPE_CHECKING:  # planning.py imports this module
    from daemon.core.planning import Launch

# Body key -> the config key it is taken from. engine_args may not set these: the launch would
# silently run another uid, on other GPUs or with another engine than the file says.
BODY_KEYS: Mapping[str, str] = {
    "model_uid": "the table key [models.<uid>]",
    "model_name": "model_name",
    "model_type": "model_type",
    "model_engine": "model_engine",
    "model_format": "model_format",
    "model_size_in_billions": "model_size_in_billions",
    "quantization": "quantization",
    "replica": "replicas",
    "n_gpu": "placement.gpus (or placement.device)",
    "worker_ip": "placement.worker",
    "gpu_idx": "placement.gpu_indexes",
    "download_hub": "download_hub",
    "model_path": "model_path",
}

# What TOML can hold that JSON cannot (tomllib gives datetime.date / time / datetime values).
_TOML_ONLY = {"date": "TOML date", "time": "TOML time", "datetime": "TOML date-time"}


def launch_body(launch: Launch) -> dict[str, Any]:
    """The JSON body of ``POST /v1/models`` for a planned launch."""
    args = dict(launch.launch_args)
    size = args.pop("model_size_in_billions", None)
    size = size_text(size)  # the REST API wants 7 or "1_5", not 1.5
    body: dict[str, Any] = {
        "model_uid": launch.uid,
        "model_name": launch.model_name,
        "model_type": launch.model_type,
        "replica": launch.replica,
        "n_gpu": launch.n_gpu,  # None: CPU only
        **({"model_size_in_billions": size} if size is not None else {}),
        **args,
    }
    if launch.worker is not None:
        body["worker_ip"] = launch.worker
    if launch.gpu_indexes:
        body["gpu_idx"] = list(launch.gpu_indexes)
    return body


def json_problems(value: Any, path: str) -> list[tuple[str, str]]:
    """Every place in ``value`` that JSON cannot carry, as (key path, message); list items are
    numbered from 0 (``limits.1``)."""
    if value is None or isinstance(value, str | bool | int):
        return []
    if isinstance(value, float):
        if math.isfinite(value):
            return []
        return [(path, f"{value} is not a JSON number; give a finite number")]
    if isinstance(value, Mapping):
        out: list[tuple[str, str]] = []
        for key, item in value.items():
            if not isinstance(key, str):
                out.append((path, f"key {key!r} is not a string"))
                continue
            out.extend(json_problems(item, f"{path}.{key}" if path else key))
        return out
    if isinstance(value, list | tuple):
        return [p for i, item in enumerate(value) for p in json_problems(item, f"{path}.{i}")]
    kind = _TOML_ONLY.get(type(value).__name__)
    if kind is not None:
        return [
            (
                path,
                f"a {kind} is not a JSON value and cannot be sent in a launch request; "
                f'write it as a string (quoted: "{value.isoformat()}")',
            )
        ]
    return [(path, f"a {type(value).__name__} is not a JSON value")]


def request_problems(launch: Launch, *, engine_args: Mapping[str, Any]) -> list[tuple[str, str]]:
    """What makes the launch request unsendable, as (config key path, message): the body is built
    exactly as it will be sent and checked as JSON. Keys that come from ``engine_args`` are named
    by their config path (``engine_args.speculative_config.released``)."""
    out = []
    for key, value in launch_body(launch).items():
        where = f"engine_args.{key}" if key in engine_args else key
        out.extend(json_problems(value, where))
    return out


def problems_text(problems: list[tuple[str, str]]) -> str:
    """``path: message; path: message`` for one line (a refusal, an error)."""
    return "; ".join(f"{path}: {message}" for path, message in problems)
