"""Latencies of the level-triggered daemon against a real Xinference 4.1.0 (CPU, loopback, started
here), with a model load that hangs (the fake vLLM engine behind virtual GPUs, as in
tests/integration/test_level_triggered.py).

Usage: python benchmarks/level_bench.py [--edits 5] [--stalls 3] [--resync 10]

1. Edit -> action while a load hangs: the config is saved (atomic rename) with one CPU model
   removed, while another model's load never finishes; time until the daemon has loaded the new
   file (``config.loaded``: its pass sends the DELETE next) and until it reports the model
   terminated (the server answered the DELETE) (target < 2 s).
2. First pass after a stall: the daemon is SIGSTOPped for longer than its resync interval, then
   SIGCONTed; time until a pass has finished (target < 2 s).
"""

from __future__ import annotations

import argparse
import os
import platform
import signal
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.harness import server as xh
from tests.harness.daemon_process import DaemonProcess, event, write_atomically
from tests.harness.gpu_proxy import VirtualGpuProxy


def config(proxy_url: str, llm: str, llm_config: str, embedding: str, embeddings: list[str]) -> str:
    lines = [
        "[cluster]",
        f'endpoint = "{proxy_url}"',
        "timeout_seconds = 30",
        "[policy]",
        'mode = "enforce"',
        "gpu_reserve_gib = 0.0",
        "[models.slow]",
        f'model_name = "{llm}"',
        'model_type = "LLM"',
        'model_engine = "vLLM"',
        "[models.slow.architecture]",
        f'hf_config = "{llm_config}"',
        "[models.slow.memory]",
        "max_model_len = 4096",
    ]
    for uid in embeddings:
        lines += [
            f"[models.{uid}]",
            f'model_name = "{embedding}"',
            'model_type = "embedding"',
            'model_engine = "sentence_transformers"',
            f"[models.{uid}.placement]",
            'device = "cpu"',
        ]
    return "\n".join(lines) + "\n"


def slow_status(base_url: str) -> str:
    """The hanging model's status on the server (CREATING while its load hangs)."""
    found = xh.http_json("GET", f"{base_url}/v1/models/instances", params={"model_uid": "slow"})
    return str(found[0]["status"]) if found else "absent"


def measure_edits(
    daemon: DaemonProcess,
    cfg: Path,
    text: Callable[[list[str]], str],
    uids: list[str],
    base_url: str,
) -> list[tuple[float, float]]:
    """Remove the CPU models one edit at a time while the LLM's load hangs: per edit, the seconds
    until the daemon loaded the new file (its pass then sends the DELETE) and until the server
    answered that DELETE (``model.terminated``); only edits after which the other load was still
    ``CREATING`` are returned."""
    for uid in uids:
        daemon.wait_for(event("model.launch.succeeded", uid=uid), timeout=600)
    edits = []
    kept = list(uids)
    while kept:
        removed = kept.pop()
        start = time.monotonic()
        write_atomically(cfg, text(kept))
        daemon.wait_for(event("config.loaded"), timeout=60)
        loaded = time.monotonic() - start
        seen = len(daemon.seen)
        daemon.wait_for(event("model.terminated", uid=removed), timeout=60)
        terminated = time.monotonic() - start
        between = [e["event"] for e in daemon.seen[seen:-1]]
        status = slow_status(base_url)
        print(
            f"  edit -> config.loaded {loaded * 1000:.0f} ms, "
            f"-> terminated {removed}: {terminated * 1000:.0f} ms "
            f"(slow model after it: {status}; events between: {between})",
            flush=True,
        )
        if status == "CREATING":  # only edits made while the other load still hung count
            edits.append((loaded, terminated))
    return edits


def measure_stalls(daemon: DaemonProcess, stalls: int, resync: float) -> list[float]:
    """SIGSTOP past the resync interval, SIGCONT, time to the next finished pass."""
    out = []
    for _ in range(stalls):
        daemon.wait_for(event("pass.finished"), timeout=60)
        daemon.proc.send_signal(signal.SIGSTOP)
        time.sleep(resync + 3)
        daemon.proc.send_signal(signal.SIGCONT)
        start = time.monotonic()
        daemon.wait_for(event("pass.finished"), timeout=resync * 2)
        out.append(time.monotonic() - start)
        print(f"  SIGCONT -> pass finished: {out[-1] * 1000:.0f} ms", flush=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--edits", type=int, default=5)
    parser.add_argument("--stalls", type=int, default=3)
    parser.add_argument("--resync", type=float, default=10.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        tiny = xh.build_tiny_models(work / "models")
        fake = xh.FakeVllm(work / "fake", version="0.9.2")
        fake.script("slow", outcome="ready", delay_s=3600)
        with xh.XinferenceServer(extra_env=fake.env()) as srv:
            names = xh.register_custom_models(srv.base_url, None, tiny)
            proxy = VirtualGpuProxy(srv.base_url).start()
            uids = [f"emb{i}" for i in range(args.edits)]

            def text(kept: list[str]) -> str:
                llm_config = f"{tiny['llm']}/config.json"
                return config(proxy.base_url, names["LLM"], llm_config, names["embedding"], kept)

            cfg = work / "config.toml"
            cfg.write_text(text(uids))
            cfg.chmod(0o600)
            env = {"XINFERENCE_RECONCILER_RESYNC_INTERVAL_SECONDS": str(args.resync)}
            daemon = DaemonProcess(cfg, work / "state", env=env)
            try:
                edits = measure_edits(daemon, cfg, text, uids, srv.base_url)
                stalls = measure_stalls(daemon, args.stalls, args.resync)
                slow = xh.http_json(
                    "GET", f"{srv.base_url}/v1/models/instances", params={"model_uid": "slow"}
                )
                print(f"  the hanging load all along: {slow[0]['status']}")
                for e in daemon.seen:
                    if e.get("uid") == "slow":
                        print(f"  slow: {e}")
            finally:
                daemon.proc.send_signal(signal.SIGCONT)
                daemon.proc.terminate()
                daemon.proc.wait(30)
                daemon.close()
                proxy.stop()
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores, python {platform.python_version()}"
    )
    for i, what in enumerate(("config loaded", "model terminated (server answered DELETE)")):
        times = [e[i] for e in edits]
        if not times:
            print(f"edit -> {what}: no edit was made while the other load still hung")
            continue
        print(
            f"edit -> {what} while a load hangs: median {statistics.median(times) * 1000:.0f} ms, "
            f"max {max(times) * 1000:.0f} ms over {len(times)} edits made while it hung "
            "(target < 2 s)"
        )
    print(
        f"first pass after a {args.resync + 3:g} s stall: median "
        f"{statistics.median(stalls) * 1000:.0f} ms, max {max(stalls) * 1000:.0f} ms over "
        f"{len(stalls)} stalls (target < 2 s)"
    )


if __name__ == "__main__":
    main()
