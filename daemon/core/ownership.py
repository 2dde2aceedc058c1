"""What this tool owns, as plain values: the models it launched (with the spec and what each claimed
on every GPU), failed launches with their backoff, and the custom models it registered.

The shell persists it (``daemon/adapters/state_file.py``); the pass reads and changes it only through
the pure methods below.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Any

from daemon.core.corrections import Correction
from daemon.core.observed import GpuRef
from daemon.core.retry import FailureRecord


@dataclass(frozen=True, kw_only=True)
class LaunchRecord:
    """What this tool launched (from its state file): proof of ownership and the launched spec.

    A launch is recorded the moment it is sent and stays ``loading`` until a pass sees it READY
    (or ERROR, or past its deadline): passes never wait for a load. ``sent_at`` is wall-clock time
    (it is persisted and must survive a restart); within one process the deadline is measured on
    the monotonic clock (the shell passes the elapsed seconds in).
    """

    uid: str
    spec_hash: str
    config_revision: str = ""
    claims: Mapping[GpuRef, int] = field(default_factory=lambda: MappingProxyType({}))
    # The launched spec, flattened (``memory.max_model_len`` -> 32768): names what changed later.
    spec: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))
    loading: bool = False
    sent_at: float | None = None  # wall clock, persisted
    timeout_seconds: float | None = None  # the policy's launch_timeout_seconds when it was sent
    # The engine arguments it was sent with (utilization, max_model_len, ...): what a memory
    # failure is measured against, and what must not be sent again unchanged after one.
    launch_args: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))


@dataclass(frozen=True, kw_only=True)
class OwnershipState:
    records: Mapping[str, LaunchRecord] = field(default_factory=lambda: MappingProxyType({}))
    failures: Mapping[str, FailureRecord] = field(default_factory=lambda: MappingProxyType({}))
    registrations: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    # What the engine measured that the estimate missed, by memory identity (core/corrections.py).
    corrections: Mapping[str, Correction] = field(default_factory=lambda: MappingProxyType({}))
    problem: str | None = None  # why the file on disk could not be used, when it could not

    def with_record(self, record: LaunchRecord) -> OwnershipState:
        return replace(self, records=MappingProxyType({**self.records, record.uid: record}))

    def without_record(self, uid: str) -> OwnershipState:
        return replace(
            self, records=MappingProxyType({k: v for k, v in self.records.items() if k != uid})
        )

    def with_failure(self, failure: FailureRecord) -> OwnershipState:
        return replace(self, failures=MappingProxyType({**self.failures, failure.uid: failure}))

    def without_failure(self, uid: str) -> OwnershipState:
        return replace(
            self, failures=MappingProxyType({k: v for k, v in self.failures.items() if k != uid})
        )

    def with_registration(self, name: str, digest: str) -> OwnershipState:
        return replace(self, registrations=MappingProxyType({**self.registrations, name: digest}))

    def with_correction(self, correction: Correction) -> OwnershipState:
        return replace(
            self, corrections=MappingProxyType({**self.corrections, correction.key: correction})
        )

    def keeping_failures_of(self, uids: Iterable[str]) -> OwnershipState:
        """Drop the failure records of models no longer in the file: a model removed and added
        again starts with a clean slate, not at attempt N with a long wait."""
        keep = set(uids)
        if all(uid in keep for uid in self.failures):
            return self
        return replace(
            self,
            failures=MappingProxyType({k: v for k, v in self.failures.items() if k in keep}),
        )
