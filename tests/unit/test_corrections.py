"""Learning from the engine (issue 9, item 4): every memory failure message vLLM prints becomes a
correction on the safe side, and the next pass plans with it at once, never with the same failing
arguments."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from daemon.adapters.state_file import StateStore
from daemon.core.corrections import MARGIN_BYTES, learn, overrun, parse_engine_error
from daemon.core.demand import claim_on, resolve_model
from daemon.core.desired import ModelSpec
from daemon.core.planning import Launch
from daemon.core.units import GiB
from daemon.reconciler import Options, PassReport, reconcile_once
from daemon.testing.builders import gpu_worker
from daemon.testing.fake_cluster import FakeCluster
from tests.unit.builders import TINY_ARCH, config, demands, llama_3_8b_hf_config

W1 = "127.0.0.1:30001"
PREFIX = "[address=127.0.0.1:40031, pid=16982] "

# Verbatim shapes from docs/vllm-versions.md section 4 (one per message family and version range).
MESSAGES: dict[str, str] = {
    "v0 max len": "The model's max seq len (32768) is larger than the maximum number of tokens "
    "that can be stored in KV cache (20000). Try increasing `gpu_memory_utilization` or "
    "decreasing `max_model_len` when initializing the engine.",
    "v1 0.7 GB": "To serve at least one request with the models's max seq len (32768), (4.00 GB "
    "KV cache is needed, which is larger than the available KV cache memory (2.44 GB). Try "
    "increasing `gpu_memory_utilization` or decreasing `max_model_len` when initializing the engine.",
    "v1 0.9 estimated": "To serve at least one request with the models's max seq len (32768), "
    "(4.00 GiB KV cache is needed, which is larger than the available KV cache memory (2.44 GiB). "
    "Based on the available memory, the estimated maximum model length is 19984. Try increasing "
    "`gpu_memory_utilization` or decreasing `max_model_len` when initializing the engine.",
    "v1 0.22 rounded": "To serve at least one request with the model's max seq len (32768), (4.0 "
    "GiB KV cache is needed, which is larger than the available KV cache memory (2.4 GiB). Based "
    "on the available memory, the estimated maximum model length is 19984. Try increasing "
    "`gpu_memory_utilization` (which also controls CPU memory on the CPU backend) or decreasing "
    "`max_model_len` when initializing the engine.",
    "no memory": "No available memory for the cache blocks. Try increasing "
    "`gpu_memory_utilization` when initializing the engine.",
    "gate 0.9": "Free memory on device (10.5/79.19 GiB) on startup is less than desired GPU "
    "memory utilization (0.9, 71.27 GiB). Decrease GPU memory utilization or reduce GPU memory "
    "used by other processes.",
    "gate 0.14": "Free memory on device cuda:0 (10.5/79.19 GiB) on startup is less than desired "
    "GPU memory utilization (0.9, 71.27 GiB). Decrease GPU memory utilization or reduce GPU memory "
    "used by other processes.",
    "torch oom": "CUDA out of memory. Tried to allocate 2.00 GiB. GPU 0 has a total capacity of "
    "79.19 GiB of which 1.02 GiB is free. Including non-PyTorch memory, this process has 78.1 GiB "
    "memory in use.",
    "warm-up oom": "CUDA out of memory occurred when warming up sampler with 256 dummy requests. "
    "Please try lowering `max_num_seqs` or `gpu_memory_utilization` when initializing the engine.",
}


@pytest.mark.parametrize("name", sorted(MESSAGES))
def test_every_memory_message_is_understood_with_or_without_the_actor_prefix(name: str) -> None:
    for text in (MESSAGES[name], PREFIX + MESSAGES[name]):
        finding = parse_engine_error(text)
        assert finding is not None, name


def test_other_failures_are_not_memory() -> None:
    assert parse_engine_error("Model not found, name: llama") is None
    assert parse_engine_error(PREFIX + "Engine core initialization failed.") is None
    assert parse_engine_error(None) is None


def test_numbers_are_read_at_the_unsafe_end_of_their_rounding() -> None:
    v1 = parse_engine_error(MESSAGES["v1 0.22 rounded"])
    assert v1 is not None
    assert v1.kv_bytes_at_most == pytest.approx(2.405 * GiB, abs=2)  # 2.4 printed: at most 2.405
    gate = parse_engine_error(MESSAGES["gate 0.9"])
    assert gate is not None
    # wanted at least 71.265 GiB, free at most 10.505 GiB
    assert gate.short_bytes == pytest.approx((71.265 - 10.505) * GiB, abs=2)
    oom = parse_engine_error(MESSAGES["torch oom"])
    assert oom is not None
    assert oom.short_bytes == pytest.approx((1.995 - 1.025) * GiB, abs=2)


LLM: dict[str, Any] = {
    "model_name": "llama",
    "model_engine": "vLLM",
    "architecture": {
        "fields": {**TINY_ARCH, **llama_3_8b_hf_config()},
        "weights_gib": 15.0,
    },
    "memory": {"max_model_len": 32768, "gpu_memory_utilization": "minimum"},
}


def test_a_kv_cache_shortfall_corrects_by_what_the_cache_lacked_plus_a_margin() -> None:
    demand = resolve_model("llm", ModelSpec.model_validate(LLM))
    total = round(47.5 * GiB)
    claim = claim_on(demand, total)
    assert claim.utilization is not None
    args = {"gpu_memory_utilization": claim.utilization, "max_model_len": 32768}
    bpt = 131072  # 32 layers x 2 x 8 x 128 x 2
    tokens = 20000
    finding = parse_engine_error(MESSAGES["v0 max len"])
    assert finding is not None
    c = learn(
        finding,
        demand=demand,
        launch_args=args,
        gpu_total_bytes=total,
        claim_bytes=claim.bytes,
        now=1.0,
    )
    predicted_kv = claim.kv_tokens * bpt if claim.kv_tokens else 0
    assert c.extra_bytes >= predicted_kv - tokens * bpt + MARGIN_BYTES - 16 * bpt
    assert c.key == demand.spec.memory_key()
    # the corrected claim fits 32768 tokens only at a higher utilization
    from dataclasses import replace

    again = claim_on(replace(demand, correction_bytes=c.extra_bytes), total)
    assert again.utilization is not None
    assert again.utilization > claim.utilization


def test_a_model_within_its_claim_is_no_overrun_and_one_above_is() -> None:
    demand = resolve_model(
        "a", ModelSpec.model_validate({"model_name": "m", "memory": {"estimate_gib": 4.0}})
    )
    claim = 4 * GiB
    assert overrun(demand=demand, held_bytes=round(claim * 1.01), claim_bytes=claim, now=0) is None
    found = overrun(demand=demand, held_bytes=5 * GiB, claim_bytes=claim, now=0)
    assert found is not None
    assert found.extra_bytes == GiB + MARGIN_BYTES


class Rig:
    def __init__(self, tmp: Path) -> None:
        self.store = StateStore(tmp / "state")
        self.cluster = FakeCluster((gpu_worker(W1, 47.5),), known_models=frozenset({"llama"}))
        self.cfg = config({"llm": LLM})
        self.events: list[tuple[str, dict[str, Any]]] = []
        self.now = 1000.0
        self.sent: dict[str, float] = {}

    def run(self) -> PassReport:
        return reconcile_once(
            config=self.cfg,
            demands=demands(self.cfg),
            cluster=self.cluster,
            store=self.store,
            opts=Options(
                act=True,
                clock=lambda: self.now,
                monotonic=lambda: self.now,
                sent=self.sent,
                events=lambda event, **f: self.events.append((event, f)),
            ),
        )


@pytest.mark.parametrize(
    "name", ["v0 max len", "v1 0.9 estimated", "no memory", "gate 0.14", "torch oom"]
)
def test_a_memory_failure_is_relaunched_at_once_with_corrected_arguments(
    tmp_path: Path, name: str
) -> None:
    rig = Rig(tmp_path)
    rig.cluster.fail["llm"] = PREFIX + MESSAGES[name]
    first = rig.run()
    launch = first.plan.actions[0]
    assert isinstance(launch, Launch)
    sent = launch.launch_args
    rig.cluster.fail.clear()
    second = rig.run()  # sees ERROR, learns, relaunches in the same pass
    corrected = [f for e, f in rig.events if e == "estimate.corrected"]
    assert len(corrected) == 1, rig.events
    assert (
        corrected[0]["after_bytes"] is None
        or corrected[0]["after_bytes"] > corrected[0]["before_bytes"]
    )
    relaunch = [a for a in second.plan.actions if a.uid == "llm"]
    refused = [r for r in second.plan.refused if r.uid == "llm"]
    assert relaunch or refused  # a launch that fits, or a refusal that says why
    if relaunch:
        assert isinstance(relaunch[0], Launch)
        assert relaunch[0].launch_args != sent  # never the same failing arguments again
        assert relaunch[0].launch_args["gpu_memory_utilization"] > sent["gpu_memory_utilization"]
    assert store_corrections(rig)


def store_corrections(rig: Rig) -> dict[str, Any]:
    return dict(rig.store.load().corrections)


def test_vllm_v1_wrapper_message_reads_the_cause_from_the_worker_log(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    rig.cluster.fail["llm"] = PREFIX + "Engine core initialization failed. See root cause above."
    rig.cluster.logs[W1] = (
        "INFO 12-01 xinference.stderr pid:32450 (EngineCore_DP0 pid=32450) ValueError: "
        + MESSAGES["gate 0.14"]
        + "\n"
    )
    rig.run()
    rig.cluster.fail.clear()
    rig.run()
    (corrected,) = [f for e, f in rig.events if e == "estimate.corrected"]
    assert corrected["kind"] == "startup_gate"


def test_when_the_correction_changes_nothing_the_same_arguments_wait_for_the_backoff(
    tmp_path: Path,
) -> None:
    """A pinned utilization leaves the corrected plan nothing to change: not retried at once."""
    rig = Rig(tmp_path)
    rig.cfg = config(
        {"llm": {**LLM, "memory": {"max_model_len": 4096, "gpu_memory_utilization": 0.9}}}
    )
    rig.cluster.fail["llm"] = PREFIX + MESSAGES["torch oom"]
    rig.run()
    second = rig.run()
    assert [a.uid for a in second.plan.actions] == []
    assert "same arguments" in second.plan.left_alone.get("llm", "") or any(
        r.uid == "llm" for r in second.plan.refused
    )


def test_the_calibration_ledger_round_trips_and_plans_use_it_and_say_so(tmp_path: Path) -> None:
    """Learned on a cluster, exported to git, named by the config: plan, fit and the JSON plan
    show the measured figure, and the claim includes it."""
    import io
    import json

    from daemon.cli import main

    rig = Rig(tmp_path)
    rig.cluster.fail["llm"] = PREFIX + MESSAGES["v0 max len"]
    rig.run()
    rig.run()
    ledger = tmp_path / "calibration.toml"
    out, err = io.StringIO(), io.StringIO()
    code = main(
        ["calibration", "export", "--state-dir", str(tmp_path / "state"), "-o", str(ledger)],
        stdout=out,
        stderr=err,
    )
    assert code == 0, err.getvalue()
    assert "1 measured model(s)" in err.getvalue()
    text = ledger.read_text()
    assert 'kind = "kv_cache"' in text
    assert "max seq len (32768)" in text

    config = tmp_path / "config.toml"
    import tomli_w

    config.write_text(
        tomli_w.dumps(
            {
                "policy": {"mode": "enforce", "gpu_reserve_gib": 0.0},
                "calibration": {"file": "calibration.toml"},
                "models": {"llm": LLM},
            }
        )
    )
    snap = tmp_path / "snap.json"
    snap.write_text(
        json.dumps(
            {
                "format": 1,
                "workers": [
                    {"address": W1, "gpus": [{"index": 0, "total_gib": 47.5, "used_gib": 0}]}
                ],
            }
        )
    )
    for argv, needle in (
        (["plan", str(config), "--observed", str(snap)], "memory: llm (llama): +"),
        (["fit", str(config), "--observed", str(snap)], "measured)"),
    ):
        out = io.StringIO()
        assert main(argv, stdout=out, stderr=io.StringIO()) in (0, 2)
        assert needle in out.getvalue(), out.getvalue()
    out = io.StringIO()
    main(["plan", str(config), "--observed", str(snap), "--json"], stdout=out, stderr=err)
    (launch,) = json.loads(out.getvalue())["actions"]
    assert launch["measured"].startswith("llm (llama): +")


def test_a_broken_ledger_is_a_config_error_with_its_key_path(tmp_path: Path) -> None:
    import io

    from daemon.cli import main

    (tmp_path / "calibration.toml").write_text('format = 1\n[measured.x]\nkind = "guess"\n')
    config = tmp_path / "config.toml"
    config.write_text('[calibration]\nfile = "calibration.toml"\n')
    err = io.StringIO()
    assert main(["validate", str(config)], stdout=io.StringIO(), stderr=err) == 1
    assert "calibration.file" in err.getvalue()
    assert "measured.x" in err.getvalue()
    assert "Traceback" not in err.getvalue()
