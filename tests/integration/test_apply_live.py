"""`apply`, `plan`, `status`, `snapshot` and `import` against a real Xinference 4.1.0 (CPU, loopback).

Each test owns its model uids and state directory and cleans up what it launched, because the
session's servers are shared.
"""

from __future__ import annotations

import io
import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import tomli_w

from daemon.cli import main
from tests.harness import server as xh

pytestmark = pytest.mark.integration


def cli(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = main(list(argv), stdout=out, stderr=err)
    return code, out.getvalue(), err.getvalue()


def write_config(
    path: Path,
    endpoint: str,
    models: dict[str, dict[str, Any]],
    *,
    policy: dict[str, Any] | None = None,
    auth: dict[str, Any] | None = None,
) -> Path:
    cluster: dict[str, Any] = {"endpoint": endpoint, "timeout_seconds": 30}
    if auth:
        cluster["auth"] = auth
    doc = {
        "cluster": cluster,
        "policy": {"mode": "enforce", "prune": "managed", **(policy or {})},
        "models": models,
    }
    path.write_text(tomli_w.dumps(doc))
    return path


def cpu_models(names: dict[str, str], suffix: str) -> dict[str, dict[str, Any]]:
    cpu = {"device": "cpu"}
    return {
        f"emb-{suffix}": {
            "model_name": names["embedding"],
            "model_type": "embedding",
            "model_engine": "sentence_transformers",
            "placement": cpu,
        },
        f"llm-{suffix}": {
            "model_name": names["LLM"],
            "model_type": "LLM",
            "model_engine": "Transformers",
            "model_size_in_billions": "0_001",
            "placement": cpu,
            "memory": {"max_model_len": 1024},
        },
        f"rr-{suffix}": {
            "model_name": names["rerank"],
            "model_type": "rerank",
            "model_engine": "sentence_transformers",
            "placement": cpu,
        },
    }


def ready_uids(base_url: str, token: str | None = None) -> dict[str, dict[str, Any]]:
    return {i["model_uid"]: i for i in xh.instances(base_url, token) if i["status"] == "READY"}


@pytest.fixture
def suffix() -> str:
    return uuid.uuid4().hex[:6]


@pytest.fixture
def cleanup(xinference_server: Any) -> Iterator[list[str]]:
    uids: list[str] = []
    yield uids
    for uid in uids:
        xh.terminate_model(xinference_server.base_url, None, uid)


def test_apply_converges_a_real_server_and_plans_no_changes_after(
    xinference_server: Any, tmp_path: Path, suffix: str, cleanup: list[str]
) -> None:
    models = cpu_models(xinference_server.models, suffix)
    cleanup += list(models)
    cfg = write_config(tmp_path / "c.toml", xinference_server.base_url, models)
    state = ["--state-dir", str(tmp_path / "state")]
    code, out, err = cli("apply", str(cfg), "--yes", "--poll-interval", "0.5", *state)
    assert code == 0, out + err
    assert set(models) <= set(ready_uids(xinference_server.base_url))
    assert "model.launch.succeeded" in err
    owned = json.loads((tmp_path / "state" / "state.json").read_text())["launched"]
    assert set(owned) == set(models)
    code, out, _ = cli("plan", str(cfg), "--detailed-exitcode", *state)
    assert code == 0, out
    assert "No changes" in out
    code, out, _ = cli("status", str(cfg), *state)
    assert code == 0
    assert f"emb-{suffix}" in out
    assert "in_sync" in out


def test_a_changed_model_is_replaced_and_a_removed_one_terminated_but_not_others(
    xinference_server: Any, tmp_path: Path, suffix: str, cleanup: list[str]
) -> None:
    base = xinference_server.base_url
    models = cpu_models(xinference_server.models, suffix)
    cleanup += [*models, f"hand-{suffix}"]
    state = ["--state-dir", str(tmp_path / "state")]
    cfg = write_config(tmp_path / "c.toml", base, models)
    assert cli("apply", str(cfg), "--yes", "--poll-interval", "0.5", *state)[0] == 0
    # a colleague launches a model by hand: not ours, never terminated under prune = "managed"
    xh.launch_model(
        base,
        None,
        {
            "model_uid": f"hand-{suffix}",
            "model_name": xinference_server.models["embedding"],
            "model_type": "embedding",
        },
        wait_ready=True,
    )
    created = ready_uids(base)[f"llm-{suffix}"]["instance_created_ts"]
    models[f"llm-{suffix}"]["memory"] = {"max_model_len": 2048}
    del models[f"rr-{suffix}"]
    write_config(cfg, base, models)
    code, out, err = cli("apply", str(cfg), "--yes", "--poll-interval", "0.5", *state)
    assert code == 0, out + err
    assert f"ok  replace   llm-{suffix}" in out
    assert f"ok  terminate rr-{suffix}" in out
    ready = ready_uids(base)
    assert f"rr-{suffix}" not in ready
    assert f"hand-{suffix}" in ready
    assert ready[f"llm-{suffix}"]["instance_created_ts"] >= created
    assert f"terminate hand-{suffix}" not in out
    assert f"hand-{suffix}: not in the file, left running (policy.prune = 'managed')" in out


def test_a_failing_launch_reports_the_server_error_and_backs_off(
    xinference_server: Any, tmp_path: Path, suffix: str, cleanup: list[str]
) -> None:
    uid = f"bad-{suffix}"
    cleanup.append(uid)
    model = {
        "model_name": "no-such-embedding",
        "model_type": "embedding",
        "model_engine": "sentence_transformers",
        "placement": {"device": "cpu"},
    }
    state = ["--state-dir", str(tmp_path / "state")]
    cfg = write_config(tmp_path / "c.toml", xinference_server.base_url, {uid: model})
    code, out, _ = cli("apply", str(cfg), "--yes", "--poll-interval", "0.5", *state)
    assert code == 2
    assert f"FAILED launch    {uid}" in out
    assert "not found" in out
    failure = json.loads((tmp_path / "state" / "state.json").read_text())["failures"][uid]
    assert failure["attempts"] == 1
    # a second pass within the backoff does not hammer the server
    code, out, _ = cli("apply", str(cfg), "--yes", "--poll-interval", "0.5", *state)
    assert code == 2
    assert "next retry after its backoff" in out
    # fixing the spec resets the backoff: launched at once
    model["model_name"] = xinference_server.models["embedding"]
    write_config(cfg, xinference_server.base_url, {uid: model})
    code, out, _ = cli("apply", str(cfg), "--yes", "--poll-interval", "0.5", *state)
    assert code == 0, out
    assert uid in ready_uids(xinference_server.base_url)


def test_what_does_not_fit_is_refused_with_the_reason_and_nothing_launched(
    xinference_server: Any, tmp_path: Path, suffix: str
) -> None:
    uid = f"gpu-{suffix}"
    model = {"model_name": "qwen2.5-instruct", "model_engine": "vLLM", "model_size_in_billions": 7}
    cfg = write_config(tmp_path / "c.toml", xinference_server.base_url, {uid: model})
    code, out, _ = cli("apply", str(cfg), "--yes", "--state-dir", str(tmp_path / "state"))
    assert code == 2
    assert f"refused  {uid}: no GPU matches the placement" in out
    assert uid not in {i["model_uid"] for i in xh.instances(xinference_server.base_url, None)}


def test_import_writes_a_config_that_plans_to_no_changes(
    xinference_server: Any, tmp_path: Path, suffix: str, cleanup: list[str]
) -> None:
    base = xinference_server.base_url
    uid = f"hand-{suffix}"
    cleanup.append(uid)
    xh.launch_model(
        base,
        None,
        {
            "model_uid": uid,
            "model_name": xinference_server.models["embedding"],
            "model_type": "embedding",
        },
        wait_ready=True,
    )
    out_file = tmp_path / "imported.toml"
    code, _, err = cli("import", "--endpoint", base, "--output", str(out_file))
    assert code == 0, err
    text = out_file.read_text()
    assert f"[models.{uid}]" in text or f'[models."{uid}"]' in text
    assert cli("validate", str(out_file))[0] == 0
    code, out, _ = cli(
        "plan", str(out_file), "--detailed-exitcode", "--state-dir", str(tmp_path / "s")
    )
    assert code == 0, out
    code, out, _ = cli("snapshot", str(out_file), "--state-dir", str(tmp_path / "s"))
    assert code == 0
    assert any(m["uid"] == uid for m in json.loads(out)["models"])


def test_auth_on_logs_in_with_a_password_from_the_environment(
    xinference_server_auth: Any, tmp_path: Path, suffix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    srv = xinference_server_auth
    monkeypatch.setenv("XR_TEST_PASSWORD", srv.password)
    uid = f"emb-{suffix}"
    model = {
        "model_name": srv.models["embedding"],
        "model_type": "embedding",
        "model_engine": "sentence_transformers",
        "placement": {"device": "cpu"},
    }
    auth = {"mode": "password", "username": srv.username, "password_env": "XR_TEST_PASSWORD"}
    cfg = write_config(tmp_path / "c.toml", srv.base_url, {uid: model}, auth=auth)
    code, out, err = cli(
        "apply", str(cfg), "--yes", "--poll-interval", "0.5", "--state-dir", str(tmp_path / "s")
    )
    assert code == 0, out + err
    assert srv.password not in out + err
    assert uid in ready_uids(srv.base_url, srv.token)
    monkeypatch.setenv("XR_TEST_PASSWORD", "wrong-password-123")
    code, out, err = cli("plan", str(cfg), "--state-dir", str(tmp_path / "s"))
    assert code == 1
    assert "Incorrect username or password" in err
    assert "wrong-password-123" not in out + err
    xh.terminate_model(srv.base_url, srv.token, uid)


def test_placement_on_a_named_worker_of_a_two_worker_cluster(
    xinference_cluster: Any, tmp_path: Path, suffix: str
) -> None:
    base = xinference_cluster.base_url
    workers = xh.worker_addresses(xh.get_status(base))
    assert len(workers) == 2
    target = sorted(workers)[1]
    uid = f"pinned-{suffix}"
    model = {
        "model_name": xinference_cluster.models["embedding"],
        "model_type": "embedding",
        "model_engine": "sentence_transformers",
        "placement": {"device": "cpu", "worker": target},
    }
    cfg = write_config(tmp_path / "c.toml", base, {uid: model})
    code, out, err = cli(
        "apply", str(cfg), "--yes", "--poll-interval", "0.5", "--state-dir", str(tmp_path / "s")
    )
    assert code == 0, out + err
    (instance,) = [i for i in xh.instances(base, None) if i["model_uid"] == uid]
    assert instance["replica_statuses"][0]["worker_address"] == target
    code, out, _ = cli("plan", str(cfg), "--detailed-exitcode", "--state-dir", str(tmp_path / "s"))
    assert code == 0, out
    xh.terminate_model(base, None, uid)


def test_a_custom_model_from_a_local_path_is_registered_then_launched(
    xinference_server: Any,
    tiny_models: dict[str, Any],
    tmp_path: Path,
    suffix: str,
    cleanup: list[str],
) -> None:
    base = xinference_server.base_url
    uid, name = f"custom-{suffix}", f"xr-custom-emb-{suffix}"
    cleanup.append(uid)
    model = {
        "model_name": name,
        "model_type": "embedding",
        "model_engine": "sentence_transformers",
        "placement": {"device": "cpu"},
        "custom": {
            "model_uri": tiny_models["embedding"],
            "spec": {"dimensions": 384, "max_tokens": 256},
        },
    }
    cfg = write_config(tmp_path / "c.toml", base, {uid: model})
    state = ["--state-dir", str(tmp_path / "s")]
    code, out, err = cli("apply", str(cfg), "--yes", "--poll-interval", "0.5", *state)
    assert code == 0, out + err
    registered = xh.http_json("GET", f"{base}/v1/model_registrations/embedding/{name}")
    assert registered["model_specs"][0]["model_uri"] == tiny_models["embedding"]
    assert uid in ready_uids(base)
    assert cli("plan", str(cfg), "--detailed-exitcode", *state)[0] == 0
