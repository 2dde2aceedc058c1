"""The ownership state file: what this tool launched (with the spec hash and what it reserved on each
GPU), failed launches with their backoff, and the custom models it registered.

Written atomically (temporary file in the same directory, fsync, rename, fsync of the directory), so
a crash leaves the old or the new file, never half of one. A missing file is an empty state; a
corrupt one is moved aside and treated as empty, which under ``prune = "managed"`` means nothing can
be proven to be ours and nothing is terminated.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import replace
from pathlib import Path
from types import MappingProxyType
from typing import Any

from daemon.core.corrections import KINDS, Correction
from daemon.core.observed import GpuRef
from daemon.core.ownership import LaunchRecord, OwnershipState
from daemon.core.retry import FailureRecord
from daemon.errors import StateError

STATE_FORMAT = 1
FILE_NAME = "state.json"


def _ref_key(ref: GpuRef) -> str:
    return f"{ref.worker}#{ref.index}"


def _ref(key: str) -> GpuRef:
    worker, _, index = key.rpartition("#")
    return GpuRef(worker=worker, index=int(index))


def to_document(state: OwnershipState) -> dict[str, Any]:
    return {
        "format": STATE_FORMAT,
        "launched": {
            uid: {
                "spec_hash": r.spec_hash,
                "config_revision": r.config_revision,
                "claims_bytes": {_ref_key(g): b for g, b in sorted(r.claims.items())},
                "spec": dict(sorted(r.spec.items())),
                "loading": r.loading,
                "sent_at": r.sent_at,
                "timeout_seconds": r.timeout_seconds,
                "launch_args": dict(r.launch_args),
            }
            for uid, r in sorted(state.records.items())
        },
        "failures": {
            uid: {
                "spec_hash": f.spec_hash,
                "attempts": f.attempts,
                "last_error": f.last_error,
                "next_retry_at": f.next_retry_at,
                "args_digest": f.args_digest,
            }
            for uid, f in sorted(state.failures.items())
        },
        "corrections": {
            key: {
                "model": c.model,
                "kind": c.kind,
                "extra_bytes": c.extra_bytes,
                "estimated_bytes": c.estimated_bytes,
                "evidence": c.evidence,
                "gpu_name": c.gpu_name,
                "engine_version": c.engine_version,
                "learned_at": c.learned_at,
            }
            for key, c in sorted(state.corrections.items())
        },
        "registrations": dict(sorted(state.registrations.items())),
    }


def correction_from_document(key: str, c: Any) -> Correction:
    """One correction from the state file or a calibration ledger (ValueError/KeyError if bad)."""
    kind = str(c["kind"])
    if kind not in KINDS:
        raise ValueError(f"unknown correction kind {kind!r}")
    extra = int(c["extra_bytes"])
    if extra < 0:
        raise ValueError("extra_bytes must not be negative (corrections only add memory)")
    return Correction(
        key=key,
        model=str(c.get("model", "")),
        kind=kind,  # type: ignore[arg-type]  # checked against KINDS above
        extra_bytes=extra,
        estimated_bytes=int(c.get("estimated_bytes", 0)),
        evidence=str(c.get("evidence", "")),
        gpu_name=str(c.get("gpu_name", "")),
        engine_version=None if c.get("engine_version") is None else str(c["engine_version"]),
        learned_at=float(c.get("learned_at", 0.0)),
    )


def _optional_float(value: Any) -> float | None:
    return None if value is None else float(value)


def from_document(doc: Any) -> OwnershipState:
    """Parse a state document; raises ValueError (or KeyError/TypeError) on anything malformed."""
    if not isinstance(doc, dict) or doc.get("format") != STATE_FORMAT:
        raise ValueError("not a state file of format 1")
    records = {
        uid: LaunchRecord(
            uid=uid,
            spec_hash=str(r["spec_hash"]),
            config_revision=str(r.get("config_revision", "")),
            claims=MappingProxyType(
                {_ref(k): int(v) for k, v in r.get("claims_bytes", {}).items()}
            ),
            spec=MappingProxyType(dict(r.get("spec") or {})),
            loading=bool(r.get("loading", False)),
            sent_at=_optional_float(r.get("sent_at")),
            timeout_seconds=_optional_float(r.get("timeout_seconds")),
            launch_args=MappingProxyType(dict(r.get("launch_args") or {})),
        )
        for uid, r in doc.get("launched", {}).items()
    }
    failures = {
        uid: FailureRecord(
            uid=uid,
            spec_hash=str(f["spec_hash"]),
            attempts=int(f["attempts"]),
            last_error=str(f.get("last_error", "")),
            next_retry_at=float(f["next_retry_at"]),
            args_digest=f.get("args_digest"),
        )
        for uid, f in doc.get("failures", {}).items()
    }
    corrections = {
        str(key): correction_from_document(str(key), c)
        for key, c in doc.get("corrections", {}).items()
    }
    registrations = {str(k): str(v) for k, v in doc.get("registrations", {}).items()}
    return OwnershipState(
        records=MappingProxyType(records),
        failures=MappingProxyType(failures),
        registrations=MappingProxyType(registrations),
        corrections=MappingProxyType(corrections),
    )


class StateStore:
    """The state file in ``directory`` (created on first save)."""

    def __init__(self, directory: Path) -> None:
        self.path = directory / FILE_NAME
        # What a failed save could not write: the next load returns it, so a daemon whose state
        # file cannot be written still knows what it launched for as long as it runs.
        self._unsaved: OwnershipState | None = None

    def load(self) -> OwnershipState:
        if self._unsaved is not None:
            return replace(
                self._unsaved,
                problem=f"state file {self.path} cannot be written; ownership is kept in memory "
                "until it can (a restart would lose it)",
            )
        return self._load_file()

    def _load_file(self) -> OwnershipState:
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return OwnershipState()
        except (OSError, UnicodeDecodeError) as exc:
            return OwnershipState(
                problem=f"state file {self.path} unreadable ({exc.__class__.__name__})"
            )
        try:
            return from_document(json.loads(text))
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            aside = self.path.with_name(f"{FILE_NAME}.corrupt")
            try:
                os.replace(self.path, aside)
            except OSError:
                aside = self.path
            return OwnershipState(
                problem=f"state file {self.path} is corrupt ({exc.__class__.__name__}); kept as {aside}; "
                "starting with no ownership records (nothing will be pruned as 'managed')"
            )

    def save(self, state: OwnershipState) -> None:
        data = json.dumps(to_document(state), indent=2, sort_keys=True).encode() + b"\n"
        directory = self.path.parent
        try:
            directory.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=".state-", suffix=".tmp", dir=directory)
            try:
                with os.fdopen(fd, "wb") as handle:
                    handle.write(data)
                    handle.flush()
                    os.fsync(handle.fileno())
                os.replace(tmp, self.path)
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise
            dir_fd = os.open(directory, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
        except OSError as exc:
            self._unsaved = replace(state, problem=None)
            raise StateError(f"cannot write state file {self.path}: {exc.strerror or exc}") from exc
        self._unsaved = None
