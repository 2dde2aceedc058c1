"""Adoption: a config document that describes what a running cluster serves now, so that a
hand-run cluster can be put under version control (``xinference-reconciler import``)."""

from __future__ import annotations

from typing import Any

from daemon.core.observed import ObservedState


def imported_config(
    observed: ObservedState, *, endpoint: str, auth: dict[str, Any]
) -> dict[str, Any]:
    """A config document describing what runs now (READY models), safe by default (observe, no prune)."""
    models: dict[str, Any] = {}
    gpu_workers = {w.address for w in observed.workers if w.gpus}
    for m in observed.models:
        if m.status != "READY" or m.model_type is None:
            continue  # launching, failed, or not described by the server: nothing to adopt yet
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
            reported = [b for ref, b in m.gpu_memory.items()]
            if reported:
                entry["memory"] = {"estimate_gib": round(max(reported) / 2**30, 2)}
        elif m.worker not in gpu_workers:
            placement = {"device": "cpu"}
            if m.worker and len(observed.workers) > 1:
                placement["worker"] = m.worker
        if placement:
            entry["placement"] = placement
        models[m.uid] = entry
    return {
        "schema_version": 1,
        "cluster": {"endpoint": endpoint, "auth": auth},
        "policy": {"mode": "observe", "prune": "none"},
        "models": models,
    }
