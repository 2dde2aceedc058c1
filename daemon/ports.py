"""The ports of a pass: what ``reconciler.reconcile_once`` needs from the outside world, as protocols.

The real adapters (daemon/adapters/xinference.py, daemon/adapters/state_file.py) and the in-memory
fakes (daemon/testing/) both provide them; tests/contract runs one suite against the fake and the
real Xinference so the fake cannot drift from the truth.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

from daemon.core.observed import RunningModel, Worker
from daemon.core.ownership import OwnershipState
from daemon.core.planning import Launch


class ClusterPort(Protocol):
    """What a pass needs from Xinference. The real adapter and the in-memory fake both provide it
    (tests/contract runs one suite against both)."""

    def observe(self) -> tuple[tuple[Worker, ...], tuple[RunningModel, ...]]: ...
    def launch(self, launch: Launch) -> None: ...
    def terminate(self, uid: str, *, loading: bool = False) -> bool: ...
    def engine_log(self, worker: str) -> str | None:
        """The tail of a worker's log (where vLLM V1's engine writes why it failed), or None."""
        ...

    def registration(self, model_type: str, name: str) -> dict[str, Any] | None: ...
    def register(
        self, model_type: str, spec: Mapping[str, Any], *, persist: bool = True
    ) -> None: ...
    def unregister(self, model_type: str, name: str) -> None: ...


class EventSink(Protocol):
    def __call__(self, event: str, **fields: Any) -> None: ...


class StateStorePort(Protocol):
    """Where the ownership state lives between passes. ``save`` raises StateError when it cannot."""

    def load(self) -> OwnershipState: ...
    def save(self, state: OwnershipState) -> None: ...
