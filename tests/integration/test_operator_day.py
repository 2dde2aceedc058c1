"""An operator's day against a real Xinference 4.1.0 (CPU, loopback), each test with servers of its
own, one at a time:

* a newcomer takes README.md's worked example for a host without GPUs (two custom embedding models
  and a tiny custom LLM), fills in local paths, validates it and applies it: first try;
* ``import`` of a cluster (some models launched by this tool, one by hand, all custom) plans no
  changes against it, and applying the imported file to a FRESH server, which has no registrations,
  rebuilds the same cluster.
"""

from __future__ import annotations

import io
import re
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import tomli_w

from daemon.cli import main
from tests.harness import server as xh

if sys.version_info >= (3, 11):
    import tomllib
else:  # Python 3.10: the same parser, published as tomli
    import tomli as tomllib

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]


def cli(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = main(list(argv), stdout=out, stderr=err)
    return code, out.getvalue(), err.getvalue()


@contextmanager
def fresh_server() -> Iterator[xh.XinferenceServer]:
    """A new server with an empty home: no models, no registrations."""
    srv = xh.XinferenceServer(auth=False).start()
    try:
        yield srv
    finally:
        srv.stop()
        assert not srv.leftover_pids(), "processes survived the server's stop"


def ready(base_url: str) -> dict[str, dict[str, Any]]:
    return {i["model_uid"]: i for i in xh.instances(base_url, None) if i["status"] == "READY"}


def registered(base_url: str, model_type: str, name: str) -> dict[str, Any] | None:
    r = xh.http("GET", f"{base_url}/v1/model_registrations/{model_type}/{name}")
    return r.body if r.ok else None


def readme_example() -> str:
    """The TOML block of README.md's "Custom models" section, as a newcomer copies it."""
    text = (REPO / "README.md").read_text()
    section = text[text.index("## Custom models") :]
    return section.split("```toml\n", 1)[1].split("```", 1)[0]


def test_the_readme_custom_example_works_first_try_on_a_cpu_only_host(
    tiny_models: dict[str, Any], tmp_path: Path
) -> None:
    text = readme_example()
    uris = re.findall(r'model_uri = "([^"]+)"', text)
    assert len(uris) == 3, "the example names three local paths"
    local = {  # what the newcomer has on disk: two embedding folders and a small chat model
        uris[0]: tiny_models["embedding"],
        uris[1]: tiny_models["embedding"],
        uris[2]: tiny_models["llm"],
    }
    for placeholder, path in local.items():
        text = text.replace(f'"{placeholder}"', f'"{path}"')
    with fresh_server() as srv:
        text = text.replace('endpoint = "http://127.0.0.1:9997"', f'endpoint = "{srv.base_url}"')
        cfg = tmp_path / "config.toml"
        cfg.write_text(text)
        code, out, err = cli("validate", str(cfg))
        assert code == 0, out + err
        state = ["--state-dir", str(tmp_path / "state")]
        code, out, err = cli("plan", str(cfg), *state)
        assert code == 0, err
        assert out.count("+ register ") == 3
        code, out, err = cli("apply", str(cfg), "--yes", "--poll-interval", "0.5", *state)
        assert code == 0, out + err
        models = tomllib.loads(text)["models"]
        assert set(ready(srv.base_url)) == set(models)
        for spec in models.values():
            stored = registered(srv.base_url, spec.get("model_type", "LLM"), spec["model_name"])
            assert stored is not None
            assert stored["model_specs"][0]["model_uri"] == spec["custom"]["model_uri"]
        answer = xh.http_json(
            "POST",
            f"{srv.base_url}/v1/embeddings",
            {"model": "search-embed", "input": "hello"},
        )
        assert len(answer["data"][0]["embedding"]) == 384
        chat = xh.http_json(
            "POST",
            f"{srv.base_url}/v1/chat/completions",
            {"model": "chat", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4},
            timeout=120,
        )
        assert chat["choices"][0]["message"]["role"] == "assistant"
        assert cli("plan", str(cfg), "--detailed-exitcode", *state)[0] == 0


def test_import_then_a_fresh_server_then_apply_rebuilds_the_same_cluster(
    tiny_models: dict[str, Any], tmp_path: Path
) -> None:
    ours = {  # launched by this tool: a custom LLM and a custom reranker
        "op-llm": {
            "model_name": "xr-op-llm",
            "model_engine": "Transformers",
            "model_size_in_billions": "0_001",
            "placement": {"device": "cpu"},
            "memory": {"max_model_len": 1024},
            "custom": {
                "model_uri": tiny_models["llm"],
                "spec": {
                    "model_family": "qwen2.5-instruct",
                    "chat_template": tiny_models["llm_chat_template"],
                    "stop_token_ids": tiny_models["llm_stop_token_ids"],
                    "stop": tiny_models["llm_stop"],
                },
            },
        },
        "op-rerank": {
            "model_name": "xr-op-rerank",
            "model_type": "rerank",
            "model_engine": "sentence_transformers",
            "placement": {"device": "cpu"},
            "custom": {"model_uri": tiny_models["reranker"]},
        },
    }
    state_a = ["--state-dir", str(tmp_path / "state-a")]
    imported = tmp_path / "imported.toml"
    with fresh_server() as a:
        cfg = tmp_path / "ours.toml"
        cfg.write_text(
            tomli_w.dumps(
                {
                    "cluster": {"endpoint": a.base_url, "timeout_seconds": 30},
                    "policy": {"mode": "enforce"},
                    "models": ours,
                }
            )
        )
        code, out, err = cli("apply", str(cfg), "--yes", "--poll-interval", "0.5", *state_a)
        assert code == 0, out + err
        # a colleague registers and launches a custom embedding model by hand
        hand = xh.embedding_registration(tiny_models["embedding"], name="xr-op-hand-emb")
        assert xh.register_model(a.base_url, None, "embedding", hand).ok
        launched = xh.launch_model(
            a.base_url,
            None,
            {"model_uid": "hand-emb", "model_name": "xr-op-hand-emb", "model_type": "embedding"},
            wait_ready=True,
        )
        assert launched.ok, launched.body
        before = ready(a.base_url)
        assert set(before) == {"op-llm", "op-rerank", "hand-emb"}

        code, _, err = cli("import", "--endpoint", a.base_url, "-o", str(imported), *state_a)
        assert code == 0, err
        assert cli("validate", str(imported))[0] == 0
        code, out, _ = cli("plan", str(imported), "--detailed-exitcode", *state_a)
        assert code == 0, out  # in sync: nothing this tool launched is replaced
        assert "No changes" in out
    doc = tomllib.loads(imported.read_text())
    assert doc["models"]["hand-emb"]["custom"]["model_uri"] == tiny_models["embedding"]
    assert doc["models"]["op-llm"]["custom"]["model_uri"] == tiny_models["llm"]

    with fresh_server() as b:
        assert registered(b.base_url, "embedding", "xr-op-hand-emb") is None
        doc["cluster"]["endpoint"] = b.base_url
        doc["policy"]["mode"] = "enforce"  # as the imported file's comment says
        imported.write_text(tomli_w.dumps(doc))
        state_b = ["--state-dir", str(tmp_path / "state-b")]
        code, out, err = cli("apply", str(imported), "--yes", "--poll-interval", "0.5", *state_b)
        assert code == 0, out + err
        after = ready(b.base_url)
        assert set(after) == set(before)
        for uid, instance in before.items():
            assert after[uid]["model_name"] == instance["model_name"]
        for kind, name in (
            ("LLM", "xr-op-llm"),
            ("rerank", "xr-op-rerank"),
            ("embedding", "xr-op-hand-emb"),
        ):
            stored = registered(b.base_url, kind, name)
            assert stored is not None, name
        assert cli("plan", str(imported), "--detailed-exitcode", *state_b)[0] == 0
