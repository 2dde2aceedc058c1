"""The only code that talks to Xinference: REST over ``requests`` with a timeout on every call.

Why not ``xinference_client.RESTfulClient``: its session has no timeout, its constructor already calls
the server (and raises if it is down), its errors are bare ``RuntimeError`` strings without the HTTP
status (so a 503 cannot be told from a 400), and it never refreshes a token. Everything it offers is
one documented REST call, so this module makes those calls itself (see docs/xinference-observed.md)
and translates failures into the project's error tree: no answer or 5xx -> TemporaryClusterError,
401/403 -> AuthError, other 4xx -> RequestRejected. Secrets never reach a message.

Wire-format parsing (``parse_cluster``) is a pure function over the three JSON answers one
observation needs: ``GET /status``, ``GET /v1/models/instances`` and ``GET /v1/models``.

The vLLM release of each worker is learned from its running vLLM models: ``GET
/v1/models/{uid}/reload/config`` answers ``engine_version`` (the ``vllm`` distribution in that model's
Python environment). The answer is kept for as long as the model stays READY on the same worker, and
a worker whose version is known is not asked again, so a pass with nothing new costs no extra call.
"""

from __future__ import annotations

import base64
import json
import re
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from types import MappingProxyType
from typing import Any
from urllib.parse import quote

import requests

from daemon.adapters.secrets import Credentials
from daemon.core.launch import launch_body, problems_text, request_problems
from daemon.core.observed import READY, GpuRef, GpuSnapshot, RunningModel, Worker
from daemon.core.planning import Launch
from daemon.errors import (
    AuthError,
    ClusterError,
    ModelNotFound,
    PermanentClusterError,
    RequestRejected,
    ServerUnavailable,
    TemporaryClusterError,
)

# Refresh an access token this long before it expires, or after three quarters of its life when
# tokens are short-lived (XINFERENCE_ACCESS_TOKEN_EXPIRE_MINUTES may be 1).
TOKEN_REFRESH_MARGIN_SECONDS = 120.0
LOG_TAIL_CHARS = 65536  # enough for the last start-up failures of a worker
_ACTOR_PREFIX = re.compile(r"^\[address=[^\]]*\]\s*")
# How the 4.1.0 server says it does not know a uid or a name (HTTP 400, not 404): "Model not found
# in the model list, uid: X", "Model not found, name: X", "Embedding model X not found". The only
# place that reads the server's words; everything else checks for ModelNotFound.
_NOT_FOUND = re.compile(r"\bnot found\b", re.IGNORECASE)


def _detail(response: requests.Response) -> str:
    """The server's ``detail`` text without the actor-address prefix, shortened."""
    try:
        body = response.json()
        text = body.get("detail", body) if isinstance(body, dict) else body
    except ValueError:
        text = response.text
    return _ACTOR_PREFIX.sub("", str(text)).strip()[:500]


def redact_url(url: str) -> str:
    """The URL without any ``user:password@`` part, for messages and events."""
    scheme, sep, rest = url.partition("://")
    host, slash, path = rest.partition("/")
    if "@" in host:
        host = "[redacted]@" + host.rsplit("@", 1)[1]
    return f"{scheme}{sep}{host}{slash}{path}"


def _jwt_expiry(token: str) -> float | None:
    """The ``exp`` claim of a JWT (read, not verified: the server verifies; we only plan refresh)."""
    try:
        payload = token.split(".")[1]
        payload += "=" * (-len(payload) % 4)
        exp = json.loads(base64.urlsafe_b64decode(payload)).get("exp")
        return float(exp) if exp is not None else None
    except (IndexError, ValueError, TypeError):
        return None


@dataclass(frozen=True, kw_only=True)
class InstanceState:
    """What ``/v1/models/instances`` says of one uid: status and the first error message."""

    status: str
    error_message: str | None = None


class XinferenceAdapter:
    """One Xinference endpoint. Thread-safe: launches on different GPUs run in parallel threads."""

    def __init__(
        self,
        *,
        endpoint: str,
        credentials: Credentials,
        timeout_seconds: float = 10.0,
        verify_tls: bool = True,
        ca_bundle: str | None = None,
        session: requests.Session | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.endpoint = endpoint.rstrip("/")
        self.shown_endpoint = redact_url(self.endpoint)  # what messages may say
        self.credentials = credentials
        self.timeout = timeout_seconds
        self._verify: bool | str = ca_bundle if (verify_tls and ca_bundle) else verify_tls
        self._session = session or requests.Session()
        self._session.trust_env = False  # never route a loopback cluster through an env proxy
        self._clock = clock
        self._lock = threading.Lock()
        self._access: str | None = None
        self._refresh: str | None = None
        self._expires_at: float | None = None
        self._margin = TOKEN_REFRESH_MARGIN_SECONDS
        self.calls = 0  # HTTP requests sent (the benchmark reads it)
        # uid -> (worker, vLLM version its engine reported; None: it could not say)
        self._vllm_versions: dict[str, tuple[str, str | None]] = {}

    # --- plumbing ------------------------------------------------------------------------------

    def _send(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        body: Any = None,
        token: str | None = None,
        timeout: float | None = None,
    ) -> requests.Response:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        wait = timeout or self.timeout
        self.calls += 1
        try:
            return self._session.request(
                method,
                self.endpoint + path,
                params=params,
                json=body,
                headers=headers,
                timeout=wait,
                verify=self._verify,
            )
        except requests.Timeout as exc:
            raise ServerUnavailable(
                f"no answer within {wait:g} s", method=method, path=path
            ) from exc
        except requests.ConnectionError as exc:
            raise ServerUnavailable(
                f"cannot connect to {self.shown_endpoint}", method=method, path=path
            ) from exc
        except (
            requests.exceptions.InvalidSchema,
            requests.exceptions.MissingSchema,
            requests.exceptions.InvalidURL,
        ) as exc:  # the entry points check endpoints first (core/addresses.py); never retry this
            raise PermanentClusterError(
                f"malformed endpoint {self.shown_endpoint!r}: expected an http:// or https:// URL",
                method=method,
                path=path,
            ) from exc
        except requests.RequestException as exc:
            raise TemporaryClusterError(exc.__class__.__name__, method=method, path=path) from exc

    def _scrub(self, text: str) -> str:
        """A server's words with our secret taken out (a server may echo a rejected request body)."""
        secret = self.credentials.secret
        return text.replace(secret, "[redacted]") if secret else text

    def _raise_for(self, method: str, path: str, response: requests.Response) -> None:
        code = response.status_code
        if code < 400:
            return
        detail = self._scrub(_detail(response))
        kind: type[ClusterError] = RequestRejected
        if code in (401, 403):
            kind = AuthError
        elif code in (408, 429) or code >= 500:
            kind = TemporaryClusterError
        elif code == 404 or _NOT_FOUND.search(detail):
            kind = ModelNotFound
        raise kind(detail, method=method, path=path, status=code)

    def request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        body: Any = None,
        auth: bool = True,
        timeout: float | None = None,
    ) -> Any:
        """One call, authenticated when the server wants it; a 401 re-authenticates once."""
        token = self._token() if auth else None
        response = self._send(method, path, params=params, body=body, token=token, timeout=timeout)
        if response.status_code == 401 and token is not None:
            token = self._token(force=True)
            response = self._send(
                method, path, params=params, body=body, token=token, timeout=timeout
            )
        self._raise_for(method, path, response)
        if not response.content:
            return None
        try:
            return response.json()
        except ValueError as exc:
            raise TemporaryClusterError(
                "answer is not JSON", method=method, path=path, status=response.status_code
            ) from exc

    # --- auth ----------------------------------------------------------------------------------

    def _token(self, *, force: bool = False) -> str | None:
        """A bearer token valid for at least the refresh margin, or None when auth is off."""
        if self.credentials.mode == "none":
            return None
        if self.credentials.mode == "api_key":
            return self.credentials.secret
        with self._lock:
            now = self._clock()
            fresh = self._expires_at is None or now < self._expires_at - self._margin
            if self._access and fresh and not force:
                return self._access
            if self._refresh and not force:
                try:
                    return self._store(
                        self._post_auth("/v1/auth/refresh", {"refresh_token": self._refresh})
                    )
                except AuthError:
                    pass  # rotated or expired: log in again below
            return self._store(
                self._post_auth(
                    "/token",
                    {"username": self.credentials.username, "password": self.credentials.secret},
                )
            )

    def _post_auth(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        response = self._send("POST", path, body=body)
        if response.status_code in (400, 401, 403):
            raise AuthError(
                f"{self._scrub(_detail(response))} "
                f"(user {self.credentials.username!r}, secret from {self.credentials.source})",
                method="POST",
                path=path,
                status=response.status_code,
            )
        self._raise_for("POST", path, response)
        answer = response.json()
        if not isinstance(answer, dict) or "access_token" not in answer:
            raise PermanentClusterError("the answer has no access_token", method="POST", path=path)
        return answer

    def _store(self, answer: dict[str, Any]) -> str:
        self._access = str(answer["access_token"])
        self._refresh = answer.get("refresh_token")
        self._expires_at = _jwt_expiry(self._access)
        lifetime = (self._expires_at or 0) - self._clock()
        self._margin = min(TOKEN_REFRESH_MARGIN_SECONDS, max(lifetime, 0) / 4)
        return self._access

    # --- reads ---------------------------------------------------------------------------------

    def raw_observation(self) -> tuple[Any, Any, Any]:
        """The three answers an observation is built from (3 HTTP calls)."""
        status = self.request("GET", "/status", auth=False)
        instances = self.request("GET", "/v1/models/instances")
        models = self.request("GET", "/v1/models")
        return status, instances, models

    def observe(self) -> tuple[tuple[Worker, ...], tuple[RunningModel, ...]]:
        workers, models = parse_cluster(*self.raw_observation())
        return self._with_vllm_versions(workers, models), models

    def engine_version(self, uid: str) -> str | None:
        """The vLLM version a running vLLM model reports (``/v1/models/{uid}/reload/config``);
        None when its engine is not vLLM or the server cannot say (one call)."""
        answer = self.request("GET", f"/v1/models/{quote(uid, safe='')}/reload/config")
        return parse_engine_version(answer)

    def _with_vllm_versions(
        self, workers: tuple[Worker, ...], models: tuple[RunningModel, ...]
    ) -> tuple[Worker, ...]:
        """``workers`` with the vLLM version their running vLLM models report. Asks only for READY
        vLLM models it has not asked about, and only on workers whose version is not known yet."""
        ready = {
            m.uid: m
            for m in models
            if m.status == READY and m.worker and (m.model_engine or "").lower() == "vllm"
        }
        for uid, (worker, _) in list(self._vllm_versions.items()):
            if uid not in ready or ready[uid].worker != worker:
                del self._vllm_versions[uid]  # gone or relaunched: its next engine may differ
        for uid in sorted(ready):
            worker = str(ready[uid].worker)
            if uid in self._vllm_versions or self._known_on(worker):
                continue
            try:
                version = self.engine_version(uid)
            except TemporaryClusterError:
                continue  # ask again next pass
            except ClusterError:
                version = None  # e.g. a multi-replica model: Xinference reloads one worker only
            self._vllm_versions[uid] = (worker, version)
        out = []
        for w in workers:
            seen = {v for worker, v in self._vllm_versions.values() if worker == w.address and v}
            version = next(iter(seen)) if len(seen) == 1 else None  # disagreeing venvs: unknown
            out.append(replace(w, vllm_version=version) if version != w.vllm_version else w)
        return tuple(out)

    def _known_on(self, worker: str) -> bool:
        return any(w == worker and v for w, v in self._vllm_versions.values())

    def instance_state(self, uid: str) -> InstanceState | None:
        """The launch state of one uid (None when the server does not know it)."""
        answer = self.request("GET", "/v1/models/instances", params={"model_uid": uid})
        for item in answer or []:
            if item.get("model_uid") == uid:
                return InstanceState(
                    status=_instance_status(item), error_message=_instance_error(item)
                )
        return None

    def engine_log(self, worker: str) -> str | None:
        """The tail of a worker's runtime log (``GET /v1/cluster/runtime-logs``): vLLM V1 prints
        why its engine failed there, while the launch's error says only that it failed."""
        try:
            answer = self.request("GET", "/v1/cluster/runtime-logs", params={"source": worker})
        except ClusterError:
            return None  # older servers, or no permission: the wrapper message is all there is
        if isinstance(answer, dict) and isinstance(answer.get("text"), str):
            return str(answer["text"])[-LOG_TAIL_CHARS:]
        return None

    def registration(self, model_type: str, name: str) -> dict[str, Any] | None:
        try:
            answer = self.request(
                "GET", f"/v1/model_registrations/{quote(model_type)}/{quote(name, safe='')}"
            )
        except ModelNotFound:
            return None
        return answer if isinstance(answer, dict) else None

    # --- writes --------------------------------------------------------------------------------

    def launch(self, launch: Launch) -> None:
        """Ask for a launch and return at once (``wait_ready=false``); poll instance_state after.
        A body that is not JSON is never sent (PermanentClusterError naming the key)."""
        unsendable = request_problems(launch, engine_args={})
        if unsendable:
            raise PermanentClusterError(
                f"the launch request cannot be sent: {problems_text(unsendable)}",
                method="POST",
                path="/v1/models",
            )
        self.request("POST", "/v1/models", params={"wait_ready": "false"}, body=launch_body(launch))

    def terminate(self, uid: str, *, loading: bool = False) -> bool:
        """Remove the uid's autostart entry, then terminate it. False when it was already gone.

        A model still loading is not in the worker's model list yet: ``DELETE`` answers "not
        found" and the load goes on. Its launch is cancelled instead (``POST .../cancel``); a load
        that finished meanwhile ("has not been launched yet" from the cancel) is deleted."""
        path = f"/v1/models/{quote(uid, safe='')}"
        self.request("DELETE", f"/v1/autostart/models/{quote(uid, safe='')}")
        if loading:
            try:
                self.request("POST", f"{path}/cancel")
                return True
            except (TemporaryClusterError, RequestRejected):
                pass  # it finished loading (or failed) meanwhile: terminate it as usual
        try:
            self.request("DELETE", path)
        except ModelNotFound:
            return False
        return True

    def register(self, model_type: str, spec: Mapping[str, Any], *, persist: bool = True) -> None:
        body = {"model": json.dumps(spec), "persist": persist}
        self.request("POST", f"/v1/model_registrations/{quote(model_type)}", body=body)

    def unregister(self, model_type: str, name: str) -> None:
        self.request(
            "DELETE", f"/v1/model_registrations/{quote(model_type)}/{quote(name, safe='')}"
        )


# --- parsing the wire format (pure) -----------------------------------------------------------


def _instance_status(item: Mapping[str, Any]) -> str:
    """The instance's status, trusting a replica's ERROR over an aggregate still saying CREATING."""
    replicas = item.get("replica_statuses") or []
    statuses = [str(r.get("status", "")) for r in replicas]
    top = str(item.get("status", "READY"))
    if replicas and all(s == "ERROR" for s in statuses):
        return "ERROR"
    if "ERROR" in statuses and top != "READY":
        return "ERROR"
    return top


def _instance_error(item: Mapping[str, Any]) -> str | None:
    for replica in item.get("replica_statuses") or []:
        if replica.get("error_message"):
            return _ACTOR_PREFIX.sub("", str(replica["error_message"]))[:500]
    return None


def _gpu_indexes(value: Any) -> tuple[int, ...]:
    if value is None:
        return ()
    if isinstance(value, int):
        return (value,)
    return tuple(int(v) for v in value)


def parse_engine_version(answer: Any) -> str | None:
    """``engine_version`` of a ``reload/config`` answer when its engine is vLLM, else None."""
    if not isinstance(answer, dict) or str(answer.get("engine", "")).lower() != "vllm":
        return None
    version = answer.get("engine_version")
    return version if isinstance(version, str) and version else None


def parse_workers(status: Any) -> tuple[Worker, ...]:
    """Workers and their GPUs from ``GET /status`` (``gpu-N`` entries: mem_total/mem_used, bytes)."""
    workers = []
    for address, info in sorted(((status or {}).get("workers") or {}).items()):
        gpus = []
        for key, gpu in ((info or {}).get("status") or {}).items():
            match = re.fullmatch(r"gpu-(\d+)", str(key))
            if not match or not isinstance(gpu, dict):
                continue
            total = int(gpu.get("mem_total") or 0)
            if total <= 0:
                continue  # a GPU entry without memory figures cannot be planned on
            used = gpu.get("mem_used")
            used = int(used) if used is not None else total - int(gpu.get("mem_free") or 0)
            gpus.append(
                GpuSnapshot(
                    ref=GpuRef(worker=address, index=int(match.group(1))),
                    name=str(gpu.get("name", "")),
                    total_bytes=total,
                    used_bytes=used,
                )
            )
        workers.append(Worker(address=address, gpus=tuple(sorted(gpus, key=lambda g: g.ref))))
    return tuple(workers)


def parse_cluster(
    status: Any, instances: Any, models: Any
) -> tuple[tuple[Worker, ...], tuple[RunningModel, ...]]:
    """The observed cluster from the three answers. Instances give status and placement (worker,
    GPU indexes); ``/v1/models`` adds engine, format, size and quantization for loaded models."""
    loaded = {m.get("id"): m for m in ((models or {}).get("data") or []) if isinstance(m, dict)}
    running = []
    for item in instances or []:
        uid = item.get("model_uid")
        if not uid:
            continue
        replicas = item.get("replica_statuses") or []
        live = [r for r in replicas if r.get("status") not in ("TERMINATED",)] or replicas
        worker = live[0].get("worker_address") if live else None
        gpu_indexes = tuple(
            i
            for r in live
            if r.get("worker_address") == worker
            for i in _gpu_indexes(r.get("gpu_idx"))
        )
        spec = loaded.get(uid, {})
        size = spec.get("model_size_in_billions")
        memory = {}
        for mem_worker, per_gpu in (spec.get("gpu_memory") or {}).items():
            for index, used in (per_gpu or {}).items():
                memory[GpuRef(worker=mem_worker, index=int(index))] = int(used)
        running.append(
            RunningModel(
                uid=uid,
                model_name=str(item.get("model_name") or spec.get("model_name") or ""),
                model_type=spec.get("model_type"),
                model_engine=spec.get("model_engine"),
                model_format=spec.get("model_format"),
                model_size_in_billions=None if size is None else str(size),
                quantization=spec.get("quantization"),
                replicas=int(spec.get("replica") or item.get("replica") or 1),
                status=_instance_status(item),
                worker=worker,
                gpu_indexes=gpu_indexes,
                gpu_memory=MappingProxyType(memory),
                error_message=_instance_error(item),
            )
        )
    return parse_workers(status), tuple(sorted(running, key=lambda m: m.uid))


__all__ = [
    "ClusterError",
    "InstanceState",
    "XinferenceAdapter",
    "launch_body",
    "parse_cluster",
    "parse_engine_version",
    "parse_workers",
]
