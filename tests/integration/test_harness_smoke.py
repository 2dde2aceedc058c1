"""Smoke tests proving the real-Xinference harness works (server, models, cluster, auth).

Plain urllib only (through tests.harness.server), no project code.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

_REPO = Path(__file__).resolve().parents[2]
if str(_REPO) not in sys.path:
    sys.path.insert(0, str(_REPO))

import pytest  # noqa: E402

from tests.harness import server as xh  # noqa: E402

pytestmark = pytest.mark.integration


# ---------------------------------------------------------------- single node, auth off


def test_server_up_and_status_lists_one_cpu_worker(xinference_server):
    status = xh.get_status(xinference_server.base_url)
    assert status is not None  # None: the server did not answer
    workers = status["workers"]
    assert len(workers) == 1
    ((addr, info),) = workers.items()
    assert addr.startswith("127.0.0.1:")
    assert "cpu" in info["status"]
    assert not [k for k in info["status"] if k.startswith("gpu")]
    assert xh.http_json("GET", f"{xinference_server.base_url}/v1/cluster/auth") == {"auth": False}


def test_custom_models_registered(xinference_server):
    base = xinference_server.base_url
    for model_type, name in xinference_server.models.items():
        spec = xh.http_json("GET", f"{base}/v1/model_registrations/{model_type}/{name}")
        assert spec["model_name"] == name
        assert spec["is_builtin"] is False
        listed = xh.http_json("GET", f"{base}/v1/model_registrations/{model_type}")
        assert name in [m["model_name"] for m in listed]
    # registering the same name again is refused
    r = xh.register_model(
        base,
        None,
        "embedding",
        xh.embedding_registration("/tmp", name=xinference_server.models["embedding"]),
    )
    assert r.status == 400
    assert "already registered" in r.detail()


def test_embedding_launch_nonblocking_then_ready(xinference_server):
    base = xinference_server.base_url
    uid = "smoke-emb"
    r = xh.launch_model(
        base,
        None,
        {
            "model_uid": uid,
            "model_type": "embedding",
            "model_name": xinference_server.models["embedding"],
        },
        wait_ready=False,
    )
    assert r.status == 200
    assert r.body == {"model_uid": uid}
    assert r.elapsed_s < 5, "wait_ready=false should answer at once"
    seen: list = []
    info = xh.wait_instance(base, None, uid, seen=seen, timeout=180)
    assert info["status"] == "READY", info
    assert seen[0][1]["status"] in ("CREATING", "LOADING", "READY")
    out = xh.http_json("POST", f"{base}/v1/embeddings", {"model": uid, "input": ["hello world"]})
    assert len(out["data"][0]["embedding"]) == 384
    models = {m["id"]: m for m in xh.list_models(base, None)}
    assert models[uid]["model_type"] == "embedding"
    assert models[uid]["accelerators"] == []
    # launching does not create an autostart entry
    auto = xh.http_json("GET", f"{base}/v1/autostart/models")
    assert uid not in [e["launch"]["model_uid"] for e in auto["models"]]
    r = xh.terminate_model(base, None, uid)
    assert r.status == 200
    assert uid not in {m["id"] for m in xh.list_models(base, None)}


def test_llm_transformers_chat(xinference_server):
    base = xinference_server.base_url
    uid = "smoke-llm"
    r = xh.launch_model(
        base,
        None,
        {
            "model_uid": uid,
            "model_type": "LLM",
            "model_name": xinference_server.models["LLM"],
            "model_engine": "transformers",
        },
    )
    assert r.status == 200, r.body
    assert xh.wait_instance(base, None, uid, timeout=180)["status"] == "READY"
    out = xh.http_json(
        "POST",
        f"{base}/v1/chat/completions",
        {"model": uid, "max_tokens": 8, "messages": [{"role": "user", "content": "hello"}]},
        timeout=120,
    )
    assert out["choices"][0]["message"]["role"] == "assistant"
    assert out["usage"]["completion_tokens"] >= 1
    model = {m["id"]: m for m in xh.list_models(base, None)}[uid]
    assert model["model_engine"] == "transformers"
    assert xh.terminate_model(base, None, uid).status == 200


def test_rerank(xinference_server):
    base = xinference_server.base_url
    uid = "smoke-rerank"
    r = xh.launch_model(
        base,
        None,
        {
            "model_uid": uid,
            "model_type": "rerank",
            "model_name": xinference_server.models["rerank"],
        },
    )
    assert r.status == 200, r.body
    assert xh.wait_instance(base, None, uid, timeout=180)["status"] == "READY"
    out = xh.http_json(
        "POST",
        f"{base}/v1/rerank",
        {"model": uid, "query": "fox", "documents": ["a quick fox", "a dog", "x"]},
    )
    assert sorted(res["index"] for res in out["results"]) == [0, 1, 2]
    assert xh.terminate_model(base, None, uid).status == 200


def test_missing_model_uri_gives_error_instance(xinference_server, tiny_models, tmp_path):
    import shutil

    base = xinference_server.base_url
    doomed = tmp_path / "doomed"
    shutil.copytree(tiny_models["reranker"], doomed)
    name = "smoke-doomed-rerank"
    assert xh.register_model(base, None, "rerank", xh.rerank_registration(str(doomed), name)).ok
    shutil.rmtree(doomed)
    r = xh.launch_model(
        base,
        None,
        {"model_uid": "smoke-doomed", "model_type": "rerank", "model_name": name},
        wait_ready=False,
    )
    assert r.status == 200
    info = xh.wait_instance(base, None, "smoke-doomed", timeout=60)
    assert info["status"] == "ERROR"
    assert "does not exist" in info["replica_statuses"][0]["error_message"]
    # an ERROR instance is not "in the model list": DELETE answers 400
    assert xh.terminate_model(base, None, "smoke-doomed").status == 400


# ---------------------------------------------------------------- cluster


def test_cluster_worker_ip_places_model(xinference_cluster):
    cl = xinference_cluster.cluster
    base = xinference_cluster.base_url
    status = xh.get_status(base)
    assert status is not None  # None: the server did not answer
    assert sorted(status["workers"]) == sorted(cl.worker_address(i) for i in range(2))
    target = cl.worker_address(1)
    uid = "smoke-cluster-emb"
    r = xh.launch_model(
        base,
        None,
        {
            "model_uid": uid,
            "model_type": "embedding",
            "model_name": xinference_cluster.models["embedding"],
            "worker_ip": target,
        },
        wait_ready=False,
    )
    assert r.status == 200, r.body
    info = xh.wait_instance(base, None, uid, timeout=180)
    assert info["status"] == "READY", info
    assert [rs["worker_address"] for rs in info["replica_statuses"]] == [target]
    model = {m["id"]: m for m in xh.list_models(base, None)}[uid]
    # /v1/models "address" is the model's own actor pool, on the same host (not the worker port)
    assert model["address"].split(":")[0] == "127.0.0.1"
    assert xh.terminate_model(base, None, uid).status == 200
    # an unknown worker is refused in a real cluster
    r = xh.launch_model(
        base,
        None,
        {
            "model_uid": "smoke-bad-worker",
            "model_type": "embedding",
            "model_name": xinference_cluster.models["embedding"],
            "worker_ip": "127.0.0.1:1",
        },
        wait_ready=True,
    )
    assert r.status == 400
    assert "not in the cluster" in r.detail()


# ---------------------------------------------------------------- auth on


def test_auth_on_401_then_login(xinference_server_auth):
    base = xinference_server_auth.base_url
    assert xh.http_json("GET", f"{base}/v1/cluster/auth") == {"auth": True}
    r = xh.http("GET", f"{base}/v1/models")
    assert r.status == 401
    r = xh.http("GET", f"{base}/v1/models", token="not-a-token")
    assert r.status == 401
    # setup can happen only once
    r = xh.http(
        "POST",
        f"{base}/v1/admin/setup",
        {
            "setup_token": xinference_server_auth.setup_token,
            "username": "other",
            "password": "another-password-1",
        },
    )
    assert r.status in (400, 403, 409), (r.status, r.body)
    tokens = xh.login_full(base, xinference_server_auth.username, xinference_server_auth.password)
    assert tokens["access_token"]
    assert tokens["refresh_token"]
    assert xh.http("GET", f"{base}/v1/models", token=tokens["access_token"]).status == 200
    r = xh.http(
        "POST",
        f"{base}/token",
        {"username": xinference_server_auth.username, "password": "wrong-password"},
    )
    assert r.status in (400, 401), (r.status, r.body)
    new = xh.refresh(base, tokens["refresh_token"])
    assert new["access_token"]
    assert xh.http("GET", f"{base}/v1/models", token=new["access_token"]).status == 200
    # registrations made with the admin token are visible
    names = [
        m["model_name"]
        for m in xh.http_json(
            "GET", f"{base}/v1/model_registrations/embedding", token=new["access_token"]
        )
    ]
    assert xinference_server_auth.models["embedding"] in names


def test_harness_stop_leaves_no_process(tiny_models):
    srv = xh.XinferenceServer(auth=False)
    srv.start()
    xh.register_custom_models(srv.base_url, None, tiny_models)
    r = xh.launch_model(
        srv.base_url,
        None,
        {"model_uid": "e", "model_type": "embedding", "model_name": xh.EMBEDDING_MODEL},
        wait_ready=True,
    )
    assert r.status == 200, r.body
    assert len(srv.leftover_pids()) >= 3  # local process, supervisor/worker, model process
    t0 = time.monotonic()
    srv.stop()
    assert time.monotonic() - t0 < 30
    assert srv.leftover_pids() == []
