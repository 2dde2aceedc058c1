"""Exact KV against a real Xinference 4.1.0 with the fake vLLM engine (issue 9, item 2).

For each vLLM version (one server at a time, stopped before the next starts): the adapter learns
the worker's version from a running vLLM model (``/v1/models/{uid}/reload/config``), the planner
builds the launch with that version's rules, and the adapter's launch body reaches
``AsyncEngineArgs`` unchanged: from 0.10.2 with ``kv_cache_memory_bytes`` (an int, the KV bytes
the plan computed) beside the utilization that passes the start-up gate; before 0.10.2 without it
(an older vLLM's EngineArgs would refuse the key).

The server has no GPU: the plan is made against the observed worker with one 24 GiB GPU added, and
the launch is sent without its GPU placement; everything else is the daemon's own path
(``planning.plan`` -> ``Launch.launch_args`` -> ``xinference.launch_body``).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

_REPO = Path(__file__).resolve().parents[2]
if str(_REPO) not in sys.path:
    sys.path.insert(0, str(_REPO))

import pytest  # noqa: E402

from daemon.adapters.secrets import Credentials  # noqa: E402
from daemon.adapters.xinference import XinferenceAdapter  # noqa: E402
from daemon.core.demand import resolve_model  # noqa: E402
from daemon.core.desired import Config  # noqa: E402
from daemon.core.observed import GpuRef, GpuSnapshot, ObservedState  # noqa: E402
from daemon.core.planning import Launch, plan  # noqa: E402
from daemon.core.units import GiB  # noqa: E402
from daemon.core.vllm_rules import rules_for  # noqa: E402
from tests.harness import server as xh  # noqa: E402
from tests.harness.fixtures import shared, spare_while_alive  # noqa: E402

pytestmark = [pytest.mark.integration, pytest.mark.needs_server("tiny_models")]

MAX_MODEL_LEN = 1024


class VllmServer:
    def __init__(self, srv: xh.XinferenceServer, fake: xh.FakeVllm, llm: str, config_json: Path):
        self.srv = srv
        self.fake = fake
        self.llm = llm
        self.config_json = config_json
        self.adapter = XinferenceAdapter(
            endpoint=srv.base_url, credentials=Credentials(mode="none"), timeout_seconds=60
        )


@pytest.fixture(scope="module", params=["0.11.2", "0.10.1"])
def vllm_server(request: Any, tmp_path_factory: Any) -> Iterator[VllmServer]:
    """One server per vLLM version; pytest stops the first before it starts the second."""
    version = request.param
    tiny_models = shared(request, "tiny_models")
    fake = xh.FakeVllm(tmp_path_factory.mktemp(f"fake-vllm-{version}"), version=version)
    srv = xh.XinferenceServer(extra_env=fake.env()).start()
    spare_while_alive(request, srv)
    try:
        names = xh.register_custom_models(srv.base_url, None, tiny_models)
        yield VllmServer(srv, fake, names["LLM"], Path(tiny_models["llm"]) / "config.json")
    finally:
        srv.stop()
        left = srv.leftover_pids()
        assert not left, f"processes survived the harness stop: {left}"


def _observe_with_a_gpu(server: VllmServer) -> ObservedState:
    """The real server's workers, as the daemon observes them, each with one 24 GiB GPU added."""
    workers, models = server.adapter.observe()
    gpu_workers = tuple(
        replace(
            w,
            gpus=(
                GpuSnapshot(
                    ref=GpuRef(worker=w.address, index=0),
                    total_bytes=24 * GiB,
                    used_bytes=GiB // 2,
                    name="NVIDIA GeForce RTX 4090",
                ),
            ),
        )
        for w in workers
    )
    return ObservedState(workers=gpu_workers, models=models)


def _planned_launch(server: VllmServer, uid: str, observed: ObservedState) -> Launch:
    config = Config.model_validate(
        {
            "policy": {"mode": "enforce", "gpu_reserve_gib": 0.0},
            "models": {
                uid: {
                    "model_name": server.llm,
                    "model_engine": "vLLM",
                    "model_size_in_billions": "0_001",
                    "architecture": {"hf_config": str(server.config_json)},
                    "memory": {
                        "max_model_len": MAX_MODEL_LEN,
                        "concurrent_sequences": 4,
                        "gpu_memory_utilization": "minimum",
                    },
                }
            },
        }
    )
    hf_config = json.loads(server.config_json.read_text())
    demands = {u: resolve_model(u, spec, hf_config=hf_config) for u, spec in config.models.items()}
    p = plan(config, demands, observed)
    (launch,) = [a for a in p.admitted if a.uid == uid]
    return launch


def test_the_version_is_learned_and_the_launch_arguments_reach_the_engine(
    vllm_server: VllmServer,
) -> None:
    server = vllm_server
    version = server.fake.version
    # a vLLM model already running on the worker tells the daemon which vLLM is installed there
    helper = xh.launch_model(
        server.srv.base_url,
        None,
        {
            "model_uid": "helper",
            "model_name": server.llm,
            "model_type": "LLM",
            "model_engine": "vLLM",
        },
        wait_ready=True,
    )
    assert helper.status == 200, helper.body
    observed = _observe_with_a_gpu(server)
    assert [w.vllm_version for w in observed.workers] == [version]

    launch = _planned_launch(server, "kvb", observed)
    exact = rules_for(version).kv_cache_memory_bytes
    args = dict(launch.launch_args)
    assert ("kv_cache_memory_bytes" in args) is exact
    # the server has no GPU: send the planned launch without its GPU placement
    server.adapter.launch(replace(launch, gpu_indexes=(), n_gpu=None, worker=None))
    info = xh.wait_instance(server.srv.base_url, None, "kvb", timeout=180)
    assert info["status"] == "READY", info

    received = server.fake.record("kvb")["engine_args"]
    for key in ("gpu_memory_utilization", "max_model_len", "kv_cache_memory_bytes"):
        if key in args:
            assert received[key] == args[key], key
            assert type(received[key]) is type(args[key]), key
    if exact:
        kv = received["kv_cache_memory_bytes"]
        assert type(kv) is int
        # what one tiny-model token costs, times the sequences the config asks for
        cfg = json.loads(server.config_json.read_text())
        per_token = 2 * cfg["num_hidden_layers"] * cfg["num_key_value_heads"] * 2
        per_token *= cfg.get("head_dim") or cfg["hidden_size"] // cfg["num_attention_heads"]
        assert kv >= per_token * MAX_MODEL_LEN * 4
        # the utilization passes the start-up gate of an idle 24 GiB GPU
        assert 0 < received["gpu_memory_utilization"] * 24 * GiB <= 24 * GiB - GiB // 2
    else:
        assert "kv_cache_memory_bytes" not in received
    for uid in ("kvb", "helper"):
        assert xh.terminate_model(server.srv.base_url, None, uid).ok
