"""The daemon against a real Xinference 4.1.0 (CPU) with the fake vLLM engine behind virtual GPUs
(tests/harness/gpu_proxy.py): passes never wait for a load, late resyncs are never dropped, READY
comes once the first pass has sent its actions, and a memory failure the engine reports is learned
from and relaunched with corrected arguments. Tests assert order, not stopwatch times."""

from __future__ import annotations

import json
import signal
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.harness import server as xh
from tests.harness.daemon_process import DaemonProcess, event, write_atomically
from tests.harness.fixtures import shared, spare_while_alive
from tests.harness.gpu_proxy import VirtualGpuProxy

pytestmark = [pytest.mark.integration, pytest.mark.needs_server("tiny_models")]

FAKE_VERSION = (
    "0.9.2"  # utilization arithmetic (no kv_cache_memory_bytes): memory errors can happen
)
KV_TOO_SMALL = (
    "The model's max seq len (4096) is larger than the maximum number of tokens that can be "
    "stored in KV cache (1024). Try increasing `gpu_memory_utilization` or decreasing "
    "`max_model_len` when initializing the engine."
)
STARTUP_GATE = (
    "Free memory on device cuda:0 (3.5/47.5 GiB) on startup is less than desired GPU memory "
    "utilization (0.1, 4.75 GiB). Decrease GPU memory utilization or reduce GPU memory used by "
    "other processes."
)


class Rig:
    def __init__(self, server: Any, fake: xh.FakeVllm, proxy: VirtualGpuProxy, models: dict):
        self.server, self.fake, self.proxy, self.models = server, fake, proxy, models
        self.base_url = server.base_url

    def instance(self, uid: str) -> dict | None:
        answer = xh.http_json(
            "GET", f"{self.base_url}/v1/models/instances", params={"model_uid": uid}
        )
        return next((i for i in answer or [] if i.get("model_uid") == uid), None)

    def terminate_all(self) -> None:
        for item in xh.http_json("GET", f"{self.base_url}/v1/models/instances") or []:
            xh.terminate_model(self.base_url, None, item["model_uid"])


@pytest.fixture(scope="module")
def rig(request: pytest.FixtureRequest, tmp_path_factory: Any) -> Iterator[Rig]:
    tiny_models = shared(request, "tiny_models")
    fake = xh.FakeVllm(tmp_path_factory.mktemp("fake-vllm"), version=FAKE_VERSION)
    srv = xh.XinferenceServer(extra_env=fake.env()).start()
    spare_while_alive(request, srv)
    proxy = VirtualGpuProxy(srv.base_url, gpus_gib=(47.5,)).start()
    try:
        names = xh.register_custom_models(srv.base_url, None, tiny_models)
        yield Rig(srv, fake, proxy, {**names, "llm_config": f"{tiny_models['llm']}/config.json"})
    finally:
        proxy.stop()
        srv.stop()
        left = srv.leftover_pids()
        assert not left, f"processes survived the harness stop: {left}"


@pytest.fixture
def clean(rig: Rig) -> Iterator[Rig]:
    yield rig
    rig.terminate_all()


def llm(rig: Rig, **memory: Any) -> str:
    lines = [
        'model_name = "' + rig.models["LLM"] + '"',
        'model_type = "LLM"',
        'model_engine = "vLLM"',
        "[models.{uid}.architecture]",
        f'hf_config = "{rig.models["llm_config"]}"',
        "[models.{uid}.memory]",
        "max_model_len = 4096",
    ]
    lines += [f"{k} = {json.dumps(v)}" for k, v in memory.items()]
    return "\n".join(lines)


def embedding(rig: Rig) -> str:
    return "\n".join(
        [
            f'model_name = "{rig.models["embedding"]}"',
            'model_type = "embedding"',
            'model_engine = "sentence_transformers"',
            "[models.{uid}.placement]",
            'device = "cpu"',
        ]
    )


def config_text(rig: Rig, models: dict[str, str]) -> str:
    head = [
        "[cluster]",
        f'endpoint = "{rig.proxy.base_url}"',
        "timeout_seconds = 30",
        "[policy]",
        'mode = "enforce"',
        "gpu_reserve_gib = 0.0",
    ]
    body = [f"[models.{uid}]\n" + spec.replace("{uid}", uid) for uid, spec in models.items()]
    return "\n".join(head + body) + "\n"


def start(tmp_path: Path, text: str, **kw: Any) -> tuple[DaemonProcess, Path]:
    tmp_path.mkdir(parents=True, exist_ok=True)
    config = tmp_path / "config.toml"
    config.write_text(text)
    config.chmod(0o600)
    return DaemonProcess(config, tmp_path / "state", **kw), config


def stop(daemon: DaemonProcess) -> None:
    if daemon.proc.poll() is None:
        daemon.proc.send_signal(signal.SIGCONT)
        daemon.proc.terminate()
        daemon.proc.wait(30)
    daemon.close()


def test_an_edit_is_carried_out_while_another_model_still_loads(clean: Rig, tmp_path: Path) -> None:
    rig = clean
    rig.fake.script("slow", outcome="ready", delay_s=3600)  # a load that hangs
    text = config_text(rig, {"slow": llm(rig), "emb": embedding(rig)})
    daemon, config = start(tmp_path, text)
    try:
        daemon.wait_for(event("model.launch.started", uid="slow"))
        daemon.wait_for(event("model.launch.succeeded", uid="emb"), timeout=180)
        write_atomically(config, config_text(rig, {"slow": llm(rig)}))  # remove emb
        daemon.wait_for(event("model.terminated", uid="emb"), timeout=60)
        slow = rig.instance("slow")
        assert slow is not None
        assert slow["status"] in ("CREATING", "LOADING"), slow  # still loading all along
        assert not any(
            e["event"] == "model.launch.succeeded" and e["uid"] == "slow" for e in daemon.seen
        )
    finally:
        stop(daemon)


def test_ready_is_sent_once_the_first_pass_has_sent_its_launches(
    clean: Rig, tmp_path: Path
) -> None:
    """A first pass whose loads outlast TimeoutStartSec: READY=1 does not wait for them."""
    rig = clean
    rig.fake.script("slow", outcome="ready", delay_s=3600)
    path = str(tmp_path / "notify.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(60)
    daemon, _ = start(tmp_path, config_text(rig, {"slow": llm(rig)}), notify=path)
    try:
        messages: list[str] = []
        while not any("READY=1" in m for m in messages):
            messages.append(sock.recv(4096).decode())
        ready = next(m for m in messages if "READY=1" in m)
        assert "1 loading" in ready, ready
        slow = rig.instance("slow")
        assert slow is not None
        assert slow["status"] in ("CREATING", "LOADING"), slow
    finally:
        stop(daemon)
        sock.close()


def test_a_resync_missed_while_stopped_runs_as_soon_as_it_continues(
    clean: Rig, tmp_path: Path
) -> None:
    """SIGSTOP longer than the resync interval, then SIGCONT: a pass runs at once (well before
    another interval passes), and standard error holds nothing but JSON events."""
    rig = clean
    interval = 8.0
    env = {"XINFERENCE_RECONCILER_RESYNC_INTERVAL_SECONDS": str(interval)}
    daemon, _ = start(tmp_path, config_text(rig, {"emb": embedding(rig)}), env=env)
    try:
        daemon.wait_for(event("model.launch.succeeded", uid="emb"), timeout=180)
        daemon.wait_for(lambda e: bool(e.get("event") == "pass.finished" and e.get("converged")))
        daemon.proc.send_signal(signal.SIGSTOP)
        time.sleep(interval + 4)
        daemon.proc.send_signal(signal.SIGCONT)
        resumed = time.monotonic()
        daemon.wait_for(
            lambda e: e.get("event") == "pass.finished" and "resync" in e.get("reasons", []),
            timeout=interval,
        )
        assert time.monotonic() - resumed < interval / 2  # not the next tick: at once
    finally:
        stop(daemon)
    assert not [e for e in daemon.seen if e["event"] == "non-json"], "stderr held a non-JSON line"


@pytest.mark.parametrize(
    ("outcome", "message", "kind"),
    [("raise", KV_TOO_SMALL, "kv_cache"), ("engine_core", STARTUP_GATE, "startup_gate")],
)
def test_a_memory_failure_is_relaunched_with_corrected_arguments(
    clean: Rig, tmp_path: Path, outcome: str, message: str, kind: str
) -> None:
    """The engine's message (injected: no GPU here) fails the first launch; the daemon learns by
    how much its estimate was short and relaunches at once with a larger utilization."""
    rig = clean
    uid = f"learn-{kind}".replace("_", "-")
    rig.fake.script(uid, outcome=outcome, exception="ValueError", message=message, times=1)
    daemon, _ = start(tmp_path, config_text(rig, {uid: llm(rig, gpu_memory_utilization="minimum")}))
    try:
        corrected = daemon.wait_for(event("estimate.corrected", uid=uid), timeout=180)
        assert corrected["kind"] == kind
        daemon.wait_for(event("model.launch.succeeded", uid=uid), timeout=180)
    finally:
        stop(daemon)
    first, second = (r["engine_args"] for r in rig.fake.records(uid))
    assert second["gpu_memory_utilization"] > first["gpu_memory_utilization"]
    assert second["max_model_len"] == first["max_model_len"] == 4096
    state = json.loads((tmp_path / "state" / "state.json").read_text())
    (learned,) = state["corrections"].values()
    assert learned["kind"] == kind


def test_a_second_daemon_on_another_state_directory_only_observes(
    clean: Rig, tmp_path: Path
) -> None:
    """The cluster lease lives in Xinference itself (a flexible-model registration)."""
    rig = clean
    first, _ = start(tmp_path / "one", config_text(rig, {"emb": embedding(rig)}))
    try:
        first.wait_for(event("cluster.lease.acquired"))
        second, _ = start(tmp_path / "two", config_text(rig, {"emb2": embedding(rig)}))
        try:
            held = second.wait_for(event("cluster.lease.held_elsewhere"))
            assert "pid" in held["holder"]
            second.wait_for(event("pass.finished"))
            assert rig.instance("emb2") is None
        finally:
            stop(second)
    finally:
        stop(first)
