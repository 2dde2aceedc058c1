"""The daemon as systemd runs it (a subprocess with NOTIFY_SOCKET) against a real Xinference 4.1.0:
file edits are applied, drift is repaired at the next resync, bad files change nothing, SIGHUP
reloads and SIGTERM ends it cleanly."""

from __future__ import annotations

import signal
import socket
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.harness import server as xh
from tests.harness.daemon_process import DaemonProcess, event, write_atomically

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]


def config_text(
    base_url: str, names: dict[str, str], uids: dict[str, str], *, llm_len: int | None
) -> str:
    lines = [
        "[cluster]",
        f'endpoint = "{base_url}"',
        "timeout_seconds = 30",
        "[policy]",
        'mode = "enforce"',
        'prune = "managed"',
        f'[models."{uids["emb"]}"]',
        f'model_name = "{names["embedding"]}"',
        'model_type = "embedding"',
        'model_engine = "sentence_transformers"',
        f'[models."{uids["emb"]}".placement]',
        'device = "cpu"',
    ]
    if llm_len is not None:
        lines += [
            f'[models."{uids["llm"]}"]',
            f'model_name = "{names["LLM"]}"',
            'model_engine = "Transformers"',
            'model_size_in_billions = "0_001"',
            f'[models."{uids["llm"]}".placement]',
            'device = "cpu"',
            f'[models."{uids["llm"]}".memory]',
            f"max_model_len = {llm_len}",
        ]
    return "\n".join(lines) + "\n"


@pytest.fixture
def notify(tmp_path: Path) -> Iterator[socket.socket]:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(tmp_path / "notify.sock"))
    sock.settimeout(0.5)
    yield sock
    sock.close()


def notifications(sock: socket.socket, until: str, timeout: float = 60.0) -> list[str]:
    got: list[str] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            got.append(sock.recv(4096).decode())
        except TimeoutError:
            continue
        if until in got[-1]:
            return got
    raise AssertionError(f"no {until!r} in {timeout} s; got {got}")


def test_the_daemon_keeps_a_real_cluster_matching_the_file(
    xinference_server: Any, tmp_path: Path, notify: socket.socket
) -> None:
    base, names = xinference_server.base_url, xinference_server.models
    suffix = uuid.uuid4().hex[:6]
    uids = {"emb": f"d-emb-{suffix}", "llm": f"d-llm-{suffix}"}
    config = tmp_path / "config.toml"
    config.write_text(config_text(base, names, uids, llm_len=None))
    daemon = DaemonProcess(config, tmp_path / "state", str(tmp_path / "notify.sock"))
    try:
        # start-up: the first pass launches the embedding model, then READY=1
        daemon.wait_for(event("model.launch.succeeded", uid=uids["emb"]), timeout=180)
        assert any("READY=1" in m for m in notifications(notify, "READY=1"))

        # add a model to the file (atomic save) -> launched
        saved = time.monotonic()
        write_atomically(config, config_text(base, names, uids, llm_len=1024))
        daemon.wait_for(event("model.launch.started", uid=uids["llm"]), timeout=30)
        assert time.monotonic() - saved < 10
        daemon.wait_for(event("model.launch.succeeded", uid=uids["llm"]), timeout=180)

        # change it -> replaced (terminated, then launched with the new spec)
        write_atomically(config, config_text(base, names, uids, llm_len=2048))
        daemon.wait_for(event("model.terminated", uid=uids["llm"]), timeout=30)
        daemon.wait_for(event("model.launch.succeeded", uid=uids["llm"]), timeout=180)

        # remove it -> terminated
        write_atomically(config, config_text(base, names, uids, llm_len=None))
        daemon.wait_for(event("model.terminated", uid=uids["llm"]), timeout=30)
        assert uids["llm"] not in {i["model_uid"] for i in xh.instances(base, None)}

        # terminate the embedding model behind the daemon's back -> relaunched at the next resync
        xh.terminate_model(base, None, uids["emb"])
        daemon.wait_for(event("drift.detected", uid=uids["emb"], kind="missing"), timeout=30)
        daemon.wait_for(event("model.launch.succeeded", uid=uids["emb"]), timeout=180)
        daemon.wait_for(event("drift.resolved", uid=uids["emb"]), timeout=30)

        # an invalid file: reported, nothing launched or terminated, the last good config stays
        before = {i["model_uid"] for i in xh.instances(base, None) if i["status"] == "READY"}
        mark = len(daemon.seen)
        write_atomically(config, config_text(base, names, uids, llm_len=1024) + "\nbroken = [\n")
        invalid = daemon.wait_for(event("config.invalid"), timeout=30)
        assert any("TOML syntax error" in p for p in invalid["problems"])
        daemon.wait_for(event("pass.finished"), timeout=30)
        daemon.wait_for(event("pass.finished"), timeout=30)  # a resync later
        assert {
            i["model_uid"] for i in xh.instances(base, None) if i["status"] == "READY"
        } == before
        assert not [e for e in daemon.seen[mark:] if e["event"].startswith("model.")]

        # SIGHUP -> RELOADING=1, a pass, READY=1
        write_atomically(config, config_text(base, names, uids, llm_len=None))
        daemon.proc.send_signal(signal.SIGHUP)
        reload = notifications(notify, "READY=1")
        assert any("RELOADING=1" in m for m in reload)
        daemon.wait_for(
            lambda e: e.get("event") == "pass.finished" and "sighup" in e.get("reasons", [])
        )

        for e in daemon.seen:
            if e["event"] in (
                "pass.finished",
                "model.launch.started",
                "drift.detected",
                "config.invalid",
            ):
                assert e.get("pass_id"), e
                assert e.get("config_revision"), e
    finally:
        # SIGTERM -> STOPPING=1 and exit 0 within the grace period (killed if not: no leak)
        code = daemon.stop(timeout=30)
        xh.terminate_model(base, None, uids["emb"])
        xh.terminate_model(base, None, uids["llm"])
    assert code == 0
    assert any("STOPPING=1" in m for m in notifications(notify, "STOPPING=1", timeout=5))
