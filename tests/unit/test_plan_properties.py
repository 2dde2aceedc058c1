"""Planner invariants, stated as properties over generated clusters and configs (hypothesis)."""

from __future__ import annotations

import itertools
import json
import random
from typing import Any

from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from daemon.cli.render import plan_json
from daemon.core.admission import precedence
from daemon.core.demand import Demand
from daemon.core.observed import ObservedState, Worker
from daemon.core.planning import Plan
from daemon.core.units import GiB
from daemon.testing.builders import gpu_worker
from daemon.testing.simulator import run_to_completion
from tests.unit.builders import config, demands, plan_for

WORKERS = ("127.0.0.1:30001", "127.0.0.1:30002", "127.0.0.1:30003")
LLM_ARCH = {
    "model_type": "llama",
    "num_hidden_layers": 16,
    "hidden_size": 2048,
    "num_attention_heads": 16,
    "num_key_value_heads": 4,
    "intermediate_size": 8192,
    "vocab_size": 32000,
    "max_position_embeddings": 8192,
}


@st.composite
def clusters(draw: st.DrawFn, max_workers: int = 3, max_gpus: int = 3) -> ObservedState:
    workers = []
    for address in WORKERS[: draw(st.integers(1, max_workers))]:
        sizes = draw(
            st.lists(st.sampled_from([16.0, 24.0, 47.5, 79.2]), min_size=0, max_size=max_gpus)
        )
        used = draw(st.sampled_from([0.0, 0.6, 4.0]))
        workers.append(gpu_worker(address, *sizes, used_gib=used))
    return ObservedState(workers=tuple(workers))


@st.composite
def model_specs(draw: st.DrawFn) -> dict[str, Any]:
    priority = draw(st.integers(0, 3))
    gpus = draw(st.sampled_from([1, 1, 1, 2]))
    if draw(st.booleans()):
        return {
            "model_name": "m",
            "model_engine": "Transformers",
            "priority": priority,
            "placement": {"gpus": gpus},
            "memory": {"estimate_gib": draw(st.sampled_from([2.0, 6.0, 11.0, 20.0, 35.0]))},
        }
    util = draw(st.sampled_from(["auto", "minimum", 0.3, 0.5]))
    return {
        "model_name": "llm",
        "model_engine": "vLLM",
        "priority": priority,
        "placement": {"gpus": gpus},
        "architecture": {"fields": LLM_ARCH, "weights_gib": 4.0 / gpus},
        "memory": {
            "max_model_len": draw(st.sampled_from([2048, 8192])),
            "gpu_memory_utilization": util,
        },
    }


configs = st.dictionaries(
    st.sampled_from(["a", "b", "c", "d", "e", "f"]), model_specs(), min_size=0, max_size=5
)
policies = st.fixed_dictionaries(
    {
        "gpu_reserve_gib": st.sampled_from([0.0, 0.5, 1.0]),
        "gpu_max_fraction": st.sampled_from([0.9, 1.0]),
    }
)
SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _limit(total: int, policy: dict[str, float]) -> int:
    return int(total * policy["gpu_max_fraction"]) - round(policy["gpu_reserve_gib"] * GiB)


@SETTINGS
@given(observed=clusters(), models=configs, policy=policies)
def test_no_gpu_is_ever_over_committed(
    observed: ObservedState, models: dict[str, Any], policy: dict[str, float]
) -> None:
    p = plan_for(config(models, max_actions_per_pass=100, **policy), observed)
    for gpu in observed.gpus:
        planned = sum(a.claims.get(gpu.ref, 0) for a in p.admitted)
        assert gpu.used_bytes + planned <= _limit(gpu.total_bytes, policy) or planned == 0


@SETTINGS
@given(observed=clusters(), models=configs, policy=policies)
def test_passes_converge_and_later_passes_only_send_what_waited(
    observed: ObservedState, models: dict[str, Any], policy: dict[str, float]
) -> None:
    """Applying each plan and planning again (one load per GPU per pass) ends with nothing to do,
    within one pass per model; later passes only send models the first plan admitted."""
    cfg = config(models, max_actions_per_pass=100, **policy)
    plans, _ = run_to_completion(cfg, demands(cfg), observed, rounds=len(models) + 2)
    assert not plans[-1].has_changes
    first = {a.uid for a in plans[0].admitted}
    later = {a.uid for p in plans[1:] for a in p.admitted}
    assert later <= first  # where and with how much may change: each pass plans afresh


def _shuffled(observed: ObservedState, seed: int) -> ObservedState:
    rng = random.Random(seed)
    workers = [
        Worker(address=w.address, gpus=tuple(rng.sample(w.gpus, len(w.gpus))))
        for w in observed.workers
    ]
    rng.shuffle(workers)
    return ObservedState(workers=tuple(workers))


@SETTINGS
@given(observed=clusters(), models=configs, seed=st.integers(0, 1000))
def test_the_plan_does_not_depend_on_input_order(
    observed: ObservedState, models: dict[str, Any], seed: int
) -> None:
    items = list(models.items())
    random.Random(seed).shuffle(items)
    first = plan_for(config(models), observed)
    second = plan_for(config(dict(items)), _shuffled(observed, seed))
    assert json.dumps(plan_json(first), sort_keys=True) == json.dumps(
        plan_json(second), sort_keys=True
    )


def _estimate_gib(d: Demand) -> float:
    gib = d.spec.memory.estimate_gib
    assert gib is not None  # every model of the test below sets one
    return gib


def _exists_placement(
    needs: list[tuple[int, int]], observed: ObservedState, limit: dict[Any, int]
) -> bool:
    """Brute force: can every (gpus, bytes) need be placed on GPUs of one worker each?"""
    options = []
    for k, _ in needs:
        opts = [
            combo
            for w in observed.workers
            for combo in itertools.combinations([g.ref for g in w.gpus], k)
        ]
        options.append(opts)
    for choice in itertools.product(*options):
        free = dict(limit)
        ok = True
        for (_, need), combo in zip(needs, choice, strict=True):
            for ref in combo:
                free[ref] -= need
                ok = ok and free[ref] >= 0
        if ok:
            return True
    return False


@settings(max_examples=200, deadline=None)
@given(
    observed=clusters(max_workers=2, max_gpus=3),
    sizes=st.lists(
        st.tuples(
            st.sampled_from([3.0, 7.0, 10.0, 13.0, 17.0, 25.0]),
            st.sampled_from([1, 1, 2]),
            st.integers(0, 2),
        ),
        min_size=1,
        max_size=4,
    ),
)
def test_a_model_is_refused_only_when_exhaustive_search_finds_no_placement_either(
    observed: ObservedState, sizes: list[tuple[float, int, int]]
) -> None:
    models = {
        f"m{i}": {
            "model_name": "m",
            "model_engine": "Transformers",
            "priority": prio,
            "placement": {"gpus": gpus},
            "memory": {"estimate_gib": gib},
        }
        for i, (gib, gpus, prio) in enumerate(sizes)
    }
    cfg = config(models, max_actions_per_pass=100)
    p: Plan = plan_for(cfg, observed)
    limit = {g.ref: g.total_bytes - g.used_bytes for g in observed.gpus}
    admitted = {a.uid for a in p.admitted}
    order = sorted(demands(cfg).values(), key=precedence)
    event(f"refused: {len(p.refused)}")
    for refusal in p.refused:
        before = [
            d for d in order[: [d.uid for d in order].index(refusal.uid)] if d.uid in admitted
        ]
        needs = [
            (d.gpus_needed, round(_estimate_gib(d) * GiB))
            for d in [*before, demands(cfg)[refusal.uid]]
        ]
        assert not _exists_placement(needs, observed, limit), refusal
