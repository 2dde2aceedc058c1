"""What this tool owns, as plain values: the models it launched (with the spec and what each claimed
on every GPU), failed launches with their backoff, and the custom models it registered.

The shell persists it (``daemon/adapters/state_file.py``); the pass reads and changes it only through
the pure methods below.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType

from daemon.core.observed import GpuRef
from daemon.core.retry import FailureRecord


@dataclass(frozen=True, kw_only=True)
class LaunchRecord:
    """What this tool launched (from its state file): proof of ownership and the launched spec."""

    uid: str
    spec_hash: str
    config_revision: str = ""
    claims: Mapping[GpuRef, int] = field(default_factory=lambda: MappingProxyType({}))


@dataclass(frozen=True, kw_only=True)
class OwnershipState:
    records: Mapping[str, LaunchRecord] = field(default_factory=lambda: MappingProxyType({}))
    failures: Mapping[str, FailureRecord] = field(default_factory=lambda: MappingProxyType({}))
    registrations: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
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
