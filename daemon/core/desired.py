"""The config file's model: what should run on the cluster and under which memory policy.

Pydantic models, frozen, unknown keys rejected, each field documented next to itself so the JSON
Schema (``schemas/config.schema.json``) and editors explain the file. :func:`cross_field_problems`
adds the rules that span several fields, each reported with its exact key path.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    Strict,
    WithJsonSchema,
    field_validator,
    model_validator,
)

from daemon.core.addresses import check_endpoint
from daemon.core.engines import ENGINE_SPELLING, ENGINES_BY_TYPE, FRACTION_ENGINES, Engine
from daemon.core.footprint import known_quantizations
from daemon.core.launch import BODY_KEYS
from daemon.core.naming import is_secret_name, uid_problem
from daemon.core.vllm_rules import version_problem

Int = Annotated[int, Strict()]
Bool = Annotated[bool, Strict()]
Float = Annotated[float, Strict()]
Str = Annotated[str, Strict()]
Scalar = Str | Int | Float | Bool
# Any value TOML can hold is accepted here, and what JSON cannot carry (a TOML date, nan) is
# refused by the launch-request check with its exact key path (core/launch.py), instead of a union
# of type errors; the schema tells editors what is sent: a JSON value.
_JSON_VALUE_SCHEMA = {
    "anyOf": [{"type": t} for t in ("string", "integer", "number", "boolean", "array", "object")]
}
EngineArg = Annotated[Any, WithJsonSchema(_JSON_VALUE_SCHEMA)]

ModelType = Literal["LLM", "embedding", "rerank", "image", "audio", "video", "flexible"]
# Launch settings that the reconciler computes or sets itself; writing them in engine_args would
# silently fight the memory policy, so they are refused there with a pointer to the right key.
_RESERVED_ENGINE_ARGS = {
    "gpu_memory_utilization": "memory.gpu_memory_utilization",
    "max_model_len": "memory.max_model_len",
    "kv_cache_dtype": "memory.kv_cache_dtype",
    "tensor_parallel_size": "placement.gpus",
    "max_num_seqs": "memory.max_num_seqs",
    "max_num_batched_tokens": "memory.max_num_batched_tokens",
    "enforce_eager": "memory.enforce_eager",
}
MAX_GPU_GIB = 4096.0  # no GPU holds more; larger numbers are typos (and would overflow)


def flatten(doc: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested tables -> dotted keys; lists and scalars are leaves. ``engine_args`` stays one table
    per key below it (``engine_args.speculative_config`` is one leaf)."""
    out: dict[str, Any] = {}
    for key, value in doc.items():
        path = f"{prefix}{key}"
        if isinstance(value, Mapping) and value and not prefix.startswith("engine_args"):
            out.update(flatten(value, path + "."))
        else:
            out[path] = value
    return out


def changed_keys(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    """``key: old -> new`` for every flattened key whose value differs (added or removed too)."""
    missing = object()
    out = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key, missing), new.get(key, missing)
        if a != b:
            show_a = "(unset)" if a is missing else repr(a)
            show_b = "(unset)" if b is missing else repr(b)
            out.append(f"{key}: {show_a} -> {show_b}")
    return out


class FieldError(ValueError):
    """A validator's complaint about one named sub-key (so the error can point at that key)."""

    def __init__(self, key: str, message: str) -> None:
        self.key = key
        super().__init__(message)


class _Frozen(BaseModel):
    # No inf or NaN anywhere: every number in the file must be a real quantity.
    model_config = ConfigDict(
        extra="forbid", frozen=True, validate_default=True, allow_inf_nan=False
    )


class AuthConfig(_Frozen):
    """How to authenticate to Xinference. Secrets are never written in the file itself: name an
    environment variable, a file, or a systemd credential that holds them."""

    mode: Literal["none", "password", "api_key"] = Field(
        "none",
        description="none: auth is off on the server; password: log in as a user (can launch and "
        "terminate); api_key: an xf-... key, which Xinference allows to read only (plan/observe).",
    )
    username: Str | None = Field(None, description="User to log in as (mode = password).")
    password_env: Str | None = Field(None, description="Environment variable holding the password.")
    password_file: Str | None = Field(None, description="File holding the password.")
    api_key_env: Str | None = Field(None, description="Environment variable holding the API key.")
    api_key_file: Str | None = Field(None, description="File holding the API key.")
    credential: Str | None = Field(
        None,
        description="Name of a systemd credential (LoadCredential=) holding the password or key; "
        "read from $CREDENTIALS_DIRECTORY/<name>.",
    )

    @model_validator(mode="before")
    @classmethod
    def _no_inline_secrets(cls, data: Any) -> Any:
        if isinstance(data, dict):
            for key in data:
                if is_secret_name(key) and key not in cls.model_fields:
                    raise FieldError(
                        key,
                        f"secrets must not be written in the config (it is kept in version "
                        f"control); use {key}_env, {key}_file or credential instead",
                    )
        return data

    @model_validator(mode="after")
    def _sources_match_mode(self) -> AuthConfig:
        pw = [s for s in (self.password_env, self.password_file) if s]
        key = [s for s in (self.api_key_env, self.api_key_file) if s]
        cred = 1 if self.credential else 0
        if self.mode == "none" and (pw or key or cred or self.username):
            raise ValueError("mode 'none' takes no username, password or key settings")
        if self.mode == "password":
            if not self.username:
                raise ValueError("mode 'password' needs 'username'")
            if key or len(pw) + cred != 1:
                raise ValueError(
                    "mode 'password' needs exactly one of password_env, password_file, credential"
                )
        if self.mode == "api_key" and (pw or self.username or len(key) + cred != 1):
            raise ValueError(
                "mode 'api_key' needs exactly one of api_key_env, api_key_file, credential"
            )
        return self


def _unquoted_version(value: Any) -> Any:
    if isinstance(value, int | float) and not isinstance(value, bool):
        raise ValueError('write the version as a quoted string, e.g. vllm_version = "0.11.0"')
    return value


def _vllm_version(value: str | None) -> str | None:
    if value is not None:
        problem = version_problem(value)
        if problem:
            raise ValueError(problem)
    return value


# A quoted release such as "0.11.0" (a bare number is refused before type checks, with a hint).
VllmVersionField = Annotated[
    Str | None, BeforeValidator(_unquoted_version), AfterValidator(_vllm_version)
]

_VLLM_VERSION_HELP = (
    "the vLLM release installed there, e.g. '0.11.0' (pip show vllm). It decides what vLLM counts "
    "inside gpu_memory_utilization (docs/estimator.md). A version a running vLLM model reports "
    "through Xinference wins over this; with neither, the most conservative rules apply."
)


class WorkerConfig(_Frozen):
    """What the reconciler should know about one worker that Xinference does not report."""

    vllm_version: VllmVersionField = Field(
        None, description=f"On this worker: {_VLLM_VERSION_HELP}"
    )


class ClusterConfig(_Frozen):
    """Where the Xinference supervisor (or xinference-local) answers, and how to talk to it."""

    endpoint: Str = Field(
        "http://127.0.0.1:9997", description="Base URL of the supervisor, http:// or https://."
    )
    auth: AuthConfig = Field(default_factory=AuthConfig)
    timeout_seconds: Float = Field(10.0, gt=0, le=600, description="Timeout of each HTTP call.")
    verify_tls: Bool = Field(True, description="Verify the server's TLS certificate (https only).")
    ca_bundle: Str | None = Field(
        None, description="CA bundle file for a private certificate authority."
    )
    vllm_version: VllmVersionField = Field(
        None,
        description=f"On every worker unless [cluster.workers] says otherwise: {_VLLM_VERSION_HELP}",
    )
    workers: dict[str, WorkerConfig] = Field(
        default_factory=dict,
        description="Per-worker settings, keyed by the worker's address (ip:port, as Xinference "
        "lists it) or its host.",
    )

    @field_validator("workers")
    @classmethod
    def _worker_keys(cls, workers: dict[str, WorkerConfig]) -> dict[str, WorkerConfig]:
        for key in workers:
            if not key.strip() or any(c.isspace() for c in key) or "/" in key:
                raise FieldError(
                    key, "expected a worker address ('10.0.0.5:30001') or host ('10.0.0.5')"
                )
        return workers

    @field_validator("endpoint")
    @classmethod
    def _http_url(cls, value: str) -> str:
        return check_endpoint(value)


class PolicyConfig(_Frozen):
    """What the reconciler may do, and how much of each GPU it may plan with."""

    mode: Literal["observe", "enforce"] = Field(
        "observe",
        description="observe: report drift and plans, change nothing; enforce: launch and terminate.",
    )
    prune: Literal["none", "managed", "all"] = Field(
        "managed",
        description="What may be terminated when it is not in the file: none; managed: only models "
        "this tool launched (recorded in its state file); all: every model not in the file.",
    )
    on_empty_config: Literal["keep", "prune"] = Field(
        "keep",
        description="A config with no models (or a deleted file, for the daemon): keep everything "
        "running, or apply the prune rule as usual. 'keep' protects against a bad deploy.",
    )
    gpu_reserve_gib: Float = Field(
        0.5,
        ge=0,
        le=MAX_GPU_GIB,
        description="GiB kept free on every GPU (driver, spikes, other tenants).",
    )
    gpu_max_fraction: Float = Field(
        0.95, gt=0, le=1, description="Largest fraction of each GPU's total memory plans may fill."
    )
    max_actions_per_pass: Int = Field(
        8, ge=1, description="At most this many launches and terminations in one pass."
    )
    launch_timeout_seconds: Float = Field(
        900.0, gt=0, le=86400, description="Deadline for a launched model to become READY."
    )


class PlacementSpec(_Frozen):
    """Where a model runs. Leave worker and gpu_indexes out to let the planner choose."""

    device: Literal["gpu", "cpu"] = Field("gpu", description="gpu, or cpu for a CPU-only model.")
    worker: Str | None = Field(
        None, description="Worker address or IP to pin to (as Xinference lists it)."
    )
    gpu_indexes: tuple[Int, ...] | None = Field(
        None, description="GPU indexes on the worker to pin to; as many as gpus x replicas."
    )
    gpus: Int = Field(
        1, ge=1, le=64, description="GPUs per replica (n_gpu; the tensor-parallel size for vLLM)."
    )


class MemorySpec(_Frozen):
    """What the model must be able to hold, and how its engine's memory knobs are set."""

    max_model_len: Int | None = Field(
        None,
        ge=16,
        le=100_000_000,
        description="Context length the engine must serve (vLLM max_model_len).",
    )
    concurrent_sequences: Int = Field(
        1,
        ge=1,
        le=1_000_000,
        description="Full-length sequences that must fit in the KV cache at once.",
    )
    kv_cache_dtype: Literal["auto", "fp8", "fp8_e4m3", "fp8_e5m2"] = Field(
        "auto", description="KV-cache element type; fp8 halves the cache of a 16-bit model."
    )
    gpu_memory_utilization: Float | Literal["auto", "minimum"] = Field(
        "auto",
        description="vLLM/SGLang share of the GPU's total memory: a number in (0, 1] pins it; "
        "'minimum' computes the smallest that fits max_model_len x concurrent_sequences; 'auto' "
        "also gives the model what is left on its GPU after everything else (more KV cache).",
    )
    max_num_batched_tokens: Int | None = Field(
        None,
        ge=1,
        le=100_000_000,
        description="vLLM scheduler limit; default: vLLM's own for the GPU size.",
    )
    max_num_seqs: Int | None = Field(
        None,
        ge=1,
        le=1_000_000,
        description="vLLM scheduler limit; default: vLLM's own for the GPU size.",
    )
    enforce_eager: Bool = Field(False, description="Disable CUDA graphs (saves their memory).")
    estimate_gib: Float | None = Field(
        None,
        gt=0,
        le=MAX_GPU_GIB,
        description="Measured need per GPU in GiB; replaces the estimate (required for model "
        "types the estimator does not know, such as image or audio, on a GPU).",
    )

    @field_validator("gpu_memory_utilization")
    @classmethod
    def _fraction(cls, value: float | str) -> float | str:
        if isinstance(value, float) and not 0 < value <= 1:
            raise ValueError(f"must be in (0, 1], got {value}")
        return value


class ArchitectureSpec(_Frozen):
    """Where the memory estimator gets the model's shape. By default: the bundled catalogue, by
    model_name and model_size_in_billions."""

    catalogue: Str | None = Field(
        None, description="Catalogue entry to use, 'name' or 'name:size' (default: model_name)."
    )
    hf_config: Str | None = Field(
        None, description="Path to the model's Hugging Face config.json (relative to this file)."
    )
    params_billions: Float | None = Field(
        None, gt=0, le=1_000_000, description="Parameter count, billions."
    )
    weights_gib: Float | None = Field(
        None,
        gt=0,
        le=MAX_GPU_GIB,
        description="Measured weight memory per GPU in GiB (replaces the estimate).",
    )
    fields: dict[str, Scalar | list[Scalar]] = Field(
        default_factory=dict,
        description="config.json keys given inline (num_hidden_layers, num_key_value_heads, ...); "
        "they override the catalogue or hf_config.",
    )


class CustomModelSpec(_Frozen):
    """A model served from local files. The reconciler registers it with Xinference (persisted)
    before launching it, and registers it again when this table changes."""

    model_uri: Str = Field(
        min_length=1, description="Path of the weights on the workers (a folder; a file for GGUF)."
    )
    spec: dict[str, Any] = Field(
        default_factory=dict,
        description="More fields of Xinference's custom-model JSON (LLM: model_family, "
        "chat_template, stop_token_ids, stop, context_length, model_ability; embedding: "
        "dimensions, max_tokens; rerank: type, max_tokens); they override the defaults.",
    )


class ModelSpec(_Frozen):
    """One model that should run. The table key ([models.<uid>]) is its Xinference model uid."""

    model_name: Str = Field(min_length=1, description="Xinference model name (built-in or custom).")
    model_type: ModelType = Field("LLM", description="Xinference model type.")
    model_engine: Str | None = Field(
        None,
        description="Xinference engine: vLLM, SGLang, Transformers, llama.cpp, MLX, "
        "sentence_transformers, flag. Required for LLMs.",
    )
    model_format: Str | None = Field(
        None, description="pytorch, awq, gptq, fp8, ggufv2, mlx, ... (Xinference's model_format)."
    )
    model_size_in_billions: Float | Str | None = Field(
        None, description="Size variant as Xinference names it (e.g. 32, 1.5 or '1_5')."
    )
    quantization: Str | None = Field(
        None, description="none, Int4, Int8, fp8, Q4_K_M, ... (Xinference's quantization)."
    )
    replicas: Int = Field(1, ge=1, le=64, description="Replicas of the model.")
    priority: Int = Field(
        0, description="Higher wins when not everything fits; ties go to the model uid's order."
    )
    protected: Bool = Field(False, description="Never terminate or replace this model.")
    unmanaged: Bool = Field(
        False, description="Only report drift for this model; never launch or terminate it."
    )
    download_hub: Literal["huggingface", "modelscope", "openmind_hub", "csghub"] | None = Field(
        None, description="Where Xinference downloads the weights from."
    )
    model_path: Str | None = Field(None, description="Local weights path on the worker.")
    placement: PlacementSpec = Field(default_factory=PlacementSpec)
    memory: MemorySpec = Field(default_factory=MemorySpec)
    architecture: ArchitectureSpec = Field(default_factory=ArchitectureSpec)
    engine_args: dict[str, EngineArg] = Field(
        default_factory=dict, description="Passed through to the engine at launch, unchanged."
    )
    custom: CustomModelSpec | None = Field(
        None, description="Register this model from local files before launching it."
    )

    @field_validator("model_engine")
    @classmethod
    def _canonical_engine(cls, value: str | None) -> str | None:
        if value is None:
            return None
        canonical = ENGINE_SPELLING.get(value.lower().replace("-", "_"))
        if canonical is None:
            known = ", ".join(sorted(ENGINE_SPELLING.values()))
            raise ValueError(f"unknown engine {value!r}; expected one of: {known}")
        return canonical

    @property
    def on_gpu(self) -> bool:
        return self.placement.device == "gpu"

    def _launch_doc(self) -> dict[str, Any]:
        # Priority and the opt-out flags do not count: changing them must not replace a model.
        return self.model_dump(mode="json", exclude={"priority", "protected", "unmanaged"})

    def launch_spec(self) -> dict[str, Any]:
        """What would be launched, flattened to dotted keys (``memory.max_model_len``)."""
        return flatten(self._launch_doc())

    def memory_key(self) -> str:
        """Identity of what shapes this model's memory apart from its KV cache: what the engine
        loads and how it profiles (model, engine, format, size, quantization, architecture, GPUs
        per replica, KV dtype, batch limits). Context length, concurrent sequences, utilization and
        placement are left out: what the engine measured for one of them holds for the others."""
        doc = self._launch_doc()
        memory = {
            k: v
            for k, v in doc["memory"].items()
            if k in ("kv_cache_dtype", "max_num_batched_tokens", "max_num_seqs", "enforce_eager")
        }
        keep = {
            "model_name": doc["model_name"],
            "model_type": doc["model_type"],
            "model_engine": doc["model_engine"],
            "model_format": doc["model_format"],
            "model_size_in_billions": doc["model_size_in_billions"],
            "quantization": doc["quantization"],
            "architecture": doc["architecture"],
            "gpus": doc["placement"]["gpus"],
            "memory": memory,
            "engine_args": doc["engine_args"],
        }
        text = json.dumps(keep, sort_keys=True, separators=(",", ":"))
        return "m-" + hashlib.sha256(text.encode()).hexdigest()[:16]

    def spec_hash(self) -> str:
        """Identity of what would be launched. Unchanged across versions of this tool (state files
        keep it): a new hash would read as "changed" and replace every running model."""
        text = json.dumps(self._launch_doc(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()[:16]


class CalibrationConfig(_Frozen):
    """Memory figures measured on this cluster, kept in git beside the config."""

    file: Str | None = Field(
        None,
        description="A calibration ledger (TOML) written by `xinference-reconciler calibration "
        "export`, relative to this file: what the engine measured that the estimate missed, per "
        "model. Plans use these figures over the estimates and say so.",
    )


class Config(_Frozen):
    """The whole file: the cluster, the policy and the models that should run."""

    schema_version: Literal[1] = Field(1, description="Version of this file's format.")
    cluster: ClusterConfig = Field(default_factory=ClusterConfig)
    policy: PolicyConfig = Field(default_factory=PolicyConfig)
    calibration: CalibrationConfig = Field(default_factory=CalibrationConfig)
    models: dict[str, ModelSpec] = Field(
        default_factory=dict, description="Models that should run, keyed by Xinference model uid."
    )

    @field_validator("models")
    @classmethod
    def _uids(cls, models: dict[str, ModelSpec]) -> dict[str, ModelSpec]:
        for uid in models:
            problem = uid_problem(uid)
            if problem:
                raise FieldError(uid, problem)
        return models


def cross_field_problems(config: Config) -> list[tuple[str, str]]:
    """Rules that span several fields, as (key path, message) pairs; empty when the config is fine."""
    problems: list[tuple[str, str]] = []
    if config.policy.mode == "enforce" and config.cluster.auth.mode == "api_key":
        problems.append(
            (
                "policy.mode",
                "'enforce' launches and terminates, and Xinference lets API keys only read "
                "and infer (it answers 403); use [cluster.auth] mode = 'password', or mode = 'observe'",
            )
        )
    for uid, spec in sorted(config.models.items()):
        problems.extend((f"models.{uid}.{path}", msg) for path, msg in model_problems(spec))
    return problems


def model_problems(spec: ModelSpec) -> list[tuple[str, str]]:
    """The rules that span several fields of one model, as (key path below the model, message)."""
    out: list[tuple[str, str]] = []
    engine = spec.model_engine
    allowed = ENGINES_BY_TYPE.get(spec.model_type)
    if spec.model_type == "LLM" and engine is None:
        out.append(("model_engine", "required for LLMs (Xinference refuses a launch without it)"))
    if engine is not None and allowed is not None and engine not in allowed:
        out.append(
            (
                "model_engine",
                f"engine {engine!r} does not serve {spec.model_type} models; "
                f"expected one of: {', '.join(sorted(allowed))}",
            )
        )
    fmt = (spec.model_format or "").lower()
    if engine == Engine.LLAMA_CPP and fmt and not fmt.startswith("gguf"):
        out.append(("model_format", f"llama.cpp loads GGUF files, not {spec.model_format!r}"))
    if engine in {Engine.VLLM, Engine.SGLANG, Engine.TRANSFORMERS} and fmt.startswith("gguf"):
        out.append(("model_format", f"use engine llama.cpp for {spec.model_format!r} weights"))
    if spec.quantization and spec.quantization.lower() not in {
        q.lower() for q in known_quantizations()
    } | {"none"}:
        out.append(("quantization", f"unknown quantization {spec.quantization!r}"))
    out.extend(_custom_problems(spec))
    out.extend(_placement_problems(spec))
    out.extend(_memory_problems(spec))
    for key in spec.engine_args:
        if key in _RESERVED_ENGINE_ARGS:
            out.append(
                (
                    f"engine_args.{key}",
                    f"set it with {_RESERVED_ENGINE_ARGS[key]} instead, so "
                    "the memory planner knows it",
                )
            )
        elif key in BODY_KEYS:
            out.append(
                (
                    f"engine_args.{key}",
                    f"the launch request takes {key} from {BODY_KEYS[key]}; set it there "
                    "(here it would override it)",
                )
            )
    return out


# Keys Xinference 4.1.0 refuses a custom registration without (docs/xinference-observed.md,
# "Registrations"); everything else has a default in core/custom.py.
_CUSTOM_REQUIRED = {"embedding": ("dimensions", "max_tokens"), "LLM": ("model_family",)}


def missing_custom_keys(
    model_type: str, spec_keys: Iterable[str], *, has_size: bool
) -> list[tuple[str, str]]:
    """Keys a custom model of ``model_type`` must have and does not, as (key path, message). Also
    asked with the raw table of a model that breaks the schema elsewhere, so that every missing key
    is reported in one run."""
    present = set(spec_keys)
    out = [
        (f"custom.spec.{key}", f"required for a custom {model_type} model")
        for key in _CUSTOM_REQUIRED.get(model_type, ())
        if key not in present
    ]
    if model_type == "LLM" and not has_size:
        out.append(
            ("model_size_in_billions", "required for a custom LLM (its registration lists it)")
        )
    return out


def _custom_problems(spec: ModelSpec) -> list[tuple[str, str]]:
    if spec.custom is None:
        return []
    out = []
    if spec.model_type not in ("LLM", "embedding", "rerank"):
        out.append(("custom", f"custom {spec.model_type} models are not supported yet"))
    out.extend(
        missing_custom_keys(
            spec.model_type, spec.custom.spec, has_size=spec.model_size_in_billions is not None
        )
    )
    if "model_name" in spec.custom.spec or "model_specs" in spec.custom.spec:
        out.append(
            ("custom.spec", "model_name and model_specs are filled in from the model's own keys")
        )
    return out


def _placement_problems(spec: ModelSpec) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    place = spec.placement
    if place.device == "cpu":
        if spec.model_engine in FRACTION_ENGINES:
            out.append(("placement.device", f"engine {spec.model_engine} needs a GPU"))
        if place.gpu_indexes is not None:
            out.append(("placement.gpu_indexes", "a CPU model takes no GPU indexes"))
        if place.gpus != 1:
            out.append(("placement.gpus", "a CPU model takes no GPUs"))
        return out
    if place.gpu_indexes is not None:
        want = place.gpus * spec.replicas
        if len(place.gpu_indexes) != want:
            out.append(
                (
                    "placement.gpu_indexes",
                    f"expected {want} indexes (gpus {place.gpus} x replicas "
                    f"{spec.replicas}), got {len(place.gpu_indexes)}",
                )
            )
        if len(set(place.gpu_indexes)) != len(place.gpu_indexes):
            out.append(("placement.gpu_indexes", "an index appears twice"))
        if any(i < 0 for i in place.gpu_indexes):
            out.append(("placement.gpu_indexes", "indexes are >= 0"))
        if place.worker is None:
            out.append(("placement.worker", "pinning gpu_indexes needs the worker they belong to"))
    return out


def _memory_problems(spec: ModelSpec) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    mem = spec.memory
    fraction_engine = spec.model_engine in FRACTION_ENGINES
    if not fraction_engine and isinstance(mem.gpu_memory_utilization, float):
        out.append(
            (
                "memory.gpu_memory_utilization",
                f"only vLLM and SGLang take a utilization; engine "
                f"{spec.model_engine or 'default'} allocates as it goes",
            )
        )
    if spec.on_gpu and spec.model_type not in ENGINES_BY_TYPE and mem.estimate_gib is None:
        out.append(
            (
                "memory.estimate_gib",
                f"required for {spec.model_type} models on a GPU: the "
                "estimator only knows LLM, embedding and rerank models",
            )
        )
    if (
        fraction_engine
        and spec.on_gpu
        and mem.gpu_memory_utilization == "minimum"
        and (mem.max_model_len is None)
    ):
        out.append(("memory.max_model_len", "'minimum' utilization needs a max_model_len to fit"))
    return out
