"""The daemon against a real Xinference 4.1.0 (CPU, loopback; started by this script).

Usage: python benchmarks/daemon_bench.py [--edits 5] [--idle-seconds 60]

1. Time from saving the config file (an atomic rename, as editors do) to the daemon's launch
   request (its ``model.launch.started`` event, logged right before the POST), over several edits
   that each add a model; median and max (target: under 1 s).
2. Idle cost once converged, with the default 30 s resync: resident memory (VmRSS) at the start and
   end of the window, and CPU time over it (targets: under 80 MB, under 0.5 % of one core).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.harness import server as xh
from tests.harness.daemon_process import (
    DaemonProcess,
    cpu_embedding_config,
    event,
    rss_bytes,
    write_atomically,
)


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--edits", type=int, default=5)
    parser.add_argument("--idle-seconds", type=float, default=60.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        tiny = xh.build_tiny_models(work / "models")
        with xh.XinferenceServer(auth=False) as srv:
            names = xh.register_custom_models(srv.base_url, None, tiny)
            config = work / "config.toml"
            uids = ["b-0"]
            config.write_text(cpu_embedding_config(srv.base_url, names["embedding"], uids))
            daemon = DaemonProcess(
                config,
                work / "state",
                env={
                    "XINFERENCE_RECONCILER_RESYNC_INTERVAL_SECONDS": "30",
                    "XINFERENCE_RECONCILER_DEBOUNCE_SECONDS": "0.2",
                },
            )
            try:
                daemon.wait_for(event("model.launch.succeeded", uid="b-0"), timeout=180)
                latencies = []
                for i in range(1, args.edits + 1):
                    uids.append(f"b-{i}")
                    saved = time.time()
                    write_atomically(
                        config, cpu_embedding_config(srv.base_url, names["embedding"], uids)
                    )
                    started = daemon.wait_for(
                        event("model.launch.started", uid=f"b-{i}"), timeout=60
                    )
                    at = datetime.fromisoformat(
                        started["timestamp"].replace("Z", "+00:00")
                    ).timestamp()
                    latencies.append(at - saved)
                    print(
                        f"  edit {i}: launch request {latencies[-1] * 1000:.0f} ms after the save",
                        flush=True,
                    )
                    daemon.wait_for(event("model.launch.succeeded", uid=f"b-{i}"), timeout=180)
                print(
                    f"save -> launch request: median {statistics.median(latencies) * 1000:.0f} ms, "
                    f"max {max(latencies) * 1000:.0f} ms over {len(latencies)} edits"
                )
                time.sleep(5)  # let the last pass finish
                pid = daemon.proc.pid
                rss0, cpu0, t0 = rss_bytes(pid), cpu_seconds(pid), time.monotonic()
                time.sleep(args.idle_seconds)
                rss1, cpu1, t1 = rss_bytes(pid), cpu_seconds(pid), time.monotonic()
                share = (cpu1 - cpu0) / (t1 - t0) * 100
                print(
                    f"idle {t1 - t0:.0f} s with {len(uids)} models: RSS {rss0 / 2**20:.1f} -> "
                    f"{rss1 / 2**20:.1f} MiB; CPU {cpu1 - cpu0:.2f} s = {share:.2f} % of one core"
                )
            finally:
                daemon.proc.terminate()
                daemon.proc.wait(timeout=30)
                daemon.close()


if __name__ == "__main__":
    main()
