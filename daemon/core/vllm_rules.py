"""What vLLM counts inside ``gpu_memory_utilization x total``, by vLLM version: a pure table.

Each row is one range of releases read from vLLM's own source (``docs/vllm-versions.md``: the budget
formulas R1-R9 in section 2, the start-up gate and ``kv_cache_memory_bytes`` in section 3, the
profiling batch under Xinference in section 5, the rules table in section 11). The estimator
(``footprint.py``) asks a row:

- whether other processes' memory counts inside the budget (``scope``);
- where the CUDA context, the communication buffers (NCCL, custom all-reduce, symmetric memory) and
  the CUDA graphs sit: inside the budget (subtracted before the KV cache), outside it (memory the
  process holds on top of ``utilization x total``), or either (the version is not known well
  enough: count them on both sides);
- the profiling batch vLLM runs under Xinference, which sizes the activation peak;
- whether the start-up gate ``free >= utilization x total`` applies and ``kv_cache_memory_bytes``
  is accepted;
- whether sliding-window layers keep only their window (vLLM's hybrid KV-cache manager).

A version the table does not cover, or no version at all, gets :data:`UNKNOWN`: on every question
the answer that leaves the fewest KV tokens, and on the memory the process holds the answer that
counts the most (``docs/vllm-versions.md`` section 11, last row).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace

from daemon.core.compat import StrEnum
from daemon.core.units import GiB, MiB

VERSIONS_DOC = "docs/vllm-versions.md"


class VersionError(ValueError):
    """A string that is not a vLLM release number."""


# PEP 440 as vLLM spells its releases: 0.11.0, 0.6.4.post1, 0.11.0rc2.dev98+g393de22d2, 0.8.3.dev172.
_VERSION = re.compile(
    r"^v?(\d+)\.(\d+)(?:\.(\d+))?(?:\.(\d+))?"
    r"(?:(a|b|rc)\d+)?(?:\.?post\d+)?(?:\.?(dev)\d+)?(?:\+[A-Za-z0-9.]+)?$"
)


@dataclass(frozen=True, order=True, kw_only=True)
class VllmVersion:
    """A vLLM release. A pre-release or development build sorts just below its release (PEP 440),
    so ``0.10.2rc1`` takes the rules of 0.10.1: a feature that arrives in 0.10.2 is not assumed."""

    major: int
    minor: int
    patch: int
    final: bool  # False for rc/dev builds (before the release), True for the release and .postN
    text: str = ""

    @classmethod
    def parse(cls, text: str) -> VllmVersion:
        match = _VERSION.fullmatch(text.strip())
        if match is None:
            raise VersionError("expected a vLLM release such as '0.11.0' or '0.10.2rc1'")
        major, minor, patch = (int(match.group(i) or 0) for i in (1, 2, 3))
        pre = match.group(5) is not None or match.group(6) is not None
        return cls(major=major, minor=minor, patch=patch, final=not pre, text=text.strip())

    @property
    def key(self) -> tuple[int, int, int, int]:
        return (self.major, self.minor, self.patch, 1 if self.final else 0)

    def __str__(self) -> str:
        return self.text or f"{self.major}.{self.minor}.{self.patch}"


def version_problem(text: str) -> str | None:
    """Why ``text`` is not a vLLM version (for config validation), or None."""
    try:
        VllmVersion.parse(text)
    except VersionError as exc:
        return str(exc)
    return None


class Where(StrEnum):
    """Where vLLM accounts for a piece of memory relative to ``utilization x total``."""

    INSIDE = "inside"  # subtracted from the budget before the KV cache
    OUTSIDE = "outside"  # held on top of the budget
    EITHER = "either"  # not known for this version: counted on both sides

    @property
    def inside(self) -> bool:
        return self is not Where.OUTSIDE

    @property
    def outside(self) -> bool:
        return self is not Where.INSIDE


class Scope(StrEnum):
    """Whether other processes' memory on the GPU counts inside the budget."""

    PER_INSTANCE = "per_instance"  # a baseline taken at start-up excludes it
    GLOBAL = "global"  # the whole device's usage is charged to this instance
    EITHER = "either"


class Profile(StrEnum):
    """How vLLM sizes its profiling batch when Xinference starts it (docs/vllm-versions.md 5.1)."""

    V0_CHUNK_512 = "v0 (chunked prefill: 512)"  # B = max(L, 2048); 512 when chunked prefill is on
    V0_CHUNK_2048 = (
        "v0 (chunked prefill: 2048)"  # B = max(L, 2048); 2048 when chunked prefill is on
    )
    V1_FLOORS = "v1 (multimodal >= 5120, pooling >= 32768)"  # B = 2048 with floors
    V1 = "v1"  # B = 2048; max(L, 2048) without chunked prefill (pooling)
    V0_OR_V1 = "v0 or v1"  # V1 with a V0 fallback, or unknown: the larger of the two


class Usage(StrEnum):
    """Who starts the engine: its usage context decides vLLM's default batch limits."""

    XINFERENCE = "xinference"  # AsyncLLMEngine.from_engine_args: ENGINE_CONTEXT, max_num_seqs=256
    SERVE = "serve"  # vllm serve (OPENAI_API_SERVER)
    LLM = "llm"  # vllm.LLM(...) (LLM_CLASS)


@dataclass(frozen=True, kw_only=True)
class Calibration:
    """Fitted figures of one engine generation (docs/estimator.md, benchmarks/calibrate_estimator.py).

    ``forward_factor`` multiplies the bytes one batched token holds in the profiling forward pass
    (hidden state, residual, MLP or fused-MoE buffers); ``sampler_copies`` is how many fp32
    ``sequences x vocab`` tensors the dummy sampler holds at its peak; ``non_torch_*`` bound the
    memory outside PyTorch's allocator that vLLM counts inside the budget, on one GPU and per GPU
    with tensor parallelism.
    """

    name: str
    forward_factor: float
    sampler_copies: float
    non_torch_single_bytes: int
    non_torch_parallel_bytes: int


# Fitted on the fit part of tests/data/vllm_logs.json by benchmarks/calibrate_estimator.py, which
# prints its fit beside these (docs/estimator.md shows both): non-torch is the largest a fit log
# printed (carried from the other generations where none of a generation's fit logs shows it); the
# forward factor and sampler copies leave no fit log over-predicted with the least total error.
V0_CALIBRATION = Calibration(
    name="v0",
    forward_factor=1.0,
    sampler_copies=7.8,
    non_torch_single_bytes=368 * MiB,
    non_torch_parallel_bytes=576 * MiB,
)
V1_EARLY_CALIBRATION = Calibration(
    name="v1 < 0.11",
    forward_factor=1.26,
    sampler_copies=9.6,
    non_torch_single_bytes=80 * MiB,
    non_torch_parallel_bytes=224 * MiB,
)
V1_CALIBRATION = Calibration(
    name="v1 >= 0.11",
    forward_factor=1.0,
    sampler_copies=9.6,
    non_torch_single_bytes=272 * MiB,
    non_torch_parallel_bytes=576 * MiB,
)


def _widest(*cals: Calibration) -> Calibration:
    return Calibration(
        name="+".join(c.name for c in cals),
        forward_factor=max(c.forward_factor for c in cals),
        sampler_copies=max(c.sampler_copies for c in cals),
        non_torch_single_bytes=max(c.non_torch_single_bytes for c in cals),
        non_torch_parallel_bytes=max(c.non_torch_parallel_bytes for c in cals),
    )


V0_OR_V1_EARLY = _widest(V0_CALIBRATION, V1_EARLY_CALIBRATION)
ANY_CALIBRATION = _widest(V0_CALIBRATION, V1_EARLY_CALIBRATION, V1_CALIBRATION)

# Physical sizes that vLLM's source does not fix (NCCL sizes its own buffers; graphs depend on the
# model and the capture sizes), bounded from the public logs in tests/data/vllm_logs.json:
# NCCL + custom all-reduce + symmetric memory per GPU with TP > 1 (0.8-1.4 GiB seen; V0 at TP 8 on
# A100s 2.1 GiB, counted with the allocator's own segments in non_torch above).
COMMUNICATION_BYTES = 2 * GiB
# CUDA graphs (Xinference: max_num_seqs 256, so captures up to 512 tokens, FULL and PIECEWISE):
# per decoder layer, at least the floor. Largest seen: 2.44 GiB for 36 layers (68 MiB/layer).
CUDA_GRAPH_BYTES_PER_LAYER = 72 * MiB
CUDA_GRAPH_FLOOR_BYTES = 512 * MiB
# From 0.20.0 vLLM subtracts its own graph estimate inside the budget; the graphs it then captures
# may exceed that estimate (+35 % seen): this much is kept outside the budget for the excess.
CUDA_GRAPH_EXCESS_BYTES = 512 * MiB
# vLLM's VLLM_FUSED_MOE_CHUNK_SIZE (docs/vllm-versions.md 5.3): the fused-MoE buffers hold at most
# this many tokens; 32768 in 0.6.0-0.11.x, 16384 in 0.12.0-0.17.x, gone from 0.18.0.
MOE_CHUNK_0_12 = 16384


@dataclass(frozen=True, kw_only=True)
class VllmRules:
    """How one range of vLLM releases accounts for memory. Versions are ``[low, high)``."""

    key: str  # the doc's name for the rule (R1 ... R9, unknown)
    versions: str  # the range as people write it
    low: tuple[int, int, int] | None
    high: tuple[int, int, int] | None
    engine: str
    scope: Scope
    cuda_context: Where
    communication: Where
    cuda_graphs: Where
    startup_gate: bool
    kv_cache_memory_bytes: bool
    profile: Profile
    sliding_window_capped: bool  # hybrid KV manager: sliding layers keep only their window
    calibration: Calibration
    moe_chunk_tokens: int | None  # None: the fused-MoE buffers take the whole batch
    source: str

    def covers(self, version: VllmVersion) -> bool:
        lo = (*self.low, 1) if self.low else None
        hi = (*self.high, 1) if self.high else None
        return (lo is None or version.key >= lo) and (hi is None or version.key < hi)

    def with_exact_kv(self) -> VllmRules:
        """The rules when ``kv_cache_memory_bytes`` is passed: vLLM then skips its memory profile
        and graph estimate, so CUDA graphs are memory it holds on top (docs/vllm-versions.md 3.2)."""
        return replace(self, cuda_graphs=Where.OUTSIDE, key=f"{self.key}+kv_cache_memory_bytes")


_IN, _OUT, _EITHER = Where.INSIDE, Where.OUTSIDE, Where.EITHER

RULES: tuple[VllmRules, ...] = (
    VllmRules(
        key="R1",
        versions="0.5.4-0.6.3",
        low=(0, 5, 4),
        high=(0, 6, 4),
        engine="V0",
        scope=Scope.PER_INSTANCE,
        cuda_context=_OUT,
        communication=_IN,
        cuda_graphs=_OUT,
        startup_gate=False,
        kv_cache_memory_bytes=False,
        profile=Profile.V0_CHUNK_512,
        sliding_window_capped=False,
        calibration=V0_CALIBRATION,
        moe_chunk_tokens=65536,
        source=f"{VERSIONS_DOC} section 2 R1; 5.1 (V0 0.5.4-0.6.4)",
    ),
    VllmRules(
        key="R2",
        versions="0.6.4, 0.6.4.post1",
        low=(0, 6, 4),
        high=(0, 6, 5),
        engine="V0",
        scope=Scope.GLOBAL,
        cuda_context=_IN,
        communication=_IN,
        cuda_graphs=_OUT,
        startup_gate=False,
        kv_cache_memory_bytes=False,
        profile=Profile.V0_CHUNK_512,
        sliding_window_capped=False,
        calibration=V0_CALIBRATION,
        moe_chunk_tokens=32768,
        source=f"{VERSIONS_DOC} section 2 R2",
    ),
    VllmRules(
        key="R3",
        versions="0.6.5-0.7.3",
        low=(0, 6, 5),
        high=(0, 8, 0),
        engine="V0 (Xinference finds no V1 oracle before 0.8.0)",
        scope=Scope.PER_INSTANCE,
        cuda_context=_OUT,
        communication=_IN,
        cuda_graphs=_OUT,
        startup_gate=False,
        kv_cache_memory_bytes=False,
        profile=Profile.V0_CHUNK_2048,
        sliding_window_capped=False,
        calibration=V0_CALIBRATION,
        moe_chunk_tokens=32768,
        source=f"{VERSIONS_DOC} section 2 R3; section 1",
    ),
    VllmRules(
        key="R4/R3",
        versions="0.8.0-0.9.0",
        low=(0, 8, 0),
        high=(0, 9, 1),
        engine="V1 (global, R4), V0 (R3) when V1 does not support the model",
        scope=Scope.EITHER,
        cuda_context=_EITHER,
        communication=_IN,
        cuda_graphs=_OUT,
        startup_gate=False,
        kv_cache_memory_bytes=False,
        profile=Profile.V0_OR_V1,
        sliding_window_capped=False,
        calibration=V0_OR_V1_EARLY,
        moe_chunk_tokens=32768,
        source=f"{VERSIONS_DOC} section 2 R4 and R3; 5.5 (no hybrid manager before 0.9.1)",
    ),
    VllmRules(
        key="R5/R3",
        versions="0.9.1-0.10.1.1",
        low=(0, 9, 1),
        high=(0, 10, 2),
        engine="V1 (R5), V0 (R3) when V1 does not support the model",
        scope=Scope.PER_INSTANCE,
        cuda_context=_OUT,
        communication=_IN,
        cuda_graphs=_OUT,
        startup_gate=True,
        kv_cache_memory_bytes=False,
        profile=Profile.V0_OR_V1,
        sliding_window_capped=False,  # the V0 fallback keeps every token in every layer
        calibration=V0_OR_V1_EARLY,
        moe_chunk_tokens=32768,
        source=f"{VERSIONS_DOC} section 2 R5 and R3; 3.1",
    ),
    VllmRules(
        key="R5/R3+kvb",
        versions="0.10.2",
        low=(0, 10, 2),
        high=(0, 11, 0),
        engine="V1 (R5), V0 (R3) when V1 does not support the model",
        scope=Scope.PER_INSTANCE,
        cuda_context=_OUT,
        communication=_IN,
        cuda_graphs=_OUT,
        startup_gate=True,
        kv_cache_memory_bytes=True,
        profile=Profile.V0_OR_V1,
        sliding_window_capped=False,
        calibration=V0_OR_V1_EARLY,
        moe_chunk_tokens=32768,
        source=f"{VERSIONS_DOC} section 2 R5; 3.2 (kv_cache_memory_bytes from 0.10.2)",
    ),
    VllmRules(
        key="R6",
        versions="0.11.0-0.11.x",
        low=(0, 11, 0),
        high=(0, 12, 0),
        engine="V1",
        scope=Scope.PER_INSTANCE,
        cuda_context=_OUT,
        communication=_OUT,
        cuda_graphs=_OUT,
        startup_gate=True,
        kv_cache_memory_bytes=True,
        profile=Profile.V1_FLOORS,
        sliding_window_capped=True,
        calibration=V1_CALIBRATION,
        moe_chunk_tokens=32768,
        source=f"{VERSIONS_DOC} section 2 R6; 5.1; 5.5",
    ),
    VllmRules(
        key="R6",
        versions="0.12.0-0.17.x",
        low=(0, 12, 0),
        high=(0, 18, 0),
        engine="V1",
        scope=Scope.PER_INSTANCE,
        cuda_context=_OUT,
        communication=_OUT,
        cuda_graphs=_OUT,
        startup_gate=True,
        kv_cache_memory_bytes=True,
        profile=Profile.V1,
        sliding_window_capped=True,
        calibration=V1_CALIBRATION,
        moe_chunk_tokens=MOE_CHUNK_0_12,
        source=f"{VERSIONS_DOC} section 2 R6; 5.1 (no batch floors from 0.12.0)",
    ),
    VllmRules(
        key="R7",
        versions="0.18.0-0.19.x",
        low=(0, 18, 0),
        high=(0, 20, 0),
        engine="V1",
        scope=Scope.PER_INSTANCE,
        cuda_context=_OUT,
        communication=_OUT,
        cuda_graphs=_OUT,
        startup_gate=True,
        kv_cache_memory_bytes=True,
        profile=Profile.V1,
        sliding_window_capped=True,
        calibration=V1_CALIBRATION,
        moe_chunk_tokens=None,
        source=f"{VERSIONS_DOC} section 2 R7 (graph estimate off by default)",
    ),
    VllmRules(
        key="R8",
        versions="0.20.0-0.26.x",
        low=(0, 20, 0),
        high=(0, 27, 0),
        engine="V1",
        scope=Scope.PER_INSTANCE,
        cuda_context=_OUT,
        communication=_OUT,
        cuda_graphs=_IN,
        startup_gate=True,
        kv_cache_memory_bytes=True,
        profile=Profile.V1,
        sliding_window_capped=True,
        calibration=V1_CALIBRATION,
        moe_chunk_tokens=None,
        source=f"{VERSIONS_DOC} section 2 R8 (graph estimate on by default from 0.20.0)",
    ),
    VllmRules(
        key="R9",
        versions="0.27.0-0.33.x",
        low=(0, 27, 0),
        high=(0, 34, 0),
        engine="V1",
        scope=Scope.PER_INSTANCE,
        cuda_context=_OUT,
        communication=_OUT,
        cuda_graphs=_IN,
        startup_gate=True,
        kv_cache_memory_bytes=True,
        profile=Profile.V1,
        sliding_window_capped=True,
        calibration=V1_CALIBRATION,
        moe_chunk_tokens=None,
        source=f"{VERSIONS_DOC} section 2 R9",
    ),
)

UNKNOWN = VllmRules(
    key="unknown",
    versions="unknown, or outside 0.5.4-0.33.x",
    low=None,
    high=None,
    engine="unknown",
    scope=Scope.EITHER,
    cuda_context=_EITHER,
    communication=_EITHER,
    cuda_graphs=_EITHER,
    startup_gate=True,
    kv_cache_memory_bytes=False,
    profile=Profile.V0_OR_V1,
    sliding_window_capped=False,
    calibration=ANY_CALIBRATION,
    moe_chunk_tokens=None,
    source=f"{VERSIONS_DOC} section 11 (the most conservative choice in every column)",
)


def rules_for(version: str | VllmVersion | None) -> VllmRules:
    """The row of :data:`RULES` that covers ``version``; :data:`UNKNOWN` for None, an unparsable
    string or a release outside the table."""
    if version is None:
        return UNKNOWN
    if isinstance(version, str):
        try:
            version = VllmVersion.parse(version)
        except VersionError:
            return UNKNOWN
    for rules in RULES:
        if rules.covers(version):
            return rules
    return UNKNOWN


def profile_batch(
    rules: VllmRules,
    *,
    usage: Usage,
    max_model_len: int,
    gpu_total_bytes: int,
    gpu_name: str = "",
    multimodal: bool = False,
    pooling: bool = False,
    sliding_window: bool = False,
    max_num_batched_tokens: int | None = None,
    max_num_seqs: int | None = None,
) -> tuple[int, int]:
    """``(max_num_batched_tokens, max_num_seqs)`` of vLLM's profiling run (docs/vllm-versions.md
    5.1): the values given, else this version's defaults for ``usage`` on this GPU."""
    v0 = _v0_batch(rules, max_model_len, multimodal=multimodal, sliding=sliding_window)
    v1 = _v1_batch(
        rules,
        usage,
        max_model_len,
        big=gpu_total_bytes >= 70 * GiB and "a100" not in gpu_name.lower(),
        multimodal=multimodal,
        pooling=pooling,
    )
    if rules.profile in (Profile.V0_CHUNK_512, Profile.V0_CHUNK_2048):
        tokens, seqs = v0
    elif rules.profile is Profile.V0_OR_V1:
        tokens, seqs = max(v0[0], v1[0]), max(v0[1], v1[1])
    else:
        tokens, seqs = v1
    if max_num_batched_tokens is not None:
        tokens = max_num_batched_tokens
    if max_num_seqs is not None:
        seqs = max_num_seqs
    return tokens, min(seqs, tokens)


def _v0_batch(
    rules: VllmRules, max_model_len: int, *, multimodal: bool, sliding: bool
) -> tuple[int, int]:
    """V0 has no per-GPU tables: every usage context gets the same defaults."""
    chunk = 512 if rules.profile is Profile.V0_CHUNK_512 else 2048
    chunked = max_model_len > 32768 and not sliding and not multimodal
    return (chunk if chunked else max(max_model_len, 2048)), 256


def _v1_batch(
    rules: VllmRules,
    usage: Usage,
    max_model_len: int,
    *,
    big: bool,
    multimodal: bool,
    pooling: bool,
) -> tuple[int, int]:
    """V1's per-GPU tables (``big``: >= 70 GiB and not an A100) and floors."""
    tokens, seqs = 2048, 256
    if usage is Usage.SERVE and big:
        tokens, seqs = 8192, 1024
    elif usage is Usage.LLM:
        tokens, seqs = (16384, 1024) if big else (8192, 256)
    if rules.profile in (Profile.V1_FLOORS, Profile.V0_OR_V1):
        if multimodal:
            tokens = max(tokens, 5120)
        if pooling:
            tokens = max(tokens, 32768)
    elif pooling:
        tokens = max(tokens, max_model_len)  # pooling models run without chunked prefill
    return min(tokens, seqs * max_model_len), seqs


def cuda_graph_bytes(num_layers: int, *, enforce_eager: bool) -> int:
    """Upper bound of the CUDA-graph pool a model captures (0 with ``enforce_eager``)."""
    if enforce_eager:
        return 0
    return max(CUDA_GRAPH_FLOOR_BYTES, num_layers * CUDA_GRAPH_BYTES_PER_LAYER)


def table_markdown() -> str:
    """The rules as a Markdown table (docs/estimator.md shows it; a test keeps them equal)."""
    head = (
        "| vLLM | rule | engine | other processes | CUDA context | NCCL / all-reduce | "
        "CUDA graphs | start-up gate | `kv_cache_memory_bytes` | profiling batch (Xinference) | "
        "sliding window | calibration |\n|---|---|---|---|---|---|---|---|---|---|---|---|"
    )
    rows = [head]
    for r in (*RULES, UNKNOWN):
        rows.append(
            f"| {r.versions} | {r.key} | {r.engine} | {r.scope} | {r.cuda_context} | "
            f"{r.communication} | {r.cuda_graphs} | {'yes' if r.startup_gate else 'no'} | "
            f"{'yes' if r.kv_cache_memory_bytes else 'no'} | {r.profile} | "
            f"{'window only' if r.sliding_window_capped else 'every token'} | "
            f"{r.calibration.name} |"
        )
    return "\n".join(rows)
