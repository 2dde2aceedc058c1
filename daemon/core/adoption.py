"""Adoption: a config document that describes what a running cluster serves now, so that a
hand-run cluster can be put under version control (``xinference-reconciler import``).

Lossless where the facts exist: a model this tool launched is written with the spec it was launched
with (its state file), so the imported file plans no replace; a custom model is written with its
registration (model URI and spec, as the server stores it), so the file rebuilds the cluster on a
server that lost its registrations. Anything else is described from what the server reports.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from daemon.core.desired import ModelSpec
from daemon.core.drift import differences
from daemon.core.observed import ObservedState, RunningModel
from daemon.core.ownership import LaunchRecord

# Keys of a stored registration that the config's own keys give (core/custom.py builds them back).
_FROM_MODEL_KEYS = frozenset({"version", "model_name", "model_specs", "is_builtin"})


def imported_config(
    observed: ObservedState,
    *,
    endpoint: str,
    auth: dict[str, Any],
    records: Mapping[str, LaunchRecord] | None = None,
    registrations: Mapping[tuple[str, str], Mapping[str, Any]] | None = None,
) -> dict[str, Any]:
    """A config document describing what runs now (READY models), safe by default (observe, no
    prune). ``records``: this tool's launch records (its state file); ``registrations``: the stored
    JSON of each custom model, by (model type, model name), as ``GET /v1/model_registrations``
    answers it."""
    models: dict[str, Any] = {}
    for m in observed.models:
        if m.status != "READY" or m.model_type is None:
            continue  # launching, failed, or not described by the server: nothing to adopt yet
        launched = _as_launched(m, (records or {}).get(m.uid))
        entry = launched if launched is not None else _as_observed(m, observed)
        stored = (registrations or {}).get((m.model_type, m.model_name))
        if stored is not None and launched is None:
            entry.update(_custom_entry(stored, entry))
        models[m.uid] = entry
    return {
        "schema_version": 1,
        "cluster": {"endpoint": endpoint, "auth": auth},
        "policy": {"mode": "observe", "prune": "none"},
        "models": models,
    }


def _as_launched(running: RunningModel, record: LaunchRecord | None) -> dict[str, Any] | None:
    """The spec this tool launched ``running`` with, when it recorded one and the server still
    runs exactly that (else None: the observation is the truth)."""
    if record is None or not record.spec:
        return None
    entry = _toml_ready(unflatten(record.spec))
    try:
        spec = ModelSpec.model_validate(entry)
    except ValueError:
        return None  # written by another version of this tool: describe what runs instead
    if spec.spec_hash() != record.spec_hash or differences(spec, running):
        return None
    assert isinstance(entry, dict)
    return entry


def _as_observed(m: RunningModel, observed: ObservedState) -> dict[str, Any]:
    entry: dict[str, Any] = {"model_name": m.model_name, "model_type": m.model_type}
    for key in ("model_engine", "model_format", "quantization"):
        value = getattr(m, key)
        if value:
            entry[key] = value
    if m.model_size_in_billions is not None:
        entry["model_size_in_billions"] = m.model_size_in_billions
    if m.replicas != 1:
        entry["replicas"] = m.replicas
    placement: dict[str, Any] = {}
    if m.gpu_indexes and m.worker:
        placement = {
            "worker": m.worker,
            "gpu_indexes": list(m.gpu_indexes),
            "gpus": max(1, len(m.gpu_indexes) // m.replicas),
        }
        reported = list(m.gpu_memory.values())
        if reported:
            entry["memory"] = {"estimate_gib": round(max(reported) / 2**30, 2)}
    else:  # no GPU reported for it: it runs on the CPU (even on a worker that has GPUs)
        placement = {"device": "cpu"}
        if m.worker and len(observed.workers) > 1:
            placement["worker"] = m.worker
    entry["placement"] = placement
    return entry


def _custom_entry(stored: Mapping[str, Any], entry: Mapping[str, Any]) -> dict[str, Any]:
    """The ``custom`` table (and the model keys its files give) from a stored registration."""
    files = (stored.get("model_specs") or [{}])[0]
    spec = {k: v for k, v in stored.items() if k not in _FROM_MODEL_KEYS}
    out: dict[str, Any] = {"custom": {"model_uri": str(files.get("model_uri") or "")}}
    cleaned = _toml_ready(spec)
    if cleaned:
        out["custom"]["spec"] = cleaned
    for key in ("model_format", "quantization", "model_size_in_billions"):
        if key not in entry and files.get(key) is not None:
            out[key] = files[key]
    return out


def unflatten(flat: Mapping[str, Any]) -> dict[str, Any]:
    """The inverse of ``desired.flatten``: dotted keys -> nested tables (``engine_args.X`` keeps
    ``X`` whole: flatten never splits below engine_args)."""
    out: dict[str, Any] = {}
    for dotted, value in flat.items():
        head, _, rest = dotted.partition(".")
        parts = [head, rest] if head == "engine_args" and rest else dotted.split(".")
        target = out
        for part in parts[:-1]:
            target = target.setdefault(part, {})
        target[parts[-1]] = value
    return out


def _toml_ready(value: Any) -> Any:
    """``value`` without what TOML cannot write or the config does not need: None (every such key
    defaults to None) and the empty tables that only stand for defaults."""
    if isinstance(value, Mapping):
        out = {}
        for k, v in value.items():
            cleaned = _toml_ready(v)
            if cleaned is None or (isinstance(v, Mapping) and v and not cleaned):
                continue
            if isinstance(v, Mapping) and not v:
                continue
            out[k] = cleaned
        return out
    if isinstance(value, list | tuple):
        return [_toml_ready(v) for v in value if v is not None]
    return value
