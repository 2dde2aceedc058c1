"""Launches in progress, settled level-triggered: each pass looks at every launch this tool sent and
has not seen finish, and decides from what the server shows now: READY, ERROR, still loading, past
its deadline, or gone. Nothing here waits; a pass that finds a launch still loading leaves it for
the next pass.

Pure: the shell passes in the wall-clock time (for the persisted backoff) and, per launch, the
seconds since it was sent (measured on the monotonic clock while the process lives).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Literal

from daemon.core.observed import ERROR, READY, RunningModel
from daemon.core.ownership import LaunchRecord, OwnershipState
from daemon.core.retry import FailureRecord, record_failure

# A launch the server does not list this long after it was sent is gone (the server restarted
# empty, or its worker left). Xinference lists an accepted launch at once (CREATING).
VANISHED_AFTER_SECONDS = 20.0

Result = Literal["ready", "failed", "timed_out", "vanished", "loading"]


@dataclass(frozen=True, kw_only=True)
class Outcome:
    """What became of one launch in progress, as of this pass."""

    uid: str
    result: Result
    seconds: float  # since the launch was sent
    error: str | None = None
    failure: FailureRecord | None = None  # the backoff recorded for a failed launch


@dataclass(frozen=True, kw_only=True)
class Settlement:
    state: OwnershipState
    outcomes: tuple[Outcome, ...]
    timed_out: frozenset[str]  # loading past the deadline: the plan terminates them

    @property
    def loading(self) -> tuple[Outcome, ...]:
        return tuple(o for o in self.outcomes if o.result == "loading")


def _judge(
    record: LaunchRecord, running: RunningModel | None, seconds: float, vanished_after: float
) -> tuple[Result, str | None]:
    """What the server shows of one loading launch: the result and, for a failure, why."""
    if running is not None and running.status == READY:
        return "ready", None
    if running is not None and running.status == ERROR:
        return "failed", running.error_message or "launch failed"
    if running is None and seconds >= vanished_after:
        return (
            "vanished",
            "the server no longer knows this launch (it restarted, or its worker left)",
        )
    if record.timeout_seconds is not None and seconds > record.timeout_seconds:
        return "timed_out", f"not READY after {record.timeout_seconds:g} s"
    return "loading", None


def settle(
    state: OwnershipState,
    models: tuple[RunningModel, ...],
    *,
    elapsed: Mapping[str, float],
    now: float,
    vanished_after: float = VANISHED_AFTER_SECONDS,
) -> Settlement:
    """Settle every launch recorded as loading (see the module docstring).

    READY: the record stops loading and any failure is forgotten. ERROR: the record stays (the
    failed instance is ours) and a failure with its backoff is recorded. Gone: the record is
    dropped and a failure recorded. Past its deadline: a failure is recorded and the uid is listed
    in ``timed_out`` so the plan terminates the stuck load.
    """
    by_uid = {m.uid: m for m in models}
    outcomes: list[Outcome] = []
    timed_out: set[str] = set()
    for uid, record in sorted(state.records.items()):
        if not record.loading:
            continue
        seconds = max(0.0, elapsed.get(uid, 0.0))
        result, error = _judge(record, by_uid.get(uid), seconds, vanished_after)
        failure = None
        if error is not None:
            previous = state.failures.get(uid)
            failure = record_failure(
                previous, uid=uid, spec_hash=record.spec_hash, error=error, now=now
            )
            if result == "vanished":  # the server lost it (a restart): not the model's fault
                failure = replace(failure, next_retry_at=now)
            state = state.with_failure(failure)
        if result == "ready":
            state = state.with_record(replace(record, loading=False)).without_failure(uid)
        elif result == "failed":
            state = state.with_record(replace(record, loading=False))
        elif result == "vanished":
            state = state.without_record(uid)
        elif result == "timed_out":
            timed_out.add(uid)
        outcomes.append(
            Outcome(uid=uid, result=result, seconds=seconds, error=error, failure=failure)
        )
    return Settlement(state=state, outcomes=tuple(outcomes), timed_out=frozenset(timed_out))
