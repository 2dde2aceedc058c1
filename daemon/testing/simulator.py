"""``apply_plan``: what a perfectly obedient Xinference would do with a plan. Terminations free the
memory accounted to the model; launches appear READY at the planned GPUs and hold their claims.
Property tests use it to check that planning again after applying yields nothing to do."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from types import MappingProxyType

from daemon.core.demand import Demand
from daemon.core.desired import Config
from daemon.core.observed import GpuRef, ObservedState, RunningModel, Worker
from daemon.core.ownership import LaunchRecord
from daemon.core.planning import Launch, Plan, Terminate, plan


def _held(observed: ObservedState, uid: str) -> dict[GpuRef, int]:
    model = observed.model(uid)
    if model is None:
        return {}
    record = observed.managed.get(uid)
    out = {}
    for ref in model.gpu_refs:
        if ref in model.gpu_memory:
            out[ref] = model.gpu_memory[ref]
        elif record is not None and ref in record.claims:
            out[ref] = record.claims[ref]
    return out


def apply_plan(observed: ObservedState, plan: Plan, *, config_revision: str = "") -> ObservedState:
    """The observed state after every action of ``plan`` succeeded."""
    used: dict[GpuRef, int] = {g.ref: g.used_bytes for g in observed.gpus}
    models = {m.uid: m for m in observed.models}
    managed = dict(observed.managed)
    for action in plan.actions:
        if isinstance(action, Terminate):
            for ref, held in _held(observed, action.uid).items():
                used[ref] -= held
            models.pop(action.uid, None)
            managed.pop(action.uid, None)
    for action in plan.actions:
        if not isinstance(action, Launch):
            continue
        for ref, claim in action.claims.items():
            used[ref] += claim
        args = action.launch_args
        size = args.get("model_size_in_billions")
        models[action.uid] = RunningModel(
            uid=action.uid,
            model_name=action.model_name,
            model_type=action.model_type,
            model_engine=args.get("model_engine"),
            model_format=args.get("model_format"),
            model_size_in_billions=None if size is None else str(size),
            quantization=args.get("quantization"),
            replicas=action.replica,
            status="READY",
            worker=action.worker,
            gpu_indexes=action.gpu_indexes,
        )
        managed[action.uid] = LaunchRecord(
            uid=action.uid,
            spec_hash=action.spec_hash,
            config_revision=config_revision,
            claims=MappingProxyType(dict(action.claims)),
        )
    workers = tuple(
        Worker(
            address=w.address,
            gpus=tuple(replace(g, used_bytes=used[g.ref]) for g in w.gpus),
        )
        for w in observed.workers
    )
    return ObservedState(
        workers=workers,
        models=tuple(sorted(models.values(), key=lambda m: m.uid)),
        managed=MappingProxyType(managed),
        backing_off=observed.backing_off,
    )


def run_to_completion(
    config: Config,
    demands: Mapping[str, Demand],
    observed: ObservedState,
    *,
    rounds: int,
) -> tuple[list[Plan], ObservedState]:
    """Plan, apply, plan again... as the daemon's passes would with a server that loads instantly:
    until a plan has nothing to do now or later (no actions, nothing waiting or deferred), at most
    ``rounds`` plans. Returns every plan made and the final observed state."""
    plans = [plan(config, demands, observed)]
    while plans[-1].has_changes and len(plans) < rounds:
        observed = apply_plan(observed, plans[-1])
        plans.append(plan(config, demands, observed))
    return plans, observed
