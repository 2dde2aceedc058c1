"""Compare the estimator's KV-cache tokens with what vLLM itself reported in public start-up logs.

Usage: python benchmarks/calibrate_estimator.py [--json]

For each log in tests/data/vllm_startup_logs.json that prints everything the comparison needs
(GPU total, utilization, measured weights, KV cache tokens or GiB, and a known architecture), the
estimator is given the measured weights and predicts activation + non-torch memory and thus the KV
cache. Logs that lack a term are listed with the reason they were left out.
"""

from __future__ import annotations

import json
import statistics
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from daemon.core.architecture import architecture_from_hf_config
from daemon.core.footprint import EngineLimits, estimate_footprint, kv_cache_tokens_at
from daemon.core.units import GiB

LOGS = Path(__file__).resolve().parents[1] / "tests" / "data" / "vllm_startup_logs.json"
V0_DEFAULT_MAX_NUM_SEQS = 256
V1_FALLBACK_BATCHED_TOKENS = 2048


@dataclass(frozen=True)
class Row:
    log_id: str
    model: str
    gpu_total_gib: float
    utilization: float
    weights_gib: float
    batched_tokens: int
    reported_tokens: int
    estimated_tokens: int

    @property
    def error(self) -> float:
        """Relative error of the estimate; positive = over-estimate (the dangerous side)."""
        return (self.estimated_tokens - self.reported_tokens) / self.reported_tokens


def _batched_tokens(log: dict[str, Any], arch_max_pos: int | None) -> int | None:
    if log.get("max_num_batched_tokens"):
        return int(log["max_num_batched_tokens"])
    if log.get("vllm_engine") == "v0":
        # V0 without chunked prefill profiles one batch of max(max_model_len, 2048) tokens.
        length = log.get("max_model_len") or arch_max_pos
        return max(int(length), 2048) if length else None
    return V1_FALLBACK_BATCHED_TOKENS


def evaluate(path: Path = LOGS) -> tuple[list[Row], list[tuple[str, str]]]:
    data = json.loads(path.read_text())
    rows: list[Row] = []
    skipped: list[tuple[str, str]] = []
    for log in data["logs"]:
        inferred = log.get("architecture_inferred")
        cfg = inferred["config"] if inferred else log.get("architecture") or {}
        missing = [
            k
            for k in ("total_gpu_memory_gib", "gpu_memory_utilization", "weights_gib")
            if log.get(k) is None
        ]
        reported = log.get("kv_cache_tokens")
        if reported is None and log.get("kv_cache_gib") is None:
            missing.append("kv_cache_tokens")
        if missing:
            skipped.append((log["id"], "log lacks " + ", ".join(missing)))
            continue
        if not log.get("model") and not inferred:
            skipped.append((log["id"], "model not named in the log (architecture unknown)"))
            continue
        if "vision" in (log.get("model") or "").lower() or "vl" in str(cfg.get("model_type", "")):
            skipped.append(
                (log["id"], "multimodal: the profile run sizes image inputs (out of scope)")
            )
            continue
        if log.get("quantization") in ("bitsandbytes",):
            skipped.append((log["id"], "bitsandbytes dequantises on the fly (not modelled)"))
            continue
        try:
            arch = architecture_from_hf_config(cfg)
        except ValueError as exc:
            skipped.append((log["id"], f"architecture unknown ({exc})"))
            continue
        tokens = _batched_tokens(log, arch.max_position_embeddings)
        if tokens is None:
            skipped.append((log["id"], "profiling batch size unknown"))
            continue
        tp = int(log.get("tensor_parallel_size") or 1)
        limits = EngineLimits(
            max_num_batched_tokens=tokens,
            max_num_seqs=int(log.get("max_num_seqs") or V0_DEFAULT_MAX_NUM_SEQS),
        )
        fp = estimate_footprint(
            arch,
            engine="vLLM",
            weights=round(log["weights_gib"] * GiB),
            tensor_parallel_size=tp,
            limits=limits,
        )
        total = round(log["total_gpu_memory_gib"] * GiB)
        if reported is None:
            reported = fp.kv.tokens_that_fit(round(log["kv_cache_gib"] * GiB))
        estimated = kv_cache_tokens_at(
            fp, utilization=log["gpu_memory_utilization"], gpu_total_bytes=total
        )
        rows.append(
            Row(
                log_id=log["id"],
                model=(inferred or {}).get("model") or log.get("model") or "?",
                gpu_total_gib=log["total_gpu_memory_gib"],
                utilization=log["gpu_memory_utilization"],
                weights_gib=log["weights_gib"],
                batched_tokens=tokens,
                reported_tokens=int(reported),
                estimated_tokens=estimated,
            )
        )
    return rows, skipped


def summary(rows: list[Row]) -> dict[str, float]:
    errors = [r.error for r in rows]
    return {
        "logs": len(rows),
        "median_abs_error": statistics.median(abs(e) for e in errors),
        "max_over": max(errors),
        "max_under": min(errors),
    }


def markdown(rows: list[Row], skipped: list[tuple[str, str]]) -> str:
    lines = [
        "| log | model | GPU GiB | util | weights GiB | batch tokens | vLLM tokens | estimate | error |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r.log_id} | {r.model} | {r.gpu_total_gib} | {r.utilization} | {r.weights_gib} | "
            f"{r.batched_tokens} | {r.reported_tokens} | {r.estimated_tokens} | {r.error:+.1%} |"
        )
    s = summary(rows)
    lines.append("")
    lines.append(
        f"{s['logs']} logs: median |error| {s['median_abs_error']:.1%}, worst over-estimate "
        f"{s['max_over']:+.1%}, worst under-estimate {s['max_under']:+.1%}."
    )
    lines.append("")
    lines.append("Left out:")
    lines.extend(f"- {log_id}: {why}" for log_id, why in skipped)
    return "\n".join(lines)


if __name__ == "__main__":
    result_rows, result_skipped = evaluate()
    if "--json" in sys.argv:
        print(
            json.dumps(
                {"summary": summary(result_rows), "rows": [r.__dict__ for r in result_rows]},
                indent=2,
            )
        )
    else:
        print(markdown(result_rows, result_skipped))
