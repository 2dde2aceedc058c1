"""One suite, two implementations of ClusterPort: ``daemon.testing.FakeCluster`` and the real adapter
against a real Xinference 4.1.0. Whatever the reconciler relies on is stated here, so the fake
cannot drift from the server."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import Any

import pytest

from daemon.adapters.secrets import Credentials
from daemon.adapters.xinference import XinferenceAdapter
from daemon.core.planning import Launch
from daemon.errors import PermanentClusterError, RequestRejected
from daemon.testing.fake_cluster import FakeCluster
from tests.harness import server as xh

pytestmark = pytest.mark.integration


@dataclass
class Target:
    port: Any  # FakeCluster | XinferenceAdapter
    embedding: str  # a registered embedding model's name
    embedding_path: str
    poll: float


# "real" fetches the server at run time: the mark tells the fixture registry it needs it
REAL = pytest.param("real", marks=pytest.mark.needs_server("xinference_server"))


@pytest.fixture(params=["fake", REAL])
def target(request: pytest.FixtureRequest) -> Iterator[Target]:
    if request.param == "fake":
        fake = FakeCluster(known_models=frozenset({"xr-tiny-embedding"}), polls_to_ready=3)
        yield Target(fake, "xr-tiny-embedding", "/models/emb", 0.0)
        return
    server = request.getfixturevalue("xinference_server")
    paths = request.getfixturevalue("tiny_models")
    adapter = XinferenceAdapter(
        endpoint=server.base_url, credentials=Credentials(mode="none"), timeout_seconds=30
    )
    yield Target(adapter, server.models["embedding"], paths["embedding"], 0.5)


def embedding_launch(uid: str, name: str) -> Launch:
    return Launch(
        uid=uid,
        reason="test",
        spec_hash="h",
        model_name=name,
        model_type="embedding",
        worker=None,
        gpu_indexes=(),
        n_gpu=None,
        replica=1,
        launch_args={"model_engine": "sentence_transformers"},
        claims={},
    )


def wait_for(target: Target, uid: str, timeout: float = 180.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        state = target.port.instance_state(uid)
        if state is not None and state.status in ("READY", "ERROR"):
            return state
        assert time.monotonic() < deadline, f"{uid} still {state} after {timeout} s"
        time.sleep(target.poll)


def test_observe_lists_the_workers(target: Target) -> None:
    workers, _ = target.port.observe()
    assert workers
    assert all(":" in w.address for w in workers)


def test_launch_is_accepted_at_once_then_ready_then_listed_then_terminated(target: Target) -> None:
    uid = f"c-emb-{uuid.uuid4().hex[:6]}"
    started = time.monotonic()
    target.port.launch(embedding_launch(uid, target.embedding))
    assert time.monotonic() - started < 5, "launch must not wait for the model to load"
    assert wait_for(target, uid).status == "READY"
    workers, models = target.port.observe()
    (model,) = [m for m in models if m.uid == uid]
    assert model.status == "READY"
    assert model.model_name == target.embedding
    assert (model.model_engine or "").lower() == "sentence_transformers"
    assert model.model_type == "embedding"
    assert model.worker in {w.address for w in workers}
    with pytest.raises(RequestRejected, match="already in the model list"):
        target.port.launch(embedding_launch(uid, target.embedding))
    assert target.port.terminate(uid) is True
    assert uid not in {m.uid for m in target.port.observe()[1]}
    assert target.port.terminate(uid) is False


def test_an_unknown_model_ends_in_error_and_its_uid_can_be_launched_again(target: Target) -> None:
    uid = f"c-bad-{uuid.uuid4().hex[:6]}"
    target.port.launch(embedding_launch(uid, "no-such-embedding-model"))
    state = wait_for(target, uid)
    assert state.status == "ERROR"
    assert "not found" in (state.error_message or "")
    (model,) = [m for m in target.port.observe()[1] if m.uid == uid]
    assert model.status == "ERROR"
    assert target.port.terminate(uid) is False  # ERROR instances cannot be terminated
    target.port.launch(embedding_launch(uid, target.embedding))
    assert wait_for(target, uid).status == "READY"
    assert target.port.terminate(uid) is True


def test_registration_round_trip(target: Target) -> None:
    name = f"c-reg-{uuid.uuid4().hex[:6]}"
    spec = xh.embedding_registration(target.embedding_path, name=name)
    assert target.port.registration("embedding", name) is None
    target.port.register("embedding", spec, persist=False)
    got = target.port.registration("embedding", name)
    assert got is not None
    assert got["model_specs"][0]["model_uri"] == target.embedding_path
    assert got["is_builtin"] is False  # how import tells a custom model from a built-in one
    with pytest.raises(RequestRejected, match="already registered"):
        target.port.register("embedding", spec, persist=False)
    target.port.unregister("embedding", name)
    assert target.port.registration("embedding", name) is None


def test_a_launch_request_that_is_not_json_is_refused_and_nothing_is_started(
    target: Target,
) -> None:
    uid = f"c-nojson-{uuid.uuid4().hex[:6]}"
    bad = replace(
        embedding_launch(uid, target.embedding),
        launch_args={"model_engine": "sentence_transformers", "ratio": float("nan")},
    )
    with pytest.raises(PermanentClusterError, match="ratio"):
        target.port.launch(bad)
    assert target.port.instance_state(uid) is None
