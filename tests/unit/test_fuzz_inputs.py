"""Fuzzing the inputs a user or a cluster hands the tool (issue #5, part 2).

Random bytes, random text, mutated copies of real configs and structured random TOML documents built
from the config's real keys with wrong or odd values go to ``load_config``, to the CLI (``validate``,
``plan --observed``) and to the in-process daemon; random JSON documents go to the snapshot reader;
generated configs and clusters go to the planner. The properties:

- ``load_config`` raises nothing but ConfigError subclasses;
- the CLI never raises, never prints a traceback and exits 0 or 1 (2 only for --detailed-exitcode);
- a daemon pass never raises, and an invalid file never leads to a launch or a termination;
- ``observed_from_document`` raises nothing but SnapshotError; a valid snapshot plans cleanly;
- the planner never raises, never over-commits a GPU, is idempotent and deterministic.

Each property is a plain ``check_*`` function so ``benchmarks/fuzz_long.py`` can run the same checks
with a large example budget. The budgets here keep every test within a few seconds on 2 cores.
Pinned regressions for what the fuzzers found are at the end of the file.
"""

from __future__ import annotations

import io
import json
import math
import random
import sys
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import pytest
import tomli_w
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from daemon.adapters.config_file import load_config
from daemon.adapters.snapshot_file import observed_from_document
from daemon.adapters.systemd import Notifier
from daemon.app import Daemon
from daemon.cli import main
from daemon.cli.render import plan_json
from daemon.core.desired import (
    ArchitectureSpec,
    AuthConfig,
    ClusterConfig,
    Config,
    CustomModelSpec,
    MemorySpec,
    ModelSpec,
    PlacementSpec,
    PolicyConfig,
)
from daemon.core.observed import ObservedState
from daemon.core.planning import Launch, Plan
from daemon.core.units import GiB
from daemon.errors import ConfigError, SnapshotError
from daemon.events import configure
from daemon.settings import Settings
from daemon.testing.builders import gpu_worker
from daemon.testing.fake_cluster import FakeCluster
from daemon.testing.simulator import apply_plan, run_to_completion
from tests.unit.builders import DAEMON_CONFIG, config, demands, plan_for
from tests.unit.test_plan_properties import clusters, configs, policies

if sys.version_info >= (3, 11):
    import tomllib
else:  # Python 3.10: the same parser, published as tomli
    import tomli as tomllib

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "config.example.toml"
EXAMPLE_TEXT = EXAMPLE.read_text()
SNAPSHOT = REPO / "examples" / "observed-rag-host.json"
SNAPSHOT_DOC = json.loads(SNAPSHOT.read_text())

W1 = "127.0.0.1:30001"
FUZZ = settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


# --- strategies: values ---------------------------------------------------------------------------

ODD_FLOATS = st.one_of(
    st.sampled_from(
        [math.nan, math.inf, -math.inf, 1e308, -1e308, 5e-324, -0.0, 0.0, 1e-9, 0.999999, 1.0000001]
    ),
    st.floats(allow_nan=True, allow_infinity=True),
)
ODD_INTS = st.one_of(
    st.sampled_from([0, -1, 1, 2, 15, 16, 65, 2**31, 2**53 + 1, 2**63 - 1, -(2**63)]),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
)
ODD_TEXT = st.one_of(
    st.sampled_from(
        [
            "",
            " ",
            "auto",
            "minimum",
            "vLLM",
            "VLLM",
            "llama.cpp",
            "sentence_transformers",
            "gpu",
            "cpu",
            "none",
            "password",
            "api_key",
            "enforce",
            "observe",
            "all",
            "prune",
            "Int4",
            "ggufv2",
            "x-rep1",
            "a/b",
            "\u202eevil",
            "名前",
            "\x00",
            "\n",
            "../../etc/passwd",
            "http://",
            "http://u:p@h",
            "https://127.0.0.1:9997/",
            "x" * 101,
            "y" * 5000,
        ]
    ),
    st.text(max_size=40),
)
ODD_SCALARS = st.one_of(
    ODD_INTS,
    ODD_FLOATS,
    ODD_TEXT,
    st.booleans(),
    st.datetimes(),
    st.dates(),
    st.times(),
)


def _odd_values(depth: int = 2) -> st.SearchStrategy[Any]:
    return st.recursive(
        ODD_SCALARS,
        lambda inner: st.one_of(
            st.lists(inner, max_size=4),
            st.dictionaries(st.text(max_size=12), inner, max_size=4),
        ),
        max_leaves=8 if depth else 1,
    )


ODD_VALUES = _odd_values()

# Keys the schema knows, table by table (taken from the models, so new keys are fuzzed too).
ARCH_FIELD_KEYS = [
    "model_type",
    "num_hidden_layers",
    "hidden_size",
    "num_attention_heads",
    "num_key_value_heads",
    "intermediate_size",
    "vocab_size",
    "max_position_embeddings",
    "head_dim",
    "torch_dtype",
    "tie_word_embeddings",
    "sliding_window",
    "use_sliding_window",
    "sliding_window_pattern",
    "layer_types",
    "num_local_experts",
    "num_experts",
    "n_routed_experts",
    "num_experts_per_tok",
    "moe_topk",
    "moe_intermediate_size",
    "kv_lora_rank",
    "qk_rope_head_dim",
    "text_config",
]
TABLE_KEYS: dict[str, list[str]] = {
    "": sorted(Config.model_fields),
    "cluster": sorted(ClusterConfig.model_fields),
    "auth": sorted(AuthConfig.model_fields),
    "policy": sorted(PolicyConfig.model_fields),
    "model": sorted(ModelSpec.model_fields),
    "placement": sorted(PlacementSpec.model_fields),
    "memory": sorted(MemorySpec.model_fields),
    "architecture": sorted(ArchitectureSpec.model_fields),
    "custom": sorted(CustomModelSpec.model_fields),
    "fields": ARCH_FIELD_KEYS,
}
ALL_KEYS = sorted({k for keys in TABLE_KEYS.values() for k in keys})
SUBTABLES = {
    "": {"cluster": "cluster", "policy": "policy"},
    "cluster": {"auth": "auth"},
    "model": {
        "placement": "placement",
        "memory": "memory",
        "architecture": "architecture",
        "custom": "custom",
    },
    "architecture": {"fields": "fields"},
}

UIDS = st.one_of(
    st.sampled_from(["a", "b", "chat", "x-rep0", "", "a b", "a/b", "名前", "u" * 100, "u" * 101]),
    st.text(min_size=0, max_size=120),
)


# --- strategies: documents ------------------------------------------------------------------------

TINY_ARCH: dict[str, Any] = {
    "model_type": "llama",
    "num_hidden_layers": 4,
    "hidden_size": 256,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "intermediate_size": 512,
    "vocab_size": 1000,
    "max_position_embeddings": 4096,
}
VALID_BASES: list[dict[str, Any]] = [
    tomllib.loads(EXAMPLE_TEXT),
    {
        "policy": {"mode": "enforce", "gpu_reserve_gib": 0.0},
        "models": {
            "a": {
                "model_name": "m",
                "model_engine": "Transformers",
                "memory": {"estimate_gib": 4.0},
            },
            "llm": {
                "model_name": "llm",
                "model_engine": "vLLM",
                "placement": {"gpus": 1},
                "architecture": {"fields": dict(TINY_ARCH), "weights_gib": 1.0},
                "memory": {"max_model_len": 2048, "gpu_memory_utilization": "minimum"},
            },
        },
    },
    {
        "cluster": {"endpoint": "https://xinference.internal:9997", "verify_tls": True},
        "policy": {"mode": "observe", "prune": "all"},
        "models": {
            "moe": {
                "model_name": "moe",
                "model_engine": "vLLM",
                "replicas": 2,
                "placement": {"worker": W1, "gpu_indexes": [0, 1], "gpus": 1},
                "architecture": {
                    "fields": {
                        **TINY_ARCH,
                        "num_experts": 8,
                        "num_experts_per_tok": 2,
                        "moe_intermediate_size": 128,
                        "sliding_window": 1024,
                    },
                    "params_billions": 0.5,
                },
                "memory": {"max_model_len": 1024, "kv_cache_dtype": "fp8"},
                "engine_args": {"enable_prefix_caching": True},
            },
            "emb": {
                "model_name": "my-emb",
                "model_type": "embedding",
                "model_engine": "sentence_transformers",
                "custom": {"model_uri": "/models/emb", "spec": {"dimensions": 8, "max_tokens": 64}},
                "memory": {"estimate_gib": 1.0},
            },
            "cpu": {
                "model_name": "bge-small-en-v1.5",
                "model_type": "embedding",
                "model_engine": "sentence_transformers",
                "placement": {"device": "cpu"},
            },
        },
    },
]


def _tables(doc: dict[str, Any], kind: str = "") -> Iterator[tuple[dict[str, Any], str]]:
    """Every table of ``doc`` with its kind (a key of TABLE_KEYS)."""
    yield doc, kind
    if kind == "":
        for uid_table in (
            (doc.get("models") or {}).values() if isinstance(doc.get("models"), dict) else ()
        ):
            if isinstance(uid_table, dict):
                yield from _tables(uid_table, "model")
    for key, sub_kind in SUBTABLES.get(kind, {}).items():
        sub = doc.get(key)
        if isinstance(sub, dict):
            yield from _tables(sub, sub_kind)


@st.composite
def mutated_documents(draw: st.DrawFn) -> dict[str, Any]:
    """A real, valid config with one to four small mutations (odd value, deleted key, foreign key,
    table <-> scalar swap, odd uid): mostly valid files that reach deep into resolution."""
    doc = json.loads(json.dumps(draw(st.sampled_from(VALID_BASES))))
    for _ in range(draw(st.sampled_from([1, 1, 1, 2, 3, 4]))):
        tables = list(_tables(doc))
        model_tables = [t for t, k in tables if k == "model"]
        if model_tables and draw(st.integers(0, 5)) == 0:  # loosely typed: inline config.json
            table = draw(st.sampled_from(model_tables))
            arch = table.setdefault("architecture", {})
            if not isinstance(arch, dict):
                continue
            fields = arch.setdefault("fields", dict(TINY_ARCH))
            if isinstance(fields, dict):
                fields[draw(st.sampled_from(ARCH_FIELD_KEYS))] = draw(ODD_SCALARS)
            continue
        table, kind = draw(st.sampled_from(tables))
        op = draw(
            st.sampled_from(["retype", "retype", "set", "set", "delete", "foreign", "swap", "uid"])
        )
        if op == "retype" and table:
            table[draw(st.sampled_from(sorted(table)))] = draw(ODD_SCALARS)
        elif op == "set":
            key = draw(st.sampled_from(TABLE_KEYS[kind]))
            table[key] = draw(ODD_VALUES)
        elif op == "delete" and table:
            del table[draw(st.sampled_from(sorted(table)))]
        elif op == "foreign":
            table[draw(st.sampled_from(ALL_KEYS))] = draw(ODD_VALUES)
        elif op == "swap" and table:
            key = draw(st.sampled_from(sorted(table)))
            value = table[key]
            table[key] = draw(ODD_SCALARS) if isinstance(value, dict) else {"value": value}
        elif op == "uid" and isinstance(doc.get("models"), dict) and doc["models"]:
            models = doc["models"]
            old = draw(st.sampled_from(sorted(models)))
            models[draw(UIDS)] = models.pop(old)
    return doc


@st.composite
def random_documents(draw: st.DrawFn, kind: str = "", depth: int = 0) -> dict[str, Any]:
    """A table of the given kind: real keys (and a few unknown ones) with plausible-or-odd values,
    sub-tables where the schema has them, wrong nesting now and then."""
    out: dict[str, Any] = {}
    keys = draw(
        st.lists(
            st.one_of(
                st.sampled_from(TABLE_KEYS[kind]), st.sampled_from(ALL_KEYS), st.text(max_size=8)
            ),
            max_size=6,
            unique=True,
        )
    )
    for key in keys:
        sub_kind = SUBTABLES.get(kind, {}).get(key)
        if sub_kind is not None and depth < 3 and draw(st.booleans()):
            out[key] = draw(random_documents(sub_kind, depth + 1))
        elif kind == "" and key == "models" and draw(st.integers(0, 4)):
            out[key] = draw(st.dictionaries(UIDS, random_documents("model", depth + 1), max_size=3))
        else:
            out[key] = draw(ODD_VALUES)
    return out


def toml_text(doc: dict[str, Any]) -> str:
    return tomli_w.dumps(doc)


# Text that tomli_w can write is already good TOML; these break the syntax of real files.
@st.composite
def corrupted_text(draw: st.DrawFn) -> str:
    text = draw(
        st.sampled_from([EXAMPLE_TEXT, toml_text(VALID_BASES[1]), toml_text(VALID_BASES[2])])
    )
    chars = list(text)
    for _ in range(draw(st.integers(1, 6))):
        pos = draw(st.integers(0, len(chars)))
        op = draw(st.sampled_from(["insert", "delete", "replace", "truncate"]))
        snippet = draw(
            st.sampled_from(
                ["[", "]", '"', "'", "=", "\n", "{", "}", ",", "#", "[[", "\\", "\x00", "\ufeff"]
            )
            | st.text(max_size=3)
        )
        if op == "insert":
            chars[pos:pos] = list(snippet)
        elif op == "delete":
            del chars[pos : pos + draw(st.integers(1, 20))]
        elif op == "replace":
            chars[pos : pos + 1] = list(snippet)
        else:
            del chars[pos:]
    return "".join(chars)


CONFIG_BYTES = st.one_of(
    st.binary(max_size=512),
    st.text(max_size=512).map(lambda t: t.encode("utf-8")),
    corrupted_text().map(lambda t: t.encode("utf-8", "surrogatepass")),
    mutated_documents().map(lambda d: toml_text(d).encode()),
    mutated_documents().map(lambda d: toml_text(d).encode()),
    mutated_documents().map(lambda d: toml_text(d).encode()),
    random_documents().map(lambda d: toml_text(d).encode()),
)


# --- the checks (shared with benchmarks/fuzz_long.py) ---------------------------------------------


@contextmanager
def scratch() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="xr-fuzz-") as name:
        yield Path(name)


def run_cli(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = main(list(argv), stdout=out, stderr=err)
    return code, out.getvalue(), err.getvalue()


def _cli_ok(result: tuple[int, str, str], allowed: set[int]) -> None:
    code, out, err = result
    assert code in allowed, (code, err[-2000:])
    assert "Traceback" not in out
    assert "Traceback" not in err


def check_config_bytes(data: bytes) -> None:
    """load_config raises only ConfigError; validate/plan never raise, never trace, exit 0/1 (2)."""
    with scratch() as tmp:
        path = tmp / "config.toml"
        path.write_bytes(data)
        with suppress(ConfigError):  # anything else escapes and fails the check
            load_config(path)
        _cli_ok(run_cli("validate", str(path)), {0, 1})
        _cli_ok(run_cli("plan", str(path), "--observed", str(SNAPSHOT)), {0, 1})
        _cli_ok(
            run_cli(
                "plan", str(path), "--observed", str(SNAPSHOT), "--json", "--detailed-exitcode"
            ),
            {0, 1, 2},
        )


GOOD = DAEMON_CONFIG


def _instances(fake: FakeCluster) -> dict[str, tuple[Any, ...]]:
    return {
        uid: (i.status, i.worker, i.gpu_indexes, i.model_name, json.dumps(i.body, sort_keys=True))
        for uid, i in fake.instances.items()
    }


def check_daemon_keeps_state_on_bad_file(data: bytes) -> None:
    """A good first pass, then the file becomes ``data``: the pass must not raise (an exception
    would end the daemon's loop thread), and when ``data`` is not a valid config nothing is
    launched or terminated."""
    with scratch() as tmp:
        path = tmp / "config.toml"
        path.write_text(GOOD)
        fake = FakeCluster((gpu_worker(W1, 24),), known_models=frozenset({"m"}))
        daemon = Daemon(
            config_path=path,
            settings=Settings(state_dir=tmp / "state", resync_interval_seconds=3600.0),
            cluster_factory=lambda _c, _e: fake,
            notifier=Notifier(environ={}),
        )
        configure(fmt="json", stream=io.StringIO())
        daemon.load()
        daemon.run_pass({"start"})
        daemon.run_pass({"requeue"})  # the launch settles READY
        assert set(fake.instances) == {"a"}
        assert fake.instances["a"].status == "READY"
        before, log_len = _instances(fake), len(fake.log)
        path.write_bytes(data)
        try:
            load_config(path)
            valid = True
        except Exception:
            valid = False
        daemon.run_pass({"file"})
        if not valid:
            assert _instances(fake) == before
            acted = [w for w, _ in fake.log[log_len:] if w in {"launch", "terminate", "register"}]
            assert acted == []


# Snapshots ---------------------------------------------------------------------------------------

JSON_VALUES = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        ODD_INTS,
        st.integers(),
        ODD_FLOATS,
        ODD_TEXT,
    ),
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=10), inner, max_size=4)
    ),
    max_leaves=12,
)
SNAPSHOT_KEYS = {
    "top": ["format", "workers", "models", "managed", "backing_off"],
    "worker": ["address", "gpus"],
    "gpu": ["index", "name", "total_bytes", "used_bytes", "total_gib", "used_gib"],
    "model": [
        "uid",
        "model_name",
        "model_type",
        "model_engine",
        "model_format",
        "model_size_in_billions",
        "quantization",
        "replicas",
        "status",
        "worker",
        "gpu_indexes",
        "gpu_memory_bytes",
        "error_message",
    ],
    "managed": ["uid", "spec_hash", "config_revision", "worker", "claims_bytes"],
}
INDEX_KEYS = st.one_of(
    st.sampled_from(["0", "1", "7", "-1", "1.5", "gpu0", "", " 1", "\uff11"]), st.text(max_size=4)
)


@st.composite
def plausible_snapshots(draw: st.DrawFn) -> dict[str, Any]:
    """Snapshots in the documented shape, with odd numbers, strings and keys where it hurts."""
    num = st.one_of(st.integers(0, 200 * GiB), ODD_INTS)
    gib = st.one_of(st.floats(0, 200), ODD_FLOATS)
    workers = []
    addresses = draw(st.lists(st.sampled_from([W1, "127.0.0.1:30002", "", "h"]), max_size=3))
    for address in addresses:
        gpus = []
        for index in draw(st.lists(st.one_of(st.integers(0, 3), ODD_INTS), max_size=3)):
            gpu: dict[str, Any] = {"index": index}
            if draw(st.booleans()):
                gpu |= {"total_bytes": draw(num), "used_bytes": draw(num)}
            else:
                gpu |= {"total_gib": draw(gib), "used_gib": draw(gib)}
            gpus.append(gpu)
        workers.append({"address": address, "gpus": gpus})
    models = []
    for uid in draw(st.lists(st.sampled_from(["chat", "embed", "x", ""]), max_size=3)):
        models.append(
            {
                "uid": uid,
                "model_name": draw(st.sampled_from(["qwen2.5-instruct", "bge-m3", "m"])),
                "model_engine": draw(st.sampled_from([None, "vLLM", "sentence_transformers"])),
                "status": draw(st.sampled_from(["READY", "ERROR", "CREATING", "TERMINATING", "?"])),
                "worker": draw(st.sampled_from([None, W1, "nowhere"])),
                "gpu_indexes": draw(st.lists(st.one_of(st.integers(0, 3), ODD_INTS), max_size=2)),
                "gpu_memory_bytes": draw(st.dictionaries(INDEX_KEYS, num, max_size=2)),
                "replicas": draw(st.one_of(st.integers(1, 3), ODD_INTS)),
            }
        )
    managed = [
        {
            "uid": draw(st.sampled_from(["chat", "embed", "gone"])),
            "spec_hash": draw(st.text(max_size=16)),
            "worker": draw(st.sampled_from([None, W1])),
            "claims_bytes": draw(st.dictionaries(INDEX_KEYS, num, max_size=2)),
        }
        for _ in range(draw(st.integers(0, 2)))
    ]
    doc: dict[str, Any] = {"format": 1, "workers": workers, "models": models, "managed": managed}
    for _ in range(draw(st.integers(0, 2))):  # a little structural damage
        key = draw(st.sampled_from(SNAPSHOT_KEYS["top"]))
        doc[key] = draw(JSON_VALUES)
    return doc


SNAPSHOT_DOCS = st.one_of(JSON_VALUES, plausible_snapshots())

_PLAN_CONFIG = load_config(EXAMPLE)


def check_snapshot_document(doc: Any) -> None:
    """Only SnapshotError escapes; a valid snapshot plans the example config without exceptions."""
    from daemon.core.planning import plan

    try:
        observed = observed_from_document(doc)
    except SnapshotError:
        return
    plan(_PLAN_CONFIG.config, _PLAN_CONFIG.demands, observed)


SNAPSHOT_BYTES = st.one_of(
    st.binary(max_size=256),
    SNAPSHOT_DOCS.map(lambda d: json.dumps(d).encode()),
)


def check_snapshot_file(data: bytes) -> None:
    """``plan --observed FILE`` with any file: no exception, no traceback, exit 0/1."""
    with scratch() as tmp:
        path = tmp / "snapshot.json"
        path.write_bytes(data)
        _cli_ok(run_cli("plan", str(EXAMPLE), "--observed", str(path)), {0, 1})


# The planner -------------------------------------------------------------------------------------


@st.composite
def lived_in_clusters(draw: st.DrawFn) -> ObservedState:
    """A cluster that already runs things: an earlier config's plan applied, some of its models
    killed or failed out of band, the ownership records kept or lost."""
    observed = draw(clusters())
    earlier = config(draw(configs), max_actions_per_pass=100, prune="managed")
    after = apply_plan(observed, plan_for(earlier, observed))
    models = list(after.models)
    rng = random.Random(draw(st.integers(0, 2**16)))
    kept = [m for m in models if rng.random() > 0.2]
    managed = dict(after.managed) if draw(st.booleans()) else {}
    return ObservedState(workers=after.workers, models=tuple(kept), managed=managed)


def _limit(total: int, policy: dict[str, float]) -> int:
    return int(total * policy["gpu_max_fraction"]) - round(policy["gpu_reserve_gib"] * GiB)


def _canonical(p: Plan) -> str:
    return json.dumps(plan_json(p), sort_keys=True)


def check_planner(
    observed: ObservedState, models: dict[str, Any], policy: dict[str, Any], prune: str
) -> None:
    """No exception; planning twice gives the same plan; every replacement launch comes with the
    termination of the instance it replaces; no GPU that receives a launch ends above its limit;
    pass after pass (one load per GPU each), the plans converge (see below)."""
    cfg = config(models, max_actions_per_pass=100, prune=prune, **policy)
    first = plan_for(cfg, observed)
    assert _canonical(first) == _canonical(plan_for(cfg, observed))
    plans, _ = run_to_completion(cfg, demands(cfg), observed, rounds=2 * len(models) + 3)
    state = observed
    for p in plans:
        terminated = {a.uid for a in p.actions if not isinstance(a, Launch)}
        for action in p.actions:  # a replacement first terminates what it replaces
            if isinstance(action, Launch) and action.replaces:
                assert action.uid in terminated, f"{action.uid} replaced without its Terminate"
        state = apply_plan(state, p)
        for gpu in state.gpus:
            launched = sum(a.claims.get(gpu.ref, 0) for a in p.actions if isinstance(a, Launch))
            if launched:
                assert gpu.used_bytes <= _limit(gpu.total_bytes, policy), (gpu, p.actions)
    assert not plans[-1].has_changes, plans[-1]
    # Later passes send what the first one admitted (or had to wait for) and, on a cluster that
    # already runs models, a replacement refused at first (its old instance kept) once the other
    # moves are done: the planner only counts memory it can prove is freed.
    expected = {a.uid for a in first.admitted} | {r.uid for r in first.refused}
    later = {a.uid for p in plans[1:] for a in p.actions if isinstance(a, Launch)}
    assert later <= expected, later - expected


# --- the tests ------------------------------------------------------------------------------------


@FUZZ
@given(data=st.binary(max_size=1024))
def test_random_bytes_as_config(data: bytes) -> None:
    check_config_bytes(data)


@FUZZ
@given(text=st.text(max_size=1024))
def test_random_text_as_config(text: str) -> None:
    check_config_bytes(text.encode("utf-8"))


@FUZZ
@given(text=corrupted_text())
def test_corrupted_real_configs(text: str) -> None:
    check_config_bytes(text.encode("utf-8", "surrogatepass"))


@settings(FUZZ, max_examples=150)
@given(doc=mutated_documents())
def test_mutated_real_configs(doc: dict[str, Any]) -> None:
    check_config_bytes(toml_text(doc).encode())


@settings(FUZZ, max_examples=100)
@given(doc=random_documents())
def test_structured_random_configs(doc: dict[str, Any]) -> None:
    check_config_bytes(toml_text(doc).encode())


@settings(FUZZ, max_examples=100)
@given(data=CONFIG_BYTES)
def test_an_invalid_file_never_leads_to_an_action(data: bytes) -> None:
    check_daemon_keeps_state_on_bad_file(data)


@settings(FUZZ, max_examples=300)
@given(doc=SNAPSHOT_DOCS)
def test_random_snapshot_documents(doc: Any) -> None:
    check_snapshot_document(doc)


@FUZZ
@given(data=SNAPSHOT_BYTES)
def test_random_snapshot_files_through_the_cli(data: bytes) -> None:
    check_snapshot_file(data)


@settings(FUZZ, max_examples=150)
@given(
    observed=st.one_of(clusters(), lived_in_clusters()),
    models=configs,
    policy=policies,
    prune=st.sampled_from(["none", "managed", "all"]),
)
def test_planner_invariants_on_lived_in_clusters(
    observed: ObservedState, models: dict[str, Any], policy: dict[str, Any], prune: str
) -> None:
    check_planner(observed, models, policy, prune)


# --- pinned regressions: inputs the fuzzers found -------------------------------------------------

_BASE = '[policy]\nmode = "enforce"\n[models.a]\nmodel_name = "m"\nmodel_engine = "{engine}"\n'
_FIELDS = "num_hidden_layers = 2, hidden_size = 64, num_attention_heads = 4, vocab_size = 100"
FOUND_CONFIGS: dict[str, str] = {
    # architecture.fields values are Scalar | list[Scalar]; architecture_from_hf_config int()s them
    "string num_experts": _BASE + f"[models.a.architecture]\nfields = {{ {_FIELDS}, "
    'num_experts = "x" }\n',
    "list num_experts_per_tok": _BASE + f"[models.a.architecture]\nfields = {{ {_FIELDS}, "
    "num_experts_per_tok = [1] }\n",
    "string max_position_embeddings with a sliding window": _BASE
    + f"[models.a.architecture]\nfields = {{ {_FIELDS}, sliding_window = 4, "
    'max_position_embeddings = "x" }\n',
    "string moe_intermediate_size": _BASE + f"[models.a.architecture]\nfields = {{ {_FIELDS}, "
    'num_experts = 4, moe_intermediate_size = "x" }\n',
    # floats accept inf (and huge finite values overflow once multiplied by GiB)
    "weights_gib = inf": _BASE + "[models.a.architecture]\nweights_gib = inf\n"
    f"fields = {{ {_FIELDS} }}\n",
    "params_billions = inf": _BASE + "[models.a.architecture]\nparams_billions = inf\n"
    f"fields = {{ {_FIELDS} }}\n",
    "estimate_gib = inf": _BASE + "[models.a.memory]\nestimate_gib = inf\n",
    "estimate_gib = 1e308": _BASE + "[models.a.memory]\nestimate_gib = 1e308\n",
    "gpu_reserve_gib = inf": '[policy]\nmode = "enforce"\ngpu_reserve_gib = inf\n'
    '[models.a]\nmodel_name = "m"\nmodel_engine = "{engine}"\n[models.a.memory]\n'
    "estimate_gib = 1.0\n",
    # tomllib recurses once per nesting level
    "deeply nested array": "x = " + "[" * 2000 + "]" * 2000 + "\n",
}


@pytest.mark.parametrize("name", sorted(FOUND_CONFIGS))
def test_found_config_inputs(name: str) -> None:
    data = FOUND_CONFIGS[name].replace("{engine}", "Transformers").encode()
    check_config_bytes(data)
    check_daemon_keeps_state_on_bad_file(data)


FOUND_SNAPSHOTS: dict[str, Any] = {
    "gpu_memory_bytes key not an integer": {
        "models": [{"uid": "x", "model_name": "m", "worker": W1, "gpu_memory_bytes": {"a": 1}}]
    },
    "claims_bytes key not an integer": {
        "managed": [{"uid": "x", "spec_hash": "h", "worker": W1, "claims_bytes": {"1.5": 1}}]
    },
    "total_gib = inf": {
        "workers": [{"address": W1, "gpus": [{"index": 0, "total_gib": math.inf}]}]
    },
    "total_gib = 1e308": {"workers": [{"address": W1, "gpus": [{"index": 0, "total_gib": 1e308}]}]},
    # a GPU reporting 0 bytes (also what parse_workers makes of a missing mem_total): the vLLM
    # model of the example config divides by it in footprint.required_utilization
    "a GPU of 0 bytes": {"workers": [{"address": W1, "gpus": [{"index": 0, "total_bytes": 0}]}]},
}


@pytest.mark.parametrize("name", sorted(FOUND_SNAPSHOTS))
def test_found_snapshot_inputs(name: str) -> None:
    check_snapshot_document(FOUND_SNAPSHOTS[name])
    check_snapshot_file(json.dumps(FOUND_SNAPSHOTS[name]).encode())


def test_a_deeply_nested_snapshot_file() -> None:
    check_snapshot_file(b"[" * 100_000)


CHECKS: dict[str, tuple[Callable[..., None], Any]] = {
    "config_bytes": (check_config_bytes, CONFIG_BYTES),
    "daemon_bad_file": (check_daemon_keeps_state_on_bad_file, CONFIG_BYTES),
    "snapshot_document": (check_snapshot_document, SNAPSHOT_DOCS),
    "snapshot_file": (check_snapshot_file, SNAPSHOT_BYTES),
    "planner": (
        check_planner,
        st.tuples(
            st.one_of(clusters(), lived_in_clusters()),
            configs,
            policies,
            st.sampled_from(["none", "managed", "all"]),
        ),
    ),
}


def test_replacing_a_model_whose_memory_is_unknown_does_not_over_commit() -> None:
    """Found by test_planner_invariants_on_lived_in_clusters, pinned with real-world numbers.

    GPU 0 (16 GiB) shows 12 GiB used: 10 GiB by another tenant, 2 GiB by the running instance of
    ``e`` (launched by hand: no ownership record; the server does not report its memory). The file
    now wants ``e`` changed, needing 8 GiB. Terminating the old ``e`` frees its 2 GiB, so the new one
    ends at 10 + 8 = 18 GiB > 16 GiB. The planner must not count the *new* spec's 8 GiB as what the
    old instance frees."""
    from daemon.core.observed import RunningModel

    observed = ObservedState(
        workers=(gpu_worker(W1, 16.0, used_gib=12.0),),
        models=(
            RunningModel(
                uid="e",
                model_name="old",
                model_engine="Transformers",
                status="READY",
                worker=W1,
                gpu_indexes=(0,),
            ),
        ),
    )
    cfg = config(
        {"e": {"model_name": "m", "model_engine": "Transformers", "memory": {"estimate_gib": 8.0}}},
        prune="all",
    )
    p = plan_for(cfg, observed)
    actually_freed = round(2.0 * GiB)
    for action in p.actions:
        if isinstance(action, Launch):
            for ref, claim in action.claims.items():
                gpu = next(g for g in observed.gpus if g.ref == ref)
                assert gpu.used_bytes - actually_freed + claim <= gpu.total_bytes, action


def test_a_replacement_is_never_launched_without_terminating_the_old_instance() -> None:
    """Found by the long fuzz run (benchmarks/fuzz_long.py, planner), pinned as found.

    b, c and d all changed in the file. planning.plan's loop drops refused replacements from
    ``replacing`` and admits again: d is refused, then c (its old memory no longer counted as
    freed), and on the next round c fits on GPU 2 and is admitted while no longer in ``replacing``.
    The plan then launches c (replaces=True) with no Terminate of the running c: Xinference answers
    400 "Model is already in the model list" (or, were it accepted, both would hold memory)."""
    from types import MappingProxyType

    from daemon.core.observed import GpuRef, GpuSnapshot, RunningModel, Worker
    from daemon.core.ownership import LaunchRecord

    def ref(i: int) -> GpuRef:
        return GpuRef(worker=W1, index=i)

    def running(uid: str, *gpus: int) -> RunningModel:
        return RunningModel(
            uid=uid, model_name="m", model_engine="Transformers", worker=W1, gpu_indexes=gpus
        )

    def record(uid: str, spec_hash: str, gpu: int, claim: int) -> LaunchRecord:
        return LaunchRecord(
            uid=uid, spec_hash=spec_hash, claims=MappingProxyType({ref(gpu): claim})
        )

    observed = ObservedState(
        workers=(
            Worker(
                address=W1,
                gpus=(
                    GpuSnapshot(ref=ref(0), total_bytes=16 * GiB, used_bytes=17175641326),
                    GpuSnapshot(ref=ref(1), total_bytes=24 * GiB, used_bytes=11 * GiB),
                    GpuSnapshot(ref=ref(2), total_bytes=24 * GiB, used_bytes=0),
                ),
            ),
        ),
        models=(running("b", 0), running("c", 1), running("d", 0)),
        managed={
            "a": record("a", "f762b8b9bf40f9f0", 0, 12880674030),
            "b": record("b", "39fb955099f1d9f9", 0, 2 * GiB),
            "c": record("c", "d42ce5bfa56c0b33", 1, 11 * GiB),
            "d": record("d", "39fb955099f1d9f9", 0, 2 * GiB),
        },
    )

    def fixed(gib: float, gpus: int, priority: int = 0) -> dict[str, Any]:
        return {
            "model_name": "m",
            "model_engine": "Transformers",
            "priority": priority,
            "placement": {"gpus": gpus},
            "memory": {"estimate_gib": gib},
        }

    models = {"a": fixed(11.0, 2), "b": fixed(11.0, 2, 1), "c": fixed(2.0, 1), "d": fixed(2.0, 2)}
    check_planner(observed, models, {"gpu_reserve_gib": 0.5, "gpu_max_fraction": 1.0}, "none")


def test_an_unexpected_error_in_one_pass_does_not_end_the_reconcile_loop(tmp_path: Path) -> None:
    """Before the fixes, one malformed edit (e.g. ``num_experts = "x"``) made ``load_config`` raise
    ValueError inside a pass; nothing in ``Daemon._loop`` caught it, the reconcile thread died and
    ``Daemon.run`` returned 0 with ``daemon.stopped clean: true`` (seen with ``python -m daemon run``),
    so systemd's Restart=on-failure did not restart it. The inputs are fixed now; this keeps the
    loop itself safe from the next unforeseen exception: the pass fails, the next one runs."""
    import threading

    path = tmp_path / "config.toml"
    path.write_text(GOOD)
    daemon: Daemon

    class Flaky(FakeCluster):
        def __init__(self) -> None:
            super().__init__((gpu_worker(W1, 24),), known_models=frozenset({"m"}))
            self.observed = 0

        def observe(self) -> Any:
            self.observed += 1
            if self.observed == 1:
                daemon.request_pass("resync")
                raise RuntimeError("something nobody foresaw")
            daemon.stop()
            return super().observe()

    fake = Flaky()
    daemon = Daemon(
        config_path=path,
        settings=Settings(state_dir=tmp_path / "state", resync_interval_seconds=3600.0),
        cluster_factory=lambda _c, _e: fake,
        notifier=Notifier(environ={}),
    )
    configure(fmt="json", stream=io.StringIO())
    daemon.load()
    safety = threading.Timer(10.0, daemon.stop)
    safety.start()
    try:
        daemon._loop()
    finally:
        safety.cancel()
        safety.join()
    assert fake.observed == 2
