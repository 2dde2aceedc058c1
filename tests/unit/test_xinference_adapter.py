"""The HTTP adapter's translation layer: wire format in, error types out, tokens refreshed, secrets
kept out of messages. Real-server behaviour is covered by tests/contract and tests/integration."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest
import requests

from daemon.adapters.secrets import Credentials, load_credentials
from daemon.adapters.xinference import XinferenceAdapter, launch_body, parse_cluster
from daemon.core.desired import AuthConfig
from daemon.core.planning import Launch
from daemon.errors import (
    AuthError,
    RequestRejected,
    SecretError,
    ServerUnavailable,
    TemporaryClusterError,
)

SECRET = "pw-marker-5d1e7"

# Trimmed from what the real 4.1.0 server answered (docs/xinference-observed.md).
STATUS = {
    "uptime": 28,
    "workers": {
        "127.0.0.1:60166": {
            "update_time": 1.0,
            "failure_remaining_count": 5,
            "status": {
                "cpu": {"usage": 0.04, "total": 2},
                "gpu-0": {
                    "name": "NVIDIA H100 80GB HBM3",
                    "mem_total": 85000000000,
                    "mem_free": 84000000000,
                    "mem_used": 1000000000,
                    "mem_usage": 0.01,
                    "gpu_util": 0,
                },
                "gpu-1": {
                    "name": "NVIDIA H100 80GB HBM3",
                    "mem_total": 85000000000,
                    "mem_free": 85000000000,
                    "mem_used": 0,
                    "mem_usage": 0.0,
                    "gpu_util": 0,
                },
            },
        }
    },
}
INSTANCES = [
    {
        "model_name": "xr-tiny-embedding",
        "model_uid": "emb1",
        "replica": 1,
        "status": "READY",
        "replica_statuses": [
            {
                "replica_id": 0,
                "worker_address": "127.0.0.1:60166",
                "status": "READY",
                "error_message": None,
                "gpu_idx": [1],
            }
        ],
    },
    {
        "model_name": "doomed-rerank",
        "model_uid": "doomed",
        "replica": 1,
        "status": "CREATING",
        "replica_statuses": [
            {
                "replica_id": 0,
                "worker_address": "127.0.0.1:60166",
                "status": "ERROR",
                "error_message": "[address=127.0.0.1:1, pid=2] Model URI path does not exist: /x",
                "gpu_idx": None,
            }
        ],
    },
]
MODELS = {
    "object": "list",
    "data": [
        {
            "id": "emb1",
            "model_type": "embedding",
            "address": "127.0.0.1:41329",
            "model_name": "xr-tiny-embedding",
            "model_engine": "sentence_transformers",
            "model_format": "pytorch",
            "quantization": "none",
            "replica": 1,
            "gpu_memory": {"127.0.0.1:60166": {"1": 2000000000}},
        }
    ],
}


def test_parse_cluster_takes_placement_from_instances_and_details_from_models() -> None:
    workers, models = parse_cluster(STATUS, INSTANCES, MODELS)
    (worker,) = workers
    assert worker.address == "127.0.0.1:60166"
    assert [(g.ref.index, g.total_bytes, g.used_bytes) for g in worker.gpus] == [
        (0, 85000000000, 1000000000),
        (1, 85000000000, 0),
    ]
    doomed, emb = sorted(models, key=lambda m: m.uid)
    assert (emb.worker, emb.gpu_indexes, emb.model_engine, emb.status) == (
        "127.0.0.1:60166",
        (1,),
        "sentence_transformers",
        "READY",
    )
    assert list(emb.gpu_memory.values()) == [2000000000]
    # the aggregate still said CREATING; the replica's ERROR wins, without the actor prefix
    assert doomed.status == "ERROR"
    assert doomed.error_message == "Model URI path does not exist: /x"


def test_launch_body_carries_placement_and_engine_arguments() -> None:
    launch = Launch(
        uid="chat",
        reason="",
        spec_hash="h",
        model_name="qwen2.5-instruct",
        model_type="LLM",
        worker="127.0.0.1:30001",
        gpu_indexes=(0, 1),
        n_gpu=2,
        replica=1,
        launch_args={
            "model_engine": "vLLM",
            "model_size_in_billions": 1.5,
            "gpu_memory_utilization": 0.61,
            "max_model_len": 32768,
        },
        claims={},
    )
    body = launch_body(launch)
    assert body["model_size_in_billions"] == "1_5"
    assert (body["worker_ip"], body["gpu_idx"], body["n_gpu"]) == ("127.0.0.1:30001", [0, 1], 2)
    assert body["gpu_memory_utilization"] == 0.61
    cpu = launch_body(
        Launch(
            uid="c",
            reason="",
            spec_hash="h",
            model_name="m",
            model_type="embedding",
            worker=None,
            gpu_indexes=(),
            n_gpu=None,
            replica=1,
            launch_args={},
            claims={},
        )
    )
    assert cpu["n_gpu"] is None
    assert "worker_ip" not in cpu


class StubSession(requests.Session):
    """Answers from a script: (method, path) -> list of (status, body) or an exception, in order."""

    def __init__(self, script: dict[tuple[str, str], list[Any]]) -> None:
        super().__init__()
        self.script = script
        self.seen: list[tuple[str, str, dict[str, str], Any]] = []

    # narrower than Session.request on purpose: the adapter passes only method, url and keywords
    def request(self, method: str, url: str, **kw: Any) -> requests.Response:  # type: ignore[override]
        path = "/" + url.split("/", 3)[3].split("?", maxsplit=1)[0]
        self.seen.append((method, path, dict(kw.get("headers") or {}), kw.get("json")))
        answer = self.script[(method, path)].pop(0)
        if isinstance(answer, Exception):
            raise answer
        status, body = answer
        response = requests.Response()
        response.status_code = status
        response._content = json.dumps(body).encode()
        return response


def _jwt(exp: float) -> str:
    payload = base64.urlsafe_b64encode(json.dumps({"exp": exp}).encode()).decode().rstrip("=")
    return f"h.{payload}.s"


def adapter(
    script: dict[tuple[str, str], list[Any]],
    *,
    mode: str = "none",
    now: float = 1000.0,
    clock: Any = None,
) -> tuple[XinferenceAdapter, StubSession]:
    session = StubSession(script)
    creds = Credentials(
        mode=mode,
        username="ops" if mode == "password" else None,
        secret=SECRET if mode != "none" else None,
        source="test",
    )
    return XinferenceAdapter(
        endpoint="http://127.0.0.1:9",
        credentials=creds,
        session=session,
        clock=clock or (lambda: now),
    ), session


@pytest.mark.parametrize(
    ("answer", "error"),
    [
        (requests.ConnectionError("refused"), ServerUnavailable),
        (requests.Timeout("slow"), ServerUnavailable),
        ((503, {"detail": "loading"}), TemporaryClusterError),
        ((500, {"detail": "boom"}), TemporaryClusterError),
        (
            (
                400,
                {"detail": "[address=1.2.3.4:5, pid=6] Model not found in the model list, uid: x"},
            ),
            RequestRejected,
        ),
        (
            (403, {"detail": "API keys can only access model query and inference endpoints"}),
            AuthError,
        ),
    ],
)
def test_failures_become_the_projects_error_types(answer: Any, error: type[Exception]) -> None:
    a, _ = adapter({("GET", "/status"): [answer]})
    with pytest.raises(error) as info:
        a.request("GET", "/status", auth=False)
    assert "[address=" not in str(info.value)


def test_a_token_is_refreshed_before_it_expires_and_secrets_never_show() -> None:
    now = [1000.0]
    script: dict[tuple[str, str], list[Any]] = {
        ("POST", "/token"): [(200, {"access_token": _jwt(1000 + 1800), "refresh_token": "r1"})],
        ("GET", "/v1/models"): [(200, {"data": []}), (200, {"data": []})],
        ("POST", "/v1/auth/refresh"): [
            (200, {"access_token": _jwt(3000 + 1800), "refresh_token": "r2"})
        ],
    }
    a, session = adapter(script, mode="password", clock=lambda: now[0])
    a.request("GET", "/v1/models")
    now[0] = 1000 + 1800 - 60  # inside the refresh margin
    a.request("GET", "/v1/models")
    paths = [p for _, p, _, _ in session.seen]
    assert paths == ["/token", "/v1/models", "/v1/auth/refresh", "/v1/models"]
    assert session.seen[3][2]["Authorization"] == f"Bearer {_jwt(3000 + 1800)}"


def test_a_401_logs_in_again_once() -> None:
    script: dict[tuple[str, str], list[Any]] = {
        ("POST", "/token"): [
            (200, {"access_token": "t1", "refresh_token": "r"}),
            (200, {"access_token": "t2", "refresh_token": "r"}),
        ],
        ("GET", "/v1/models"): [
            (401, {"detail": "Could not validate credentials"}),
            (200, {"data": []}),
        ],
    }
    a, session = adapter(script, mode="password")
    assert a.request("GET", "/v1/models") == {"data": []}
    assert session.seen[-1][2]["Authorization"] == "Bearer t2"


def test_refused_login_names_the_user_and_the_source_not_the_secret() -> None:
    a, _ = adapter(
        {("POST", "/token"): [(401, {"detail": "Incorrect username or password"})]}, mode="password"
    )
    with pytest.raises(AuthError) as info:
        a.request("GET", "/v1/models")
    assert "ops" in str(info.value)
    assert SECRET not in str(info.value)
    assert SECRET not in repr(a.credentials)


def test_terminate_removes_the_autostart_entry_first_and_tolerates_not_found() -> None:
    script: dict[tuple[str, str], list[Any]] = {
        ("DELETE", "/v1/autostart/models/x"): [(200, {"models": []})],
        ("DELETE", "/v1/models/x"): [
            (400, {"detail": "Model not found in the model list, uid: x"})
        ],
    }
    a, session = adapter(script)
    assert a.terminate("x") is False
    assert [p for _, p, _, _ in session.seen] == ["/v1/autostart/models/x", "/v1/models/x"]


def test_credentials_from_env_file_and_systemd(tmp_path: Path) -> None:
    env = {"XR_PW": SECRET + "\n"}
    got = load_credentials(
        AuthConfig(mode="password", username="u", password_env="XR_PW"), environ=env
    )
    assert got.secret == SECRET
    secret_file = tmp_path / "pw"
    secret_file.write_text(SECRET)
    secret_file.chmod(0o644)
    from_file = load_credentials(
        AuthConfig(mode="password", username="u", password_file=str(secret_file)), environ={}
    )
    assert from_file.secret == SECRET
    assert any("readable by other users" in w for w in from_file.warnings)
    (tmp_path / "xr-key").write_text("xf-123")
    (tmp_path / "xr-key").chmod(0o600)
    systemd = load_credentials(
        AuthConfig(mode="api_key", credential="xr-key"),
        environ={"CREDENTIALS_DIRECTORY": str(tmp_path)},
    )
    assert (systemd.secret, systemd.can_write, systemd.warnings) == ("xf-123", False, ())


def test_missing_secrets_say_where_they_were_looked_for() -> None:
    with pytest.raises(SecretError, match="XR_NOPE is not set"):
        load_credentials(
            AuthConfig(mode="password", username="u", password_env="XR_NOPE"), environ={}
        )
    with pytest.raises(SecretError, match="CREDENTIALS_DIRECTORY"):
        load_credentials(AuthConfig(mode="password", username="u", credential="pw"), environ={})


# --- the worker's vLLM version, learned from a running vLLM model -------------------------------

W = "127.0.0.1:60166"


def _vllm_instance(uid: str, status: str = "READY") -> dict[str, Any]:
    return {
        "model_name": "xr-tiny-llm",
        "model_uid": uid,
        "replica": 1,
        "status": status,
        "replica_statuses": [
            {"replica_id": 0, "worker_address": W, "status": status, "gpu_idx": [0]}
        ],
    }


def _vllm_model(uid: str) -> dict[str, Any]:
    return {"id": uid, "model_type": "LLM", "model_name": "xr-tiny-llm", "model_engine": "vLLM"}


def _observation(*uids: str) -> dict[tuple[str, str], list[Any]]:
    return {
        ("GET", "/status"): [(200, STATUS)],
        ("GET", "/v1/models/instances"): [(200, [_vllm_instance(u) for u in uids])],
        ("GET", "/v1/models"): [(200, {"data": [_vllm_model(u) for u in uids]})],
    }


RELOAD = {"enabled": False, "engine": "vllm", "model_config": {}, "engine_version": "0.11.2"}


def test_a_workers_vllm_version_comes_from_a_running_model_and_is_asked_once() -> None:
    a, session = adapter({})
    session.script = {
        **_observation("llm1", "llm2"),
        ("GET", "/v1/models/llm1/reload/config"): [(200, RELOAD)],
    }
    workers, _ = a.observe()
    assert [w.vllm_version for w in workers] == ["0.11.2"]
    assert a.calls == 4  # the three reads + one reload/config for the whole worker
    # an idle pass: the version is kept, nothing more is asked
    session.script = _observation("llm1", "llm2")
    workers, _ = a.observe()
    assert [w.vllm_version for w in workers] == ["0.11.2"]
    assert a.calls == 7


def test_a_relaunched_model_is_asked_again_and_failures_are_not_retried_every_pass() -> None:
    a, session = adapter({})
    session.script = {
        **_observation("llm1"),
        ("GET", "/v1/models/llm1/reload/config"): [
            (400, {"detail": "Parameter reload currently requires one worker"})
        ],
    }
    workers, _ = a.observe()
    assert workers[0].vllm_version is None
    session.script = _observation("llm1")
    a.observe()
    assert a.calls == 7  # the refusal is remembered while llm1 keeps running
    # llm1 goes away and comes back (a relaunch, perhaps on an upgraded vLLM): asked again
    session.script = _observation()
    a.observe()
    session.script = {
        **_observation("llm1"),
        ("GET", "/v1/models/llm1/reload/config"): [(200, {**RELOAD, "engine_version": "0.12.0"})],
    }
    workers, _ = a.observe()
    assert workers[0].vllm_version == "0.12.0"


def test_a_temporary_failure_is_asked_again_next_pass() -> None:
    a, session = adapter({})
    session.script = {
        **_observation("llm1"),
        ("GET", "/v1/models/llm1/reload/config"): [(503, {"detail": "busy"}), (200, RELOAD)],
    }
    assert a.observe()[0][0].vllm_version is None
    session.script.update(_observation("llm1"))
    assert a.observe()[0][0].vllm_version == "0.11.2"


def test_engine_version_is_only_read_from_a_vllm_answer() -> None:
    from daemon.adapters.xinference import parse_engine_version

    assert parse_engine_version(RELOAD) == "0.11.2"
    assert parse_engine_version({**RELOAD, "engine": "sglang"}) is None
    assert parse_engine_version({**RELOAD, "engine_version": None}) is None
    assert parse_engine_version(None) is None


def test_a_snapshot_keeps_the_workers_vllm_version() -> None:
    from daemon.adapters.snapshot_file import observed_from_document, observed_to_document
    from daemon.core.observed import ObservedState, Worker

    observed = ObservedState(workers=(Worker(address=W, vllm_version="0.11.2"),))
    doc = observed_to_document(observed)
    assert doc["workers"][0]["vllm_version"] == "0.11.2"
    assert observed_from_document(doc).workers[0].vllm_version == "0.11.2"
    # snapshots written before the field existed still load
    del doc["workers"][0]["vllm_version"]
    assert observed_from_document(doc).workers[0].vllm_version is None
