"""An in-memory Xinference for the reconciler's tests (a fake, not a mock: it keeps state and follows
the real server's rules where the reconciler can tell; tests/contract checks that)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from daemon.core.observed import GpuRef, RunningModel, Worker
from daemon.core.planning import Launch

_LAUNCH_400: dict[str, Any] = {"method": "POST", "path": "/v1/models", "status": 400}


@dataclass
class FakeInstance:
    uid: str
    model_name: str
    model_type: str
    engine: str | None
    status: str
    worker: str | None
    gpu_indexes: tuple[int, ...]
    claims: dict[GpuRef, int]
    error_message: str | None = None
    polls_left: int = 0
    body: dict[str, Any] = field(default_factory=dict)


@dataclass
class FakeInstanceState:
    status: str
    error_message: str | None = None


class FakeCluster:
    """An in-memory Xinference that behaves like the real 4.1.0 server where the reconciler can tell
    (the contract suite in tests/contract runs against both):

    - a launch answers at once; the instance is CREATING for ``polls_to_ready`` observations (or
      instance_state polls), then READY; ``hang`` keeps the listed uids CREATING for ever;
    - an unknown model name, or a uid scripted in ``fail``, ends in ERROR with a message;
    - an ERROR instance cannot be terminated ("not found") but its uid can be launched again;
    - a live uid cannot be launched twice; ``worker_ip`` must name a worker (cluster mode);
    - a READY model holds its planned bytes on its GPUs.

    Fault injection: ``down`` makes every call raise ServerUnavailable; ``fail`` maps uid -> error.
    """

    def __init__(
        self,
        workers: tuple[Worker, ...] = (),
        *,
        known_models: frozenset[str] = frozenset(),
        polls_to_ready: int = 1,
        local_mode: bool = False,
    ) -> None:
        self.workers = workers or (Worker(address="127.0.0.1:30001"),)
        self.instances: dict[str, FakeInstance] = {}
        self.registrations: dict[tuple[str, str], dict[str, Any]] = {}
        self.known_models = set(known_models)
        self.polls_to_ready = polls_to_ready
        self.local_mode = local_mode
        self.fail: dict[str, str] = {}
        self.hang: set[str] = set()
        self.logs: dict[str, str] = {}
        self.down = False
        self.calls = 0
        self.log: list[tuple[str, str]] = []

    def _call(self, what: str, uid: str = "") -> None:
        from daemon.errors import ServerUnavailable

        self.calls += 1
        if self.down:
            raise ServerUnavailable("cannot connect to the fake cluster", method=what, path="/")
        self.log.append((what, uid))

    def _used(self) -> dict[GpuRef, int]:
        used = {g.ref: g.used_bytes for w in self.workers for g in w.gpus}
        for inst in self.instances.values():
            if inst.status != "ERROR":
                for ref, held in inst.claims.items():
                    used[ref] = used.get(ref, 0) + held
        return used

    def _progress(self, inst: FakeInstance) -> None:
        """One look at a loading instance brings it one step nearer READY."""
        if inst.status == "CREATING" and inst.uid not in self.hang:
            inst.polls_left -= 1
            if inst.polls_left <= 0:
                inst.status = "READY"

    def observe(self) -> tuple[tuple[Worker, ...], tuple[RunningModel, ...]]:
        self._call("observe")
        for inst in self.instances.values():
            self._progress(inst)
        used = self._used()
        workers = tuple(
            Worker(
                address=w.address, gpus=tuple(replace(g, used_bytes=used[g.ref]) for g in w.gpus)
            )
            for w in self.workers
        )
        models = []
        for inst in sorted(self.instances.values(), key=lambda i: i.uid):
            size = inst.body.get("model_size_in_billions")
            models.append(
                RunningModel(
                    uid=inst.uid,
                    model_name=inst.model_name,
                    model_type=inst.model_type if inst.status == "READY" else None,
                    model_engine=inst.engine if inst.status == "READY" else None,
                    model_format=inst.body.get("model_format") if inst.status == "READY" else None,
                    model_size_in_billions=None
                    if size is None or inst.status != "READY"
                    else str(size),
                    quantization=inst.body.get("quantization") if inst.status == "READY" else None,
                    replicas=int(inst.body.get("replica", 1)),
                    status=inst.status,
                    worker=inst.worker,
                    gpu_indexes=inst.gpu_indexes,
                    error_message=inst.error_message,
                )
            )
        return workers, tuple(models)

    def launch(self, launch: Launch) -> None:
        from daemon.core.launch import launch_body, problems_text, request_problems
        from daemon.errors import PermanentClusterError, RequestRejected

        unsendable = request_problems(launch, engine_args={})
        if unsendable:  # as the real adapter: never sent
            raise PermanentClusterError(
                f"the launch request cannot be sent: {problems_text(unsendable)}",
                method="POST",
                path="/v1/models",
            )
        self._call("launch", launch.uid)
        current = self.instances.get(launch.uid)
        if current is not None and current.status != "ERROR":
            raise RequestRejected(
                f"Model is already in the model list, uid: {launch.uid}", **_LAUNCH_400
            )
        worker = launch.worker
        addresses = [w.address for w in self.workers]
        if worker is not None and not self.local_mode and worker not in addresses:
            raise RequestRejected(
                f"Worker ip address {worker} is not in the cluster.", **_LAUNCH_400
            )
        if worker is None or self.local_mode:
            worker = addresses[0]
        known = launch.model_name in self.known_models or any(
            name == launch.model_name for _, name in self.registrations
        )
        error = self.fail.get(launch.uid) or (
            None if known else f"{launch.model_type} model {launch.model_name} not found"
        )
        self.instances[launch.uid] = FakeInstance(
            uid=launch.uid,
            model_name=launch.model_name,
            model_type=launch.model_type,
            engine=launch.launch_args.get("model_engine"),
            status="ERROR" if error else "CREATING",
            worker=worker,
            gpu_indexes=launch.gpu_indexes,
            claims={} if error else dict(launch.claims),
            error_message=error,
            polls_left=self.polls_to_ready,
            body=launch_body(launch),
        )

    def instance_state(self, uid: str) -> FakeInstanceState | None:
        self._call("instance_state", uid)
        inst = self.instances.get(uid)
        if inst is None:
            return None
        self._progress(inst)
        return FakeInstanceState(status=inst.status, error_message=inst.error_message)

    def terminate(self, uid: str, *, loading: bool = False) -> bool:
        """Like the real server: a loading model is not found by DELETE (its load goes on) and
        is stopped by cancelling its launch."""
        self._call("terminate", uid)
        inst = self.instances.get(uid)
        if inst is None or inst.status == "ERROR":
            return False
        if inst.status == "CREATING" and not loading:
            return False
        del self.instances[uid]
        return True

    def engine_log(self, worker: str) -> str | None:
        """What a test wrote into ``logs[worker]`` (the worker's runtime log tail)."""
        self._call("engine_log", worker)
        return self.logs.get(worker)

    def registration(self, model_type: str, name: str) -> dict[str, Any] | None:
        self._call("registration", name)
        stored = self.registrations.get((model_type, name))
        return None if stored is None else {**stored, "is_builtin": False}  # as the server says

    def register(self, model_type: str, spec: Mapping[str, Any], *, persist: bool = True) -> None:
        from daemon.errors import RequestRejected

        del persist
        self._call("register", str(spec.get("model_name")))
        key = (model_type, str(spec["model_name"]))
        if key in self.registrations:
            raise RequestRejected(
                f"Model {key[1]} already registered",
                method="POST",
                path=f"/v1/model_registrations/{model_type}",
                status=400,
            )
        self.registrations[key] = dict(spec)

    def unregister(self, model_type: str, name: str) -> None:
        self._call("unregister", name)
        self.registrations.pop((model_type, name), None)

    def kill(self, uid: str) -> None:
        """Out-of-band termination (a colleague's click, a crash)."""
        self.instances.pop(uid, None)

    def start_by_hand(
        self, uid: str, *, model_name: str = "m", model_type: str = "LLM", engine: str | None = None
    ) -> None:
        """Out-of-band launch (a colleague's click): READY at once, on the first worker, no GPU."""
        self.instances[uid] = FakeInstance(
            uid=uid,
            model_name=model_name,
            model_type=model_type,
            engine=engine,
            status="READY",
            worker=self.workers[0].address,
            gpu_indexes=(),
            claims={},
            body={"model_engine": engine} if engine else {},
        )
