"""Reconcile passes against a real Xinference 4.1.0 (CPU, loopback; started by this script).

Usage: python benchmarks/live_bench.py [--max-models 20] [--parts 1,2,3]

1. HTTP calls and wall time of a pass with nothing to do, as the number of running models grows
   (target: constant calls, at most 4).
2. Two launches pinned to the two workers of a supervisor + 2 workers cluster: in parallel (the
   reconciler's default: both are sent in one pass and load side by side) vs one after another
   (``max_actions_per_pass = 1``: the second is sent by a later pass), time to converge and ratio.
3. Learning the workers' vLLM version (the fake vLLM engine of tests/harness/fake_vllm): HTTP calls
   of an observation with vLLM models running, the first one and the ones after (target: one extra
   call per worker once, then none).
Needs the server venv (scripts/install-xinference-server.sh).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from daemon.adapters.secrets import Credentials
from daemon.adapters.state_file import StateStore
from daemon.adapters.xinference import XinferenceAdapter
from daemon.core.demand import resolve_model
from daemon.core.desired import Config
from daemon.reconciler import Options, reconcile_once
from tests.harness import server as xh


def embedding(name: str, worker: str | None = None) -> dict[str, Any]:
    placement: dict[str, Any] = {"device": "cpu"}
    if worker:
        placement["worker"] = worker
    return {
        "model_name": name,
        "model_type": "embedding",
        "model_engine": "sentence_transformers",
        "placement": placement,
    }


def config(models: dict[str, Any]) -> Config:
    return Config.model_validate(
        {"policy": {"mode": "enforce", "max_actions_per_pass": 100}, "models": models}
    )


def one_pass(
    adapter: XinferenceAdapter, cfg: Config, store: StateStore, sent: dict[str, float]
) -> tuple[int, float, Any]:
    demands = {uid: resolve_model(uid, spec) for uid, spec in cfg.models.items()}
    calls = adapter.calls
    start = time.perf_counter()
    report = reconcile_once(
        config=cfg,
        demands=demands,
        cluster=adapter,
        store=store,
        opts=Options(act=True, sent=sent),
    )
    return adapter.calls - calls, time.perf_counter() - start, report


def converge(adapter: XinferenceAdapter, cfg: Config, store: StateStore) -> tuple[float, Any]:
    """Passes 0.25 s apart (a pass never waits for a load) until the cluster matches the file."""
    sent: dict[str, float] = {}
    start = time.perf_counter()
    while True:
        _, _, report = one_pass(adapter, cfg, store, sent)
        if report.converged or (report.failed and not report.settlement.loading):
            return time.perf_counter() - start, report
        time.sleep(0.25)


def part1(max_models: int, paths: dict[str, Any], workdir: Path) -> list[tuple[int, int, float]]:
    rows = []
    with xh.XinferenceServer(auth=False) as srv:
        names = xh.register_custom_models(srv.base_url, None, paths)
        adapter = XinferenceAdapter(
            endpoint=srv.base_url, credentials=Credentials(mode="none"), timeout_seconds=60
        )
        store = StateStore(workdir / "state1")
        models: dict[str, Any] = {}
        steps = sorted({1, 5, 10, max_models} | ({20} if max_models >= 20 else set()))
        for n in steps:
            while len(models) < n:
                models[f"emb-{len(models):02d}"] = embedding(names["embedding"])
            seconds, report = converge(adapter, config(models), store)
            assert report.converged, [r.message for r in report.failed]
            samples = [one_pass(adapter, config(models), store, {}) for _ in range(10)]
            calls = {c for c, _, _ in samples}
            assert len(calls) == 1, calls
            rows.append((n, calls.pop(), statistics.median(s for _, s, _ in samples)))
            print(
                f"  {n:3d} models running: {rows[-1][1]} HTTP calls per no-op pass, median "
                f"{rows[-1][2] * 1000:.1f} ms (launching them took {seconds:.1f} s)",
                flush=True,
            )
    return rows


def part2(paths: dict[str, Any], workdir: Path) -> tuple[float, float]:
    with xh.XinferenceCluster(2, auth=False) as cluster:
        names = xh.register_custom_models(cluster.base_url, None, paths)
        workers = sorted(xh.worker_addresses(xh.get_status(cluster.base_url)))
        adapter = XinferenceAdapter(
            endpoint=cluster.base_url, credentials=Credentials(mode="none"), timeout_seconds=60
        )
        timings = {}
        for label, per_pass in (("parallel", 100), ("sequential", 1), ("parallel-again", 100)):
            models = {
                f"{label}-{i}": embedding(names["embedding"], w) for i, w in enumerate(workers)
            }
            cfg = Config.model_validate(
                {
                    "policy": {"mode": "enforce", "max_actions_per_pass": per_pass},
                    "models": models,
                }
            )
            seconds, report = converge(adapter, cfg, StateStore(workdir / label))
            assert report.converged, [r.message for r in report.failed]
            timings[label] = seconds
            print(f"  {label:<15} 2 launches on 2 workers: {seconds:.1f} s", flush=True)
            for uid in models:
                adapter.terminate(uid)
        return (timings["parallel"] + timings["parallel-again"]) / 2, timings["sequential"]


def part3(paths: dict[str, Any], workdir: Path, models: int = 3) -> tuple[int, int, int]:
    """(calls of a plain observation, of the first with vLLM models running, of the ones after)."""
    fake = xh.FakeVllm(workdir / "fake-vllm", version="0.11.2")
    with xh.XinferenceServer(auth=False, extra_env=fake.env()) as srv:
        names = xh.register_custom_models(srv.base_url, None, paths)
        adapter = XinferenceAdapter(
            endpoint=srv.base_url, credentials=Credentials(mode="none"), timeout_seconds=60
        )
        before = adapter.calls
        adapter.observe()
        plain = adapter.calls - before
        uids = [f"vllm-{i}" for i in range(models)]
        for uid in uids:
            body = {"model_uid": uid, "model_name": names["LLM"], "model_type": "LLM"}
            result = xh.launch_model(
                srv.base_url, None, {**body, "model_engine": "vLLM"}, wait_ready=True
            )
            assert result.ok, result.body
        counts = []
        for _ in range(5):
            before = adapter.calls
            workers, _ = adapter.observe()
            counts.append(adapter.calls - before)
            assert {w.vllm_version for w in workers} == {"0.11.2"}, workers
        for uid in uids:
            adapter.terminate(uid)
        print(
            f"  {models} vLLM models on one worker: observation {plain} calls without them, "
            f"{counts[0]} the first time with them, then {sorted(set(counts[1:]))} (version "
            f"learned: 0.11.2)",
            flush=True,
        )
        return plain, counts[0], max(counts[1:])


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--max-models", type=int, default=20)
    parser.add_argument("--parts", default="1,2,3", help="which parts to run, e.g. 3")
    args = parser.parse_args()
    parts = {int(p) for p in args.parts.split(",")}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        tiny = xh.build_tiny_models(work / "models")
        if 1 in parts:
            print("part 1: no-op pass cost vs models running")
            part1(args.max_models, tiny, work)
        if 2 in parts:
            print("part 2: parallel vs sequential launches on two workers")
            par, seq = part2(tiny, work)
            print(f"  parallel {par:.1f} s vs sequential {seq:.1f} s: ratio {seq / par:.2f}x")
        if 3 in parts:
            print("part 3: learning the vLLM version of a worker")
            part3(tiny, work)
