"""The calibration ledger: the corrections the engine proved (daemon/core/corrections.py), as a TOML
file to commit beside the config. ``calibration export`` writes it from the state file; a config
that names it (``[calibration] file``) plans with its figures over the estimates.

Format (one table per model memory identity, ``ModelSpec.memory_key()``)::

    format = 1
    [measured."m-2aa41af34e2ce6cc"]
    model = "chat (qwen2.5-instruct)"
    kind = "kv_cache"              # what proved it: kv_cache, no_cache_memory, startup_gate,
                                   # out_of_memory, overrun, or ledger (written by hand)
    extra_bytes = 1342177280       # added per GPU to the engine's overhead before its KV cache
    evidence = "The model's max seq len (32768) is larger than ..."
    gpu_name = "NVIDIA L40S"
    engine_version = "0.11.0"      # optional
    learned_at = 1796140000.0      # unix time
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any

import tomli_w

from daemon.adapters.state_file import correction_from_document
from daemon.core.corrections import Correction
from daemon.core.units import fmt_gib

if sys.version_info >= (3, 11):
    import tomllib
else:  # Python 3.10: the same parser, published as tomli
    import tomli as tomllib

LEDGER_FORMAT = 1
MAX_LEDGER_BYTES = 4 * 1024 * 1024


class LedgerError(ValueError):
    """The ledger cannot be used; the message names the file and the entry."""


def read_ledger(path: Path) -> Mapping[str, Correction]:
    try:
        if path.stat().st_size > MAX_LEDGER_BYTES:
            raise LedgerError(f"{path}: larger than {MAX_LEDGER_BYTES} bytes; refused")
        doc = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise LedgerError(f"{path}: file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise LedgerError(f"{path}: cannot read it ({exc.__class__.__name__})") from None
    except tomllib.TOMLDecodeError as exc:
        raise LedgerError(f"{path}: TOML syntax error: {exc}") from None
    if doc.get("format") != LEDGER_FORMAT:
        raise LedgerError(f"{path}: format: expected {LEDGER_FORMAT}")
    measured = doc.get("measured", {})
    if not isinstance(measured, dict):
        raise LedgerError(f"{path}: measured: expected a table of models")
    out: dict[str, Correction] = {}
    for key, entry in measured.items():
        try:
            out[str(key)] = correction_from_document(str(key), entry)
        except (ValueError, KeyError, TypeError) as exc:
            raise LedgerError(f"{path}: measured.{key}: {exc}") from None
    return MappingProxyType(out)


def ledger_text(corrections: Mapping[str, Correction]) -> str:
    measured: dict[str, Any] = {}
    for key, c in sorted(corrections.items()):
        entry: dict[str, Any] = {
            "model": c.model,
            "kind": c.kind,
            "extra_bytes": c.extra_bytes,
            "estimated_bytes": c.estimated_bytes,
            "evidence": c.evidence,
            "gpu_name": c.gpu_name,
            "learned_at": c.learned_at,
        }
        if c.engine_version is not None:
            entry["engine_version"] = c.engine_version
        measured[key] = entry
    head = (
        "# Written by `xinference-reconciler calibration export`: what the engine measured that\n"
        "# the estimate missed, per GPU, by model memory identity. Commit it beside config.toml and\n"
        '# name it there: [calibration] file = "calibration.toml".\n'
    )
    lines = [
        f"#   {k}: {c.model}: +{fmt_gib(c.extra_bytes)}" for k, c in sorted(corrections.items())
    ]
    return (
        head
        + "\n".join(lines)
        + ("\n" if lines else "")
        + tomli_w.dumps({"format": LEDGER_FORMAT, "measured": measured})
    )
