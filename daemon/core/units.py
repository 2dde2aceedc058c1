"""Byte units, GPU references and Xinference model-uid rules shared by the whole core."""

from __future__ import annotations

import re
from dataclasses import dataclass

KiB = 1024
MiB = 1024**2
GiB = 1024**3

_REPLICA_SUFFIX = re.compile(r"-rep\d+$")
MAX_UID_LENGTH = 100


def gib(n_bytes: int | float) -> float:
    """Bytes as GiB, for people."""
    return n_bytes / GiB


def fmt_gib(n_bytes: int | float) -> str:
    """``12.34 GiB``: how every human-facing byte count is printed."""
    return f"{n_bytes / GiB:.2f} GiB"


def uid_problem(uid: str) -> str | None:
    """Why Xinference would refuse ``uid`` as a model uid, or None when it is acceptable.

    Xinference accepts 1-100 characters and refuses uids ending in ``-rep<N>`` (its replica suffix).
    """
    if not uid:
        return "a model uid must not be empty"
    if len(uid) > MAX_UID_LENGTH:
        return f"a model uid has at most {MAX_UID_LENGTH} characters (this one has {len(uid)})"
    if _REPLICA_SUFFIX.search(uid):
        return "a model uid must not end in '-rep<N>' (Xinference reserves it for replicas)"
    if any(ch.isspace() or ch == "/" for ch in uid):
        return "a model uid must not contain whitespace or '/' (it is part of URL paths)"
    return None


@dataclass(frozen=True, order=True, kw_only=True)
class GpuRef:
    """One GPU: the worker that owns it and its index on that worker."""

    worker: str
    index: int

    def __str__(self) -> str:
        return f"{self.worker}/gpu{self.index}"
