"""Refusals that help: how many bytes are missing on each GPU, and what would fit instead (the
largest max_model_len, the smallest tensor-parallel size, an fp8 KV cache, 4-bit weights), in the
plan's text and JSON. Every suggestion is checked by planning again with it."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest

from daemon.cli import main
from daemon.core.admission import Refusal
from daemon.core.desired import ClusterConfig, Config
from daemon.core.units import GiB
from tests.unit.builders import cluster, config, gpu_worker, model, plan_for

W1 = "127.0.0.1:30001"


def chat(**memory: Any) -> dict[str, Any]:
    """Qwen2.5-7B-Instruct on vLLM (28 attention heads, 14 GiB of bf16 weights)."""
    return {
        "model_name": "qwen2.5-instruct",
        "model_engine": "vLLM",
        "model_size_in_billions": 7,
        "memory": {"max_model_len": 32768, "concurrent_sequences": 8, **memory},
    }


# The workers run a known vLLM (the estimator's rules for an unknown version are the most
# conservative of all releases; these tests are about the suggestions, not about that margin).
VLLM = "0.11.0"


def known_vllm(models: dict[str, Any]) -> Config:
    cfg = config(models)
    return cfg.model_copy(update={"cluster": ClusterConfig(vllm_version=VLLM)})


def refusal_of(spec: dict[str, Any], *gpus: float, used_gib: float = 0.0) -> Refusal:
    p = plan_for(known_vllm({"chat": spec}), cluster(gpu_worker(W1, *gpus, used_gib=used_gib)))
    (refusal,) = p.refused
    return refusal


def admitted(spec: dict[str, Any], *gpus: float, used_gib: float = 0.0) -> bool:
    p = plan_for(known_vllm({"chat": spec}), cluster(gpu_worker(W1, *gpus, used_gib=used_gib)))
    return not p.refused and bool(p.admitted)


def with_keys(spec: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    """``spec`` with dotted config keys (``memory.max_model_len``) set."""
    out = json.loads(json.dumps(spec))
    for dotted, value in changes.items():
        *tables, key = dotted.split(".")
        target = out
        for table in tables:
            target = target.setdefault(table, {})
        target[key] = value
    return out


def test_a_model_larger_than_the_whole_gpu_gets_its_bytes_and_the_shortfall() -> None:
    r = refusal_of(chat(), 24)
    assert r.needed_bytes is not None
    assert r.available_bytes is not None
    assert r.needed_bytes > r.available_bytes
    assert r.missing_bytes == r.needed_bytes - r.available_bytes
    missing = f"{r.missing_bytes / GiB:.2f} GiB"
    assert f"{missing} more than the" in r.reason
    assert "gpu_memory_utilization" in r.reason  # the old words stay


def test_the_largest_max_model_len_that_fits_is_offered_and_is_the_largest() -> None:
    r = refusal_of(chat(), 24)
    lengths = [f["memory.max_model_len"] for f in r.fits_with if "memory.max_model_len" in f]
    assert len(lengths) == 1
    best = lengths[0]
    assert 16 <= best < 32768
    assert admitted(chat(max_model_len=best), 24)
    assert not admitted(chat(max_model_len=best + 1), 24)
    assert f"memory.max_model_len = {best}" in r.reason


def test_the_smallest_tensor_parallel_size_that_fits_is_offered() -> None:
    r = refusal_of(chat(concurrent_sequences=8), 24, 24, 24, 24)
    (tp,) = [f["placement.gpus"] for f in r.fits_with if "placement.gpus" in f]
    assert tp == 2
    assert admitted(with_keys(chat(concurrent_sequences=8), {"placement.gpus": 2}), 24, 24, 24, 24)
    assert "placement.gpus = 2" in r.reason
    r = refusal_of(chat(concurrent_sequences=12), 24, 24, 24, 24)
    (tp,) = [f["placement.gpus"] for f in r.fits_with if "placement.gpus" in f]
    assert tp == 4
    assert not admitted(with_keys(chat(concurrent_sequences=12), {"placement.gpus": 2}), 24, 24)


def test_an_fp8_kv_cache_and_4_bit_weights_are_offered_when_they_fit() -> None:
    six = chat(concurrent_sequences=6)
    r = refusal_of(six, 24)
    offered = [dict(f) for f in r.fits_with]
    assert {"memory.kv_cache_dtype": "fp8"} in offered
    assert {"model_format": "awq", "quantization": "Int4"} in offered
    assert admitted(chat(concurrent_sequences=6, kv_cache_dtype="fp8"), 24)
    assert admitted(with_keys(six, {"model_format": "awq", "quantization": "Int4"}), 24)
    eight = refusal_of(chat(concurrent_sequences=8), 24)  # fp8 alone is not enough there
    assert {"memory.kv_cache_dtype": "fp8"} not in [dict(f) for f in eight.fits_with]
    assert not admitted(chat(concurrent_sequences=8, kv_cache_dtype="fp8"), 24)


def test_no_suggestion_that_does_not_fit_is_ever_offered() -> None:
    r = refusal_of(chat(max_model_len=32768, concurrent_sequences=8), 24, used_gib=20)
    for alternative in r.fits_with:
        assert admitted(with_keys(chat(), dict(alternative)), 24, used_gib=20), alternative


def test_a_model_that_fits_an_empty_gpu_but_not_the_room_left_says_how_much_is_missing() -> None:
    r = refusal_of(model(gib=30), 24, used_gib=2)
    assert r.needed_bytes == 30 * GiB
    assert r.available_bytes == 22 * GiB
    assert "8.00 GiB more than the 22.00 GiB available" in r.reason


def test_on_a_cpu_only_cluster_the_refusal_points_to_placement_device() -> None:
    p = plan_for(config({"emb": model(gib=1, model_type="embedding")}), cluster(gpu_worker(W1)))
    (r,) = p.refused
    assert "no GPU matches the placement" in r.reason
    assert 'placement.device = "cpu"' in r.reason
    assert [dict(f) for f in r.fits_with] == [{"placement.device": "cpu"}]


def test_plan_json_carries_the_numbers_and_the_alternatives(tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text(
        f'[cluster]\nvllm_version = "{VLLM}"\n'
        '[models.chat]\nmodel_name = "qwen2.5-instruct"\nmodel_engine = "vLLM"\n'
        "model_size_in_billions = 7\n[models.chat.memory]\nmax_model_len = 32768\n"
        "concurrent_sequences = 6\n"
    )
    snap = tmp_path / "s.json"
    snap.write_text(
        json.dumps(
            {
                "format": 1,
                "workers": [{"address": W1, "gpus": [{"index": 0, "total_gib": 24}]}],
            }
        )
    )
    out = io.StringIO()
    assert main(["plan", str(cfg), "--observed", str(snap), "--json"], stdout=out) == 0
    (refused,) = json.loads(out.getvalue())["refused"]
    assert isinstance(refused["needed_bytes"], int)
    assert isinstance(refused["available_bytes"], int)
    assert refused["missing_bytes"] == refused["needed_bytes"] - refused["available_bytes"]
    assert {"model_format": "awq", "quantization": "Int4"} in refused["fits_with"]
    assert any("memory.max_model_len" in f for f in refused["fits_with"])
    text = io.StringIO()
    main(["plan", str(cfg), "--observed", str(snap)], stdout=text)
    assert "more than the" in text.getvalue()
    assert "fits with memory.max_model_len = " in text.getvalue()


@pytest.mark.parametrize("gib", [1, 23])
def test_what_fits_is_never_refused(gib: float) -> None:
    assert admitted(model(gib=gib), 24)
