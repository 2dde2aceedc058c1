"""``xinference-reconciler estimate``: the memory estimator for one model on one GPU, for scripts.

The interface is fixed (users script it)::

    estimate --hf-config PATH --gpu-total-gib FLOAT
        [--weights-gib FLOAT | --params-billions FLOAT --quantization NAME]
        [--engine vllm] [--tensor-parallel-size N] [--kv-cache-dtype auto|fp8]
        [--gpu-memory-utilization FLOAT] [--max-model-len N] [--vllm-version X.Y.Z] [--json]

``--model NAME [--size B]`` takes the architecture from the bundled catalogue instead of a file.

One estimator: the flags become the same ``[models.<uid>]`` table a config holds, checked by the
same rules (``desired.cross_field_problems``) and resolved by the same functions
(``demand.resolve_model`` and ``demand.claim_on``) that ``plan`` and ``fit`` use.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any, TextIO

from pydantic import ValidationError

from daemon.adapters.json_file import JsonFileError, read_json_object
from daemon.core import catalogue
from daemon.core.demand import Claim, ResolveError, claim_on, engine_limits, resolve_model
from daemon.core.desired import Config, ModelSpec, cross_field_problems
from daemon.core.engines import FRACTION_ENGINES, Engine
from daemon.core.footprint import kv_cache_bytes_at, max_model_len_at
from daemon.core.units import GiB
from daemon.core.vllm_rules import Usage, VersionError, VllmVersion, rules_for
from daemon.errors import ReconcilerError

ENGINES = {
    "vllm": Engine.VLLM,
    "sglang": Engine.SGLANG,
    "transformers": Engine.TRANSFORMERS,
    "llama.cpp": Engine.LLAMA_CPP,
    "sentence_transformers": Engine.SENTENCE_TRANSFORMERS,
}
UID = "estimate"  # the model's key in the one-model config the flags describe
# config key -> the flag that sets it (for messages)
_FLAGS = {
    "model_engine": "--engine",
    "model_format": "--model-format",
    "model_type": "--model-type",
    "quantization": "--quantization",
    "placement.gpus": "--tensor-parallel-size",
    "memory.max_model_len": "--max-model-len",
    "memory.gpu_memory_utilization": "--gpu-memory-utilization",
    "memory.kv_cache_dtype": "--kv-cache-dtype",
    "memory.concurrent_sequences": "--concurrent-sequences",
    "memory.max_num_batched_tokens": "--max-num-batched-tokens",
    "memory.max_num_seqs": "--max-num-seqs",
    "architecture.weights_gib": "--weights-gib",
    "architecture.params_billions": "--params-billions",
    "architecture": "--hf-config / --model",
}


def _fraction(text: str) -> float:
    value = float(text)
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"must be in (0, 1], got {text}")
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return value


def _positive_int(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def _version(text: str) -> str:
    try:
        VllmVersion.parse(text)
    except VersionError as exc:
        raise argparse.ArgumentTypeError(f"{exc}, got {text!r}") from None
    return text


def add_estimate_parser(sub: Any) -> argparse.ArgumentParser:
    p: argparse.ArgumentParser = sub.add_parser(
        "estimate",
        help="GPU memory of one model: weights, KV bytes/token, overhead, utilization",
    )
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--hf-config", metavar="PATH", help="the model's Hugging Face config.json")
    source.add_argument(
        "--model", metavar="NAME", help="a catalogue model (Xinference name or HF repo)"
    )
    p.add_argument("--size", metavar="B", help="size in billions, with --model")
    p.add_argument(
        "--model-type",
        choices=("LLM", "embedding", "rerank"),
        help="default: the catalogue's, else LLM",
    )
    p.add_argument(
        "--gpu-total-gib",
        type=_positive_float,
        required=True,
        help="GPU total memory as CUDA reports it, GiB",
    )
    weights = p.add_mutually_exclusive_group()
    weights.add_argument(
        "--weights-gib", type=_positive_float, help="measured weights per GPU, GiB"
    )
    weights.add_argument(
        "--params-billions", type=_positive_float, help="parameter count, billions"
    )
    p.add_argument(
        "--quantization",
        default=None,
        help="weight quantization: none, fp8, int8, awq, gptq, int4, q4_k_m, ...",
    )
    p.add_argument(
        "--model-format",
        default=None,
        help="Xinference model_format (pytorch, awq, ggufv2...); default: the engine's own",
    )
    p.add_argument("--engine", choices=sorted(ENGINES), default="vllm")
    p.add_argument("--tensor-parallel-size", type=_positive_int, default=1)
    p.add_argument("--kv-cache-dtype", choices=("auto", "fp8"), default="auto")
    p.add_argument(
        "--gpu-memory-utilization", type=_fraction, help="vLLM/SGLang only: KV cache at this share"
    )
    p.add_argument("--max-model-len", type=_positive_int)
    p.add_argument(
        "--concurrent-sequences",
        type=_positive_int,
        default=1,
        help="full-length sequences that must fit at once (with --max-model-len)",
    )
    p.add_argument(
        "--vllm-version",
        type=_version,
        help="the vLLM release that serves it (what vLLM counts inside its budget changed between "
        "releases; default: unknown, the most conservative rules)",
    )
    p.add_argument(
        "--vllm-context",
        choices=[u.value for u in Usage],
        default=Usage.XINFERENCE.value,
        help="whose vLLM defaults apply when the limits are not given: xinference (2048 batched "
        "tokens on every GPU), serve (vllm serve) or llm (vllm.LLM); serve and llm depend on the GPU",
    )
    p.add_argument("--max-num-batched-tokens", type=_positive_int, help="default: --vllm-context's")
    p.add_argument("--max-num-seqs", type=_positive_int, help="default: --vllm-context's")
    p.add_argument(
        "--gpu-name",
        default="",
        help="e.g. 'NVIDIA A100-SXM4-80GB' (A100s get vLLM's smaller defaults)",
    )
    p.add_argument("--enforce-eager", action="store_true", help="no CUDA graphs")
    p.add_argument("--json", action="store_true", help="one JSON object with integer byte counts")
    return p


def _flag(path: str) -> str:
    return _FLAGS.get(path, path)


def model_table(args: argparse.Namespace) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """The flags as a config's ``[models.<uid>]`` table, and the config.json mapping they name."""
    table, hf_config = _source(args)
    table["model_engine"] = str(ENGINES[args.engine])
    for key, value in (("model_format", args.model_format), ("quantization", args.quantization)):
        if value is not None:
            table[key] = value
    table["placement"] = {"gpus": args.tensor_parallel_size}
    table["memory"] = _memory(args)
    architecture: dict[str, Any] = {}
    if args.weights_gib is not None:
        architecture["weights_gib"] = args.weights_gib
    if args.params_billions is not None:
        architecture["params_billions"] = args.params_billions
    if args.hf_config:
        architecture["hf_config"] = str(args.hf_config)
    table["architecture"] = architecture
    return table, hf_config


def _source(args: argparse.Namespace) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """Name, size and type from the catalogue entry or the config.json the flags name."""
    if args.hf_config:
        path = Path(args.hf_config)
        try:
            hf_config = read_json_object(path, what="config.json")
        except JsonFileError as exc:
            raise ReconcilerError(str(exc)) from None
        return {
            "model_name": path.parent.name or "model",
            "model_type": args.model_type or "LLM",
        }, (hf_config)
    entry = catalogue.find(args.model, args.size)
    if entry is None:
        sizes = catalogue.sizes_for(args.model)
        hint = f"; sizes known: {', '.join(f'{s:g}' for s in sizes)}" if sizes else ""
        raise ReconcilerError(f"no catalogue entry for {args.model!r} size {args.size}{hint}")
    table: dict[str, Any] = {
        "model_name": args.model,
        "model_type": args.model_type or entry.model_type,
    }
    if args.size is not None:
        table["model_size_in_billions"] = args.size
    return table, None


def _memory(args: argparse.Namespace) -> dict[str, Any]:
    memory: dict[str, Any] = {
        "kv_cache_dtype": args.kv_cache_dtype,
        "concurrent_sequences": args.concurrent_sequences,
        "enforce_eager": args.enforce_eager,
        "gpu_memory_utilization": "minimum" if args.max_model_len else "auto",
    }
    for key in ("max_model_len", "max_num_batched_tokens", "max_num_seqs"):
        if getattr(args, key) is not None:
            memory[key] = getattr(args, key)
    if args.gpu_memory_utilization is not None and ENGINES[args.engine] not in FRACTION_ENGINES:
        memory["gpu_memory_utilization"] = args.gpu_memory_utilization  # refused, as in a file
    return memory


def _spec(table: dict[str, Any]) -> ModelSpec:
    """The table checked as a config would be, or ReconcilerError naming the flags to fix."""
    try:
        config = Config.model_validate({"models": {UID: table}})
    except ValidationError as exc:
        problems = []
        for err in exc.errors(include_url=False, include_input=False):
            path = ".".join(str(p) for p in err["loc"][2:])
            problems.append(f"{_flag(path)}: {err['msg']}")
        raise ReconcilerError("; ".join(problems)) from None
    problems = [
        f"{_flag(path.removeprefix(f'models.{UID}.'))}: {message}"
        for path, message in cross_field_problems(config)
    ]
    if problems:
        raise ReconcilerError("; ".join(problems))
    return config.models[UID]


def estimate_document(args: argparse.Namespace) -> dict[str, Any]:
    table, hf_config = model_table(args)
    spec = _spec(table)
    try:
        demand = resolve_model(UID, spec, hf_config=hf_config)
    except ResolveError as exc:
        raise ReconcilerError(f"{_flag(exc.path)}: {exc}") from None
    total = round(args.gpu_total_gib * GiB)
    rules = rules_for(args.vllm_version)
    usage = Usage(args.vllm_context)
    claim = claim_on(demand, total, rules=rules, usage=usage, gpu_name=args.gpu_name)
    fp = claim.footprint
    if fp is None:
        raise ReconcilerError("the estimator has no footprint for this model")
    applied = claim.rules
    limits = engine_limits(
        demand, rules=applied or rules, usage=usage, gpu_total_bytes=total, gpu_name=args.gpu_name
    )
    doc: dict[str, Any] = {
        "weights_bytes": fp.weights_bytes,
        "kv_bytes_per_token": fp.kv_bytes_per_token,
        "overhead_bytes": fp.overhead_bytes,
        "activation_bytes": fp.activation_bytes,
        "non_torch_bytes": fp.non_torch_bytes,
        "cuda_graph_bytes": fp.cuda_graph_bytes,
        "cuda_context_bytes": fp.cuda_context_bytes,
        "communication_bytes": fp.communication_bytes,
        "engine": str(spec.model_engine),
        "model_type": spec.model_type,
        "tensor_parallel_size": demand.tensor_parallel_size,
        "gpu_total_bytes": total,
        "max_num_batched_tokens": limits.max_num_batched_tokens,
        "max_num_seqs": limits.max_num_seqs,
    }
    if fp.uses_fraction:
        _fraction_figures(doc, args, claim, total)
    else:
        doc["max_model_len"] = claim.max_model_len
        doc["concurrent_sequences"] = spec.memory.concurrent_sequences
        doc["holds_bytes"] = claim.bytes
    return doc


def _fraction_figures(
    doc: dict[str, Any], args: argparse.Namespace, claim: Claim, total: int
) -> None:
    fp = claim.footprint
    assert fp is not None
    doc["budgeted_overhead_bytes"] = fp.budgeted_overhead_bytes
    doc["outside_budget_bytes"] = fp.outside_budget_bytes
    if claim.rules is not None:
        doc["vllm_rules"] = claim.rules.key
        doc["vllm_version"] = (
            args.vllm_version or "unknown" if ENGINES[args.engine] == Engine.VLLM else None
        )
    if args.gpu_memory_utilization is not None:
        util = args.gpu_memory_utilization
        kv_bytes = kv_cache_bytes_at(fp, utilization=util, gpu_total_bytes=total)
        doc["gpu_memory_utilization"] = util
        doc["kv_cache_bytes"] = max(kv_bytes, 0)
        doc["kv_cache_tokens"] = fp.kv.tokens_that_fit(kv_bytes)
        doc["max_model_len_at_utilization"] = max_model_len_at(
            fp, utilization=util, gpu_total_bytes=total, sequences=args.concurrent_sequences
        )
    if args.max_model_len is not None:
        doc["max_model_len"] = args.max_model_len
        doc["concurrent_sequences"] = args.concurrent_sequences
        doc["required_gpu_memory_utilization"] = claim.utilization
        if claim.kv_cache_bytes is not None:
            doc["kv_cache_memory_bytes"] = claim.kv_cache_bytes


def _text(doc: dict[str, Any]) -> str:
    g = GiB
    lines = [
        f"engine {doc['engine']}, tensor parallel {doc['tensor_parallel_size']}, GPU total "
        f"{doc['gpu_total_bytes'] / g:.2f} GiB (per-GPU figures)",
        f"  weights              {doc['weights_bytes'] / g:8.2f} GiB",
        f"  KV cache per token   {doc['kv_bytes_per_token']:8d} bytes",
        f"  overhead             {doc['overhead_bytes'] / g:8.2f} GiB (activation "
        f"{doc['activation_bytes'] / g:.2f}, non-torch {doc['non_torch_bytes'] / g:.2f}, CUDA graphs "
        f"{doc['cuda_graph_bytes'] / g:.2f}, CUDA context {doc['cuda_context_bytes'] / g:.2f}"
        + (f", NCCL {doc['communication_bytes'] / g:.2f}" if doc.get("communication_bytes") else "")
        + ")",
    ]
    if "vllm_rules" in doc:
        who = (
            f"vLLM {doc['vllm_version']}"
            if doc["vllm_version"]
            else f"{doc['engine']} (vLLM's most conservative)"
        )
        lines.append(
            f"  {who} (rules {doc['vllm_rules']}): "
            f"{doc['budgeted_overhead_bytes'] / g:.2f} GiB inside gpu_memory_utilization x total, "
            f"{doc['outside_budget_bytes'] / g:.2f} GiB on top"
        )
    if "kv_cache_bytes" in doc:
        lines.append(
            f"  at gpu_memory_utilization {doc['gpu_memory_utilization']}: KV cache "
            f"{doc['kv_cache_bytes'] / g:.2f} GiB = {doc['kv_cache_tokens']} tokens; longest "
            f"max_model_len that fits: {doc['max_model_len_at_utilization']}"
        )
    if "required_gpu_memory_utilization" in doc:
        need = doc["required_gpu_memory_utilization"]
        verdict = "" if need <= 1 else " (does not fit this GPU at any utilization)"
        lines.append(
            f"  max_model_len {doc['max_model_len']} x {doc['concurrent_sequences']} sequence(s) "
            f"needs gpu_memory_utilization >= {need}{verdict}"
        )
        if "kv_cache_memory_bytes" in doc:
            lines.append(f"  launched with kv_cache_memory_bytes={doc['kv_cache_memory_bytes']}")
    if "holds_bytes" in doc:
        lines.append(
            f"  max_model_len {doc['max_model_len']} x {doc['concurrent_sequences']} sequence(s): "
            f"holds {doc['holds_bytes'] / g:.2f} GiB (this engine allocates as it goes; it takes "
            "no gpu_memory_utilization)"
        )
    return "\n".join(lines)


def run_estimate(args: argparse.Namespace, out: TextIO) -> int:
    if args.size is not None and args.model is None:
        raise ReconcilerError("--size goes with --model")
    doc = estimate_document(args)
    out.write((json.dumps(doc, sort_keys=True) if args.json else _text(doc)) + "\n")
    return 0
