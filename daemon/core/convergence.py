"""One definition of "the cluster matches the file", used by ``plan``, ``apply``, ``status``, the
daemon's ``pass.finished`` event, ``/readyz`` and the metrics.

Converged means: nothing to do now or later. Every desired model runs READY with the spec the file
gives; nothing is to be launched, replaced, terminated, deferred or waiting; nothing is loading,
failing, backing off or refused; no drift is merely tolerated (a protected model whose spec
changed, an unmanaged model that drifted). Models that the prune policy leaves running although
the file does not list them do not count against it: the file allows them.
"""

from __future__ import annotations

from dataclasses import dataclass

from daemon.core.drift import State
from daemon.core.planning import Launch, Plan


@dataclass(frozen=True, kw_only=True)
class Pending:
    """One reason the cluster does not match the file."""

    uid: str
    what: str  # launch, replace, terminate, deferred, waiting, refused, loading, failed, ...
    reason: str


@dataclass(frozen=True, kw_only=True)
class Convergence:
    pending: tuple[Pending, ...]

    @property
    def converged(self) -> bool:
        return not self.pending

    def summary(self) -> str:
        """``converged``, or ``N not converged: uid (what), ...`` for one line (STATUS=, /readyz)."""
        if not self.pending:
            return "converged"
        parts = [f"{p.uid} ({p.what})" for p in self.pending]
        return f"{len(self.pending)} not converged: " + ", ".join(parts)


_STATE_WORDS = {
    State.MISSING: "missing",
    State.FAILED: "failed",
    State.LAUNCHING: "loading",
    State.TERMINATING: "terminating",
    State.CHANGED: "changed",
}


def convergence(plan: Plan) -> Convergence:
    """What stands between the observed cluster and the file, one entry per model at most."""
    pending: dict[str, Pending] = {}

    def add(uid: str, what: str, reason: str) -> None:
        pending.setdefault(uid, Pending(uid=uid, what=what, reason=reason))

    for action in plan.actions:
        what = "terminate"
        if isinstance(action, Launch):
            what = "replace" if action.replaces else "launch"
        add(action.uid, what, action.reason)
    for action in plan.deferred:
        add(action.uid, "deferred", "max_actions_per_pass reached; a later pass does it")
    for waiting in plan.waiting:
        add(waiting.uid, "waiting", waiting.reason)
    for refusal in plan.refused:
        add(refusal.uid, "refused", refusal.reason)
    for status in plan.statuses:
        if status.state == State.IN_SYNC or not status.desired:
            continue
        what = _STATE_WORDS.get(status.state, str(status.state))
        reason = "; ".join(status.reasons) or what
        if status.uid in plan.left_alone:
            reason = f"{reason} ({plan.left_alone[status.uid]})"
        add(status.uid, what, reason)
    return Convergence(pending=tuple(sorted(pending.values(), key=lambda p: p.uid)))
