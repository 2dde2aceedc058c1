"""``xinference-reconciler estimate``: the memory estimator for one model on one GPU, for scripts.

The interface is fixed (users script it)::

    estimate --hf-config PATH --gpu-total-gib FLOAT
        [--weights-gib FLOAT | --params-billions FLOAT --quantization NAME]
        [--engine vllm] [--tensor-parallel-size N] [--kv-cache-dtype auto|fp8]
        [--gpu-memory-utilization FLOAT] [--max-model-len N] [--json]

``--model NAME [--size B]`` takes the architecture from the bundled catalogue instead of a file.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any, TextIO

from daemon.adapters.json_file import JsonFileError, read_json_object
from daemon.core import catalogue
from daemon.core.architecture import Architecture, ArchitectureError, architecture_from_hf_config
from daemon.core.engines import Engine
from daemon.core.footprint import (
    VLLM_DEFAULTS,
    EngineLimits,
    QuantizationError,
    bits_per_weight,
    estimate_footprint,
    kv_cache_bytes_at,
    max_model_len_at,
    required_utilization,
    vllm_default_limits,
    weights_bytes,
)
from daemon.core.units import GiB
from daemon.errors import ReconcilerError

ENGINES = {
    "vllm": Engine.VLLM,
    "sglang": Engine.SGLANG,
    "transformers": Engine.TRANSFORMERS,
    "llama.cpp": Engine.LLAMA_CPP,
    "sentence_transformers": Engine.SENTENCE_TRANSFORMERS,
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
        "--model-format", default=None, help="Xinference model_format (pytorch, awq, ggufv2...)"
    )
    p.add_argument("--engine", choices=sorted(ENGINES), default="vllm")
    p.add_argument("--tensor-parallel-size", type=_positive_int, default=1)
    p.add_argument("--kv-cache-dtype", choices=("auto", "fp8"), default="auto")
    p.add_argument("--gpu-memory-utilization", type=_fraction)
    p.add_argument("--max-model-len", type=_positive_int)
    p.add_argument(
        "--concurrent-sequences",
        type=_positive_int,
        default=1,
        help="full-length sequences that must fit at once (with --max-model-len)",
    )
    p.add_argument(
        "--vllm-context",
        choices=sorted(VLLM_DEFAULTS),
        default="xinference",
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


def _architecture(args: argparse.Namespace) -> Architecture:
    if args.hf_config:
        path = Path(args.hf_config)
        try:
            cfg = read_json_object(path, what="config.json")
        except JsonFileError as exc:
            raise ReconcilerError(str(exc)) from None
        try:
            return architecture_from_hf_config(cfg)
        except ArchitectureError as exc:
            raise ReconcilerError(f"{path}: {exc}") from None
    entry = catalogue.find(args.model, args.size)
    if entry is None:
        sizes = catalogue.sizes_for(args.model)
        hint = f"; sizes known: {', '.join(f'{s:g}' for s in sizes)}" if sizes else ""
        raise ReconcilerError(f"no catalogue entry for {args.model!r} size {args.size}{hint}")
    return architecture_from_hf_config(entry.config, params=entry.params)


def estimate_document(args: argparse.Namespace) -> dict[str, Any]:
    arch = _architecture(args)
    engine = ENGINES[args.engine]
    tp = args.tensor_parallel_size
    if args.weights_gib is not None:
        weights = round(args.weights_gib * GiB)
    else:
        if args.params_billions is not None:
            arch = Architecture(**{**arch.__dict__, "params": round(args.params_billions * 1e9)})
        fmt = args.model_format or (
            "ggufv2" if (args.quantization or "").lower().startswith(("q", "iq")) else "pytorch"
        )
        dtype = (
            min(arch.dtype_bytes, 2) if engine in (Engine.VLLM, Engine.SGLANG) else arch.dtype_bytes
        )
        try:
            bits = bits_per_weight(fmt, args.quantization, dtype_bytes=dtype)
        except QuantizationError as exc:
            raise ReconcilerError(str(exc)) from None
        weights = weights_bytes(
            arch, bits=bits, tensor_parallel_size=tp, gguf=fmt.startswith("gguf")
        )
    total = round(args.gpu_total_gib * GiB)
    defaults = vllm_default_limits(
        gpu_total_bytes=total, gpu_name=args.gpu_name, context=args.vllm_context
    )
    tokens = args.max_num_batched_tokens or defaults.max_num_batched_tokens
    limits = EngineLimits(
        max_num_batched_tokens=tokens,
        max_num_seqs=min(args.max_num_seqs or defaults.max_num_seqs, tokens),
        enforce_eager=args.enforce_eager,
    )
    fp = estimate_footprint(
        arch,
        engine=engine,
        weights=weights,
        tensor_parallel_size=tp,
        kv_dtype_bytes=1 if args.kv_cache_dtype == "fp8" else None,
        limits=limits,
    )
    doc: dict[str, Any] = {
        "weights_bytes": fp.weights_bytes,
        "kv_bytes_per_token": fp.kv_bytes_per_token,
        "overhead_bytes": fp.overhead_bytes,
        "activation_bytes": fp.activation_bytes,
        "non_torch_bytes": fp.non_torch_bytes,
        "cuda_graph_bytes": fp.cuda_graph_bytes,
        "cuda_context_bytes": fp.cuda_context_bytes,
        "engine": str(engine),
        "tensor_parallel_size": tp,
        "gpu_total_bytes": total,
        "max_num_batched_tokens": limits.max_num_batched_tokens,
        "max_num_seqs": limits.max_num_seqs,
    }
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
        doc["required_gpu_memory_utilization"] = required_utilization(
            fp,
            gpu_total_bytes=total,
            max_model_len=args.max_model_len,
            sequences=args.concurrent_sequences,
            chunk=limits.max_num_batched_tokens,
        )
    return doc


def _text(doc: dict[str, Any]) -> str:
    g = GiB
    lines = [
        f"engine {doc['engine']}, tensor parallel {doc['tensor_parallel_size']}, GPU total "
        f"{doc['gpu_total_bytes'] / g:.2f} GiB (per-GPU figures)",
        f"  weights              {doc['weights_bytes'] / g:8.2f} GiB",
        f"  KV cache per token   {doc['kv_bytes_per_token']:8d} bytes",
        f"  overhead             {doc['overhead_bytes'] / g:8.2f} GiB (activation "
        f"{doc['activation_bytes'] / g:.2f}, non-torch {doc['non_torch_bytes'] / g:.2f}, CUDA graphs "
        f"{doc['cuda_graph_bytes'] / g:.2f}, CUDA context {doc['cuda_context_bytes'] / g:.2f})",
    ]
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
    return "\n".join(lines)


def run_estimate(args: argparse.Namespace, out: TextIO) -> int:
    if args.size is not None and args.model is None:
        raise ReconcilerError("--size goes with --model")
    doc = estimate_document(args)
    out.write((json.dumps(doc, sort_keys=True) if args.json else _text(doc)) + "\n")
    return 0
