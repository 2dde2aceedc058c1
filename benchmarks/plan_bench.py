"""Plan time and peak memory for a large cluster, and how often greedy placement alone would refuse
a model that exhaustive search can place.

Usage: python benchmarks/plan_bench.py [--runs N] [--instances N]

Part 1: 1,000 desired models (a mix of vLLM LLMs with computed utilization, fixed-size embedding
and rerank models, tensor-parallel pairs, pinned and CPU models) over 64 workers x 8 GPUs of 79.2 GiB.
The cluster is empty, so every model is planned (the worst case for admission).
Part 2: small random instances (<= 6 models, <= 2 workers x 3 GPUs); for each, the plan with the
search disabled (pure greedy) and the real plan (greedy + bounded exhaustive fallback) are compared.
"""

from __future__ import annotations

import argparse
import platform
import random
import statistics
import time
import tracemalloc
from typing import Any

from daemon.core.demand import resolve_model
from daemon.core.desired import Config
from daemon.core.observed import ObservedState
from daemon.core.planning import Launch, plan
from daemon.testing.builders import gpu_worker

LLM_ARCH = {
    "model_type": "llama",
    "num_hidden_layers": 32,
    "hidden_size": 4096,
    "num_attention_heads": 32,
    "num_key_value_heads": 8,
    "intermediate_size": 14336,
    "vocab_size": 128256,
    "max_position_embeddings": 131072,
}


def big_config(n_models: int, rng: random.Random) -> dict[str, Any]:
    models: dict[str, Any] = {}
    for i in range(n_models):
        kind = rng.random()
        if kind < 0.4:
            spec: dict[str, Any] = {
                "model_name": "llama-3.1-instruct",
                "model_engine": "vLLM",
                "model_size_in_billions": 8,
                "priority": rng.randint(0, 9),
                "memory": {
                    "max_model_len": rng.choice([8192, 32768]),
                    "gpu_memory_utilization": rng.choice(["auto", "minimum"]),
                },
            }
        elif kind < 0.5:
            spec = {
                "model_name": "llama",
                "model_engine": "vLLM",
                "priority": rng.randint(0, 9),
                "placement": {"gpus": 2},
                "architecture": {"fields": LLM_ARCH, "weights_gib": 7.5},
                "memory": {"max_model_len": 65536},
            }
        elif kind < 0.9:
            spec = {
                "model_name": rng.choice(["bge-m3", "bge-reranker-v2-m3"]),
                "model_type": "embedding",
                "model_engine": "sentence_transformers",
                "priority": rng.randint(0, 9),
            }
            if spec["model_name"] == "bge-reranker-v2-m3":
                spec["model_type"] = "rerank"
        elif kind < 0.95:
            spec = {
                "model_name": "bge-small-en-v1.5",
                "model_type": "embedding",
                "model_engine": "sentence_transformers",
                "placement": {"device": "cpu"},
            }
        else:
            w = rng.randrange(64)
            spec = {
                "model_name": "m",
                "model_engine": "Transformers",
                "memory": {"estimate_gib": 6.0},
                "placement": {
                    "worker": f"10.0.{w // 256}.{w % 256}:30001",
                    "gpu_indexes": [rng.randrange(8)],
                },
            }
        models[f"model-{i:04d}"] = spec
    return {"policy": {"mode": "enforce", "max_actions_per_pass": 10_000}, "models": models}


def part1(runs: int) -> dict[str, float]:
    rng = random.Random(1)
    cfg = Config.model_validate(big_config(1000, rng))
    demands = {uid: resolve_model(uid, spec) for uid, spec in cfg.models.items()}
    observed = ObservedState(
        workers=tuple(
            gpu_worker(f"10.0.{w // 256}.{w % 256}:30001", *[79.2] * 8, used_gib=0.6)
            for w in range(64)
        )
    )
    times = []
    result = None
    for _ in range(runs):
        start = time.perf_counter()
        result = plan(cfg, demands, observed)
        times.append(time.perf_counter() - start)
    tracemalloc.start()
    plan(cfg, demands, observed)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert result is not None
    return {
        "median_ms": statistics.median(times) * 1000,
        "min_ms": min(times) * 1000,
        "max_ms": max(times) * 1000,
        "peak_mib": peak / 2**20,
        "launches": sum(isinstance(a, Launch) for a in result.actions),
        "refused": len(result.refused),
    }


def small_instance(rng: random.Random) -> tuple[Config, ObservedState]:
    workers = tuple(
        gpu_worker(f"127.0.0.1:{30001 + w}", *rng.choices([16.0, 24.0, 40.0], k=rng.randint(1, 3)))
        for w in range(rng.randint(1, 2))
    )
    models = {
        f"m{i}": {
            "model_name": "m",
            "model_engine": "Transformers",
            "priority": rng.randint(0, 3),
            "placement": {"gpus": rng.choice([1, 1, 1, 2])},
            "memory": {"estimate_gib": rng.choice([3.0, 7.0, 10.0, 13.0, 17.0, 25.0])},
        }
        for i in range(rng.randint(2, 6))
    }
    cfg = Config.model_validate(
        {
            "policy": {
                "gpu_reserve_gib": 0.0,
                "gpu_max_fraction": 1.0,
                "max_actions_per_pass": 100,
            },
            "models": models,
        }
    )
    return cfg, ObservedState(workers=workers)


def part2(instances: int) -> dict[str, float]:
    rng = random.Random(2)
    greedy_refusals = exhaustive_refusals = instances_differing = 0
    for _ in range(instances):
        cfg, observed = small_instance(rng)
        demands = {uid: resolve_model(uid, spec) for uid, spec in cfg.models.items()}
        full = plan(cfg, demands, observed)
        greedy = plan(cfg, demands, observed, search_budget=0)
        greedy_refusals += len(greedy.refused)
        exhaustive_refusals += len(full.refused)
        instances_differing += len(greedy.refused) != len(full.refused)
    return {
        "instances": instances,
        "greedy_refusals": greedy_refusals,
        "with_search_refusals": exhaustive_refusals,
        "instances_where_search_admitted_more": instances_differing,
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--instances", type=int, default=2000)
    args = parser.parse_args()
    print(
        f"machine: {platform.machine()}, {platform.python_implementation()} {platform.python_version()}"
    )
    p1 = part1(args.runs)
    print(
        f"plan 1000 models / 64 workers x 8 GPUs: median {p1['median_ms']:.1f} ms "
        f"(min {p1['min_ms']:.1f}, max {p1['max_ms']:.1f}) over {args.runs} runs; "
        f"peak traced memory {p1['peak_mib']:.1f} MiB; {p1['launches']:.0f} launches, "
        f"{p1['refused']:.0f} refused"
    )
    p2 = part2(args.instances)
    print(
        f"small instances: {p2['instances']}; refusals greedy-only {p2['greedy_refusals']}, with "
        f"exhaustive fallback {p2['with_search_refusals']}; instances where the search admitted more: "
        f"{p2['instances_where_search_admitted_more']}"
    )
