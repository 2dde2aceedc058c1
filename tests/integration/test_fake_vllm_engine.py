"""A real Xinference 4.1.0 server with the FAKE vllm package (tests/harness/fake_vllm/README.md).

Xinference's own vLLM integration (``xinference/model/llm/vllm/core.py``) accepts
``model_engine="vLLM"`` for the tiny LLM, builds the engine arguments and calls
``AsyncLLMEngine.from_engine_args``; the fake engine records what it got and starts, or fails the
way vLLM does. Plain HTTP only: these tests pin what the daemon will see.

(a) launch arguments reach the engine unchanged; (b) a start-up memory error reaches
``/v1/models/instances`` and the launch response, verbatim behind Xinference's
``[address=..., pid=...]`` prefix.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Any

_REPO = Path(__file__).resolve().parents[2]
if str(_REPO) not in sys.path:
    sys.path.insert(0, str(_REPO))

import pytest  # noqa: E402

from tests.harness import server as xh  # noqa: E402
from tests.harness.fixtures import shared, spare_while_alive  # noqa: E402

pytestmark = [pytest.mark.integration, pytest.mark.needs_server("tiny_models")]

FAKE_VERSION = "0.11.2"  # not the fake's default (0.11.0): proves the knob works
ENGINE = "vLLM"

KV_CACHE_TOO_SMALL = (
    "The model's max seq len (32768) is larger than the maximum number of tokens that can be "
    "stored in KV cache (20000). Try increasing `gpu_memory_utilization` or decreasing "
    "`max_model_len` when initializing the engine."
)
CUDA_OOM = (
    "CUDA out of memory. Tried to allocate 2.00 GiB. GPU 0 has a total capacity of 79.19 GiB "
    "of which 1.02 GiB is free."
)
STARTUP_GATE = (
    "Free memory on device (10.5/79.19 GiB) on startup is less than desired GPU memory "
    "utilization (0.9, 71.27 GiB). Decrease GPU memory utilization or reduce GPU memory used "
    "by other processes."
)
ENGINE_CORE_WRAPPER = (
    "Engine core initialization failed. See root cause above. Failed core proc(s): {}"
)
# what Xinference puts in front of an error raised in a model process
ACTOR_PREFIX = r"\[address=127\.0\.0\.1:\d+, pid=(\d+)\] "


class FakeVllmServer:
    def __init__(self, server: xh.XinferenceServer, fake: xh.FakeVllm, llm: str):
        self.server = server
        self.fake = fake
        self.llm = llm
        self.base_url = server.base_url

    def launch(self, uid: str, *, wait_ready: bool = False, **engine_kwargs: Any) -> Any:
        body = {
            "model_uid": uid,
            "model_name": self.llm,
            "model_type": "LLM",
            "model_engine": ENGINE,
            **engine_kwargs,
        }
        return xh.launch_model(self.base_url, None, body, wait_ready=wait_ready)

    def wait(self, uid: str) -> dict:
        return xh.wait_instance(self.base_url, None, uid, timeout=180)

    def terminate(self, uid: str) -> None:
        r = xh.terminate_model(self.base_url, None, uid)
        assert r.ok, r.body


@pytest.fixture(scope="module")
def fv(request: Any, tmp_path_factory: Any) -> Any:
    tiny_models = shared(request, "tiny_models")
    fake = xh.FakeVllm(tmp_path_factory.mktemp("fake-vllm"), version=FAKE_VERSION)
    srv = xh.XinferenceServer(extra_env=fake.env()).start()
    spare_while_alive(request, srv)
    try:
        names = xh.register_custom_models(srv.base_url, None, tiny_models)
        yield FakeVllmServer(srv, fake, names["LLM"])
    finally:
        srv.stop()
        left = srv.leftover_pids()
        assert not left, f"processes survived the harness stop: {left}"


def _error_message(info: dict) -> str:
    (replica,) = info["replica_statuses"]
    return replica["error_message"]


# ------------------------------------------------------------------------ engine discovery


def test_vllm_engine_is_offered_for_the_tiny_llm(fv):
    engines = xh.http_json("GET", f"{fv.base_url}/v1/engines/{fv.llm}")
    assert isinstance(engines[ENGINE], list), engines  # a string would be "why not"
    (spec,) = engines[ENGINE]
    assert (spec["model_format"], spec["quantizations"]) == ("pytorch", ["none"])


# ------------------------------------------------------------- (a) arguments reach vLLM


def test_launch_arguments_reach_the_engine_unchanged(fv):
    uid = "fv-args"
    ours = {
        "kv_cache_memory_bytes": 123456789,
        "gpu_memory_utilization": 0.61,
        "max_model_len": 4096,
        "max_num_seqs": 8,
    }
    r = fv.launch(uid, **ours)
    assert r.status == 200, r.body
    info = fv.wait(uid)
    assert info["status"] == "READY", info

    rec = fv.fake.record(uid)
    assert rec["outcome"] == "ready"
    assert rec["engine_args_class"] == "AsyncEngineArgs"
    args = rec["engine_args"]
    for key, value in ours.items():
        assert args[key] == value, key
        assert type(args[key]) is type(value), key
    # what Xinference 4.1.0 adds itself (_sanitize_model_config; swap_space for vLLM < 0.18)
    assert {k: args[k] for k in ("block_size", "swap_space", "scheduling_policy")} == {
        "block_size": 16,
        "swap_space": 4,
        "scheduling_policy": "fcfs",
    }
    assert args["tokenizer_mode"] == "auto"
    assert args["trust_remote_code"] is False
    assert args["pipeline_parallel_size"] == 1
    assert args["tensor_parallel_size"] == 0  # the GPU count it sees: none here
    assert args["model"].endswith("xr-tiny-llm-pytorch-0_001b-none")
    assert rec["replica_model_uid"] == f"{uid}-rep0"
    assert rec["vllm_version"] == FAKE_VERSION

    # the engine answers, and Xinference reports the installed vLLM version of the worker
    out = xh.http_json(
        "POST",
        f"{fv.base_url}/v1/chat/completions",
        {"model": uid, "messages": [{"role": "user", "content": "hi"}]},
        timeout=60,
    )
    assert out["choices"][0]["message"]["content"] == "This is the fake vLLM engine speaking."
    cfg = xh.http_json("GET", f"{fv.base_url}/v1/models/{uid}/reload/config")
    assert (cfg["engine"], cfg["engine_version"]) == ("vllm", FAKE_VERSION)
    fv.terminate(uid)


def test_xinference_defaults_when_the_launch_sets_nothing(fv):
    uid = "fv-defaults"
    r = fv.launch(uid, wait_ready=True)
    assert r.status == 200, r.body
    args = fv.fake.record(uid)["engine_args"]
    assert args["gpu_memory_utilization"] == 0.9
    assert args["max_num_seqs"] == 256
    assert args["max_model_len"] is None  # vLLM then takes the model's own context length
    assert "kv_cache_memory_bytes" not in args
    fv.terminate(uid)


# ------------------------------------------------ (b) start-up memory errors reach the daemon


@pytest.mark.parametrize(
    ("uid", "script_key", "exception", "message", "launch_args"),
    [
        pytest.param(
            "fv-kv",
            "max_model_len=32768",
            "ValueError",
            KV_CACHE_TOO_SMALL,
            {"max_model_len": 32768},
            id="kv-cache-too-small",
        ),
        pytest.param("fv-oom", "fv-oom", "torch.OutOfMemoryError", CUDA_OOM, {}, id="cuda-oom"),
        pytest.param(
            "fv-gate",
            "fv-gate",
            "ValueError",
            STARTUP_GATE,
            {"gpu_memory_utilization": 0.9},
            id="free-memory-gate",
        ),
    ],
)
def test_start_failure_message_reaches_instances(
    fv, uid, script_key, exception, message, launch_args
):
    fv.fake.script(script_key, outcome="raise", exception=exception, message=message)
    r = fv.launch(uid, **launch_args)
    assert (r.status, r.body) == (200, {"model_uid": uid})  # wait_ready=false: accepted
    info = fv.wait(uid)
    assert info["status"] == "ERROR", info
    (replica,) = info["replica_statuses"]
    assert replica["status"] == "TERMINATED"
    # verbatim, without the exception's type name, behind the model process's address and pid
    m = re.fullmatch(ACTOR_PREFIX + re.escape(message), replica["error_message"])
    assert m, replica["error_message"]
    rec = fv.fake.record(uid)
    assert int(m.group(1)) == rec["pid"]  # raised by the engine, in the model process
    assert rec["error"] == f"{exception}: {message}"
    # a failed uid stays listed as ERROR until it is launched again (or terminated)
    assert [i["status"] for i in xh.instances(fv.base_url, None, uid)] == ["ERROR"]


@pytest.mark.parametrize(
    ("uid", "exception", "message", "http_status"),
    [
        pytest.param("fv-kv-w", "ValueError", KV_CACHE_TOO_SMALL, 400, id="ValueError-400"),
        pytest.param("fv-oom-w", "torch.OutOfMemoryError", CUDA_OOM, 503, id="OOM-503"),
    ],
)
def test_start_failure_message_reaches_a_blocking_launch(fv, uid, exception, message, http_status):
    fv.fake.script(uid, outcome="raise", exception=exception, message=message)
    r = fv.launch(uid, wait_ready=True)
    # ValueError -> 400, RuntimeError (torch.OutOfMemoryError is one) -> 503
    assert r.status == http_status, r.body
    assert re.fullmatch(ACTOR_PREFIX + re.escape(message), r.body["detail"]), r.body
    assert _error_message(fv.wait(uid)) == r.body["detail"]


def test_v1_engine_core_failure_shows_only_the_wrapper(fv):
    """vLLM V1 raises the memory error in its EngineCore process, which only logs it; the
    caller gets a RuntimeError wrapper. The root cause is in the worker's runtime log, which
    /v1/cluster/runtime-logs serves. A script with ``times`` fails only the first start."""
    uid = "fv-core"
    fv.fake.script(
        uid, outcome="engine_core", exception="ValueError", message=STARTUP_GATE, times=1
    )
    assert fv.launch(uid).status == 200
    info = fv.wait(uid)
    assert info["status"] == "ERROR", info
    error = _error_message(info)
    assert re.fullmatch(ACTOR_PREFIX + re.escape(ENGINE_CORE_WRAPPER), error), error
    assert STARTUP_GATE not in error

    (worker,) = xh.worker_addresses(xh.get_status(fv.base_url))
    logs = xh.http_json("GET", f"{fv.base_url}/v1/cluster/runtime-logs", params={"source": worker})
    pid = fv.fake.record(uid)["pid"]
    assert f"(EngineCore_DP0 pid={pid}) ValueError: {STARTUP_GATE}" in logs["text"]

    # launching the failed uid again is allowed; the script is used up, so it starts
    assert fv.launch(uid, wait_ready=True).status == 200
    assert fv.wait(uid)["status"] == "READY"
    assert [r["outcome"] for r in fv.fake.records(uid)] == ["engine_core", "ready"]
    fv.terminate(uid)
