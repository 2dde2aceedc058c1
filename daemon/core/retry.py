"""Backoff for launches that failed: capped exponential, reset when the model's spec changes.

Pure: the shell passes the clock's reading in.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

BASE_DELAY_SECONDS = 15.0
MAX_DELAY_SECONDS = 600.0


@dataclass(frozen=True, kw_only=True)
class FailureRecord:
    """A model whose last launch failed, for the spec it was launched with."""

    uid: str
    spec_hash: str
    attempts: int
    last_error: str
    next_retry_at: float
    # A memory failure the engine measured (core/corrections.py): the corrected plan may try again
    # at once, but only with other arguments than these (a digest of the failed launch's).
    args_digest: str | None = None


def delay_after(
    attempts: int, *, base: float = BASE_DELAY_SECONDS, cap: float = MAX_DELAY_SECONDS
) -> float:
    """Seconds to wait after the ``attempts``-th consecutive failure: base, 2 x base, ... up to cap."""
    return float(min(cap, base * 2.0 ** max(0, attempts - 1)))


def record_failure(
    previous: FailureRecord | None,
    *,
    uid: str,
    spec_hash: str,
    error: str,
    now: float,
    base: float = BASE_DELAY_SECONDS,
    cap: float = MAX_DELAY_SECONDS,
) -> FailureRecord:
    """The record after one more failure; a different spec starts counting again."""
    same_spec = previous is not None and previous.spec_hash == spec_hash
    attempts = previous.attempts + 1 if same_spec and previous is not None else 1
    return FailureRecord(
        uid=uid,
        spec_hash=spec_hash,
        attempts=attempts,
        last_error=error,
        next_retry_at=now + delay_after(attempts, base=base, cap=cap),
    )


def backing_off(
    failures: Mapping[str, FailureRecord],
    spec_hashes: Mapping[str, str],
    now: float,
    *,
    cap: float = MAX_DELAY_SECONDS,
) -> frozenset[str]:
    """Uids whose retry is not due yet. A changed spec is retried at once (its backoff resets).

    A retry time further away than the cap can only come from the clock stepping backwards; such a
    retry is due now rather than after the step.
    """
    return frozenset(
        uid
        for uid, f in failures.items()
        if f.args_digest is None
        and spec_hashes.get(uid) == f.spec_hash
        and now < f.next_retry_at <= now + cap
    )


def retry_if_changed(
    failures: Mapping[str, FailureRecord],
    spec_hashes: Mapping[str, str],
    now: float,
    *,
    cap: float = MAX_DELAY_SECONDS,
) -> dict[str, str]:
    """Uids whose memory failure was corrected, within their backoff: uid -> the digest of the
    arguments that failed. They are retried at once if the corrected plan changes the arguments,
    after the backoff otherwise (never the same failing arguments again at once)."""
    return {
        uid: f.args_digest
        for uid, f in failures.items()
        if f.args_digest is not None
        and spec_hashes.get(uid) == f.spec_hash
        and now < f.next_retry_at <= now + cap
    }
