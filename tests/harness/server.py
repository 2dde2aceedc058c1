"""Start and stop a REAL Xinference 4.1.0 server (CPU only) on loopback for integration tests.

Plain standard library only: the project's tests import this module without xinference (which lives
in its own venv, ``.venv-xinference``, see ``scripts/install-xinference-server.sh``).

Main entry points:

* :func:`find_server_venv`, :func:`free_port`
* :class:`XinferenceServer` -- ``xinference-local`` (one node: supervisor + one worker)
* :class:`XinferenceCluster` -- ``xinference-supervisor`` + N ``xinference-worker`` processes, with
  stop / kill / restart of one worker or of the supervisor for fault tests
* :func:`build_tiny_models` -- runs ``tiny_models.py`` with the server venv's python
* :func:`admin_setup`, :func:`login`, :func:`register_custom_models`, :func:`launch_model`,
  :func:`wait_instance`, :func:`terminate_model`, :func:`http_json`

Every process gets its own temporary ``XINFERENCE_HOME`` and the offline environment
(``HF_HUB_OFFLINE=1``, ``TRANSFORMERS_OFFLINE=1``, ``XINFERENCE_ENABLE_VIRTUAL_ENV=0``), plus a
unique ``XR_HARNESS_TAG`` so that :func:`tagged_pids` can find every descendant (model
subprocesses included) and :meth:`XinferenceProcess.stop` can make sure none survives.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[2]
HARNESS_DIR = Path(__file__).resolve().parent
TAG_ENV = "XR_HARNESS_TAG"
READY_TIMEOUT_S = 120.0

# Session id of every harness process started in this Python process (each start is a new session
# whose id is the pid it got). Model processes rewrite their environment block (setproctitle), so
# XR_HARNESS_TAG cannot find them; their session can: tests/harness/leaks.py looks for leftovers in
# these sessions at the end of every test and of the run.
STARTED_SESSIONS: list[int] = []

# Names under which the harness registers the tiny models.
EMBEDDING_MODEL = "xr-tiny-embedding"
LLM_MODEL = "xr-tiny-llm"
RERANK_MODEL = "xr-tiny-rerank"


class HarnessError(RuntimeError):
    """The harness could not do what was asked (server did not start, venv missing...)."""


# --------------------------------------------------------------------------------------------
# venv, ports, environment
# --------------------------------------------------------------------------------------------


def find_server_venv() -> Path:
    """The venv holding xinference 4.1.0: ``$XR_XINFERENCE_VENV`` or ``<repo>/.venv-xinference``."""
    raw = os.environ.get("XR_XINFERENCE_VENV")
    venv = Path(raw).expanduser() if raw else REPO_ROOT / ".venv-xinference"
    needed = [
        venv / "bin" / n
        for n in ("python", "xinference-local", "xinference-supervisor", "xinference-worker")
    ]
    missing = [str(p) for p in needed if not p.exists()]
    if missing:
        raise HarnessError(
            f"Xinference server venv not usable at {venv} (missing: {', '.join(missing)}). "
            "Create it with scripts/install-xinference-server.sh or point XR_XINFERENCE_VENV at one."
        )
    return venv


def server_venv_available() -> bool:
    try:
        find_server_venv()
        return True
    except HarnessError:
        return False


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port free on ``host`` right now (bind to port 0 and release)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((host, 0))
        return s.getsockname()[1]


def server_env(
    home: Path,
    *,
    auth: bool,
    tag: str,
    extra: Mapping[str, str] | None = None,
    venv: Path | None = None,
) -> dict:
    """Environment for one xinference process: offline, no per-model venvs, own home."""
    venv = venv or find_server_venv()
    env = dict(os.environ)
    # Never leak a project venv / proxy settings into the server.
    for k in (
        "VIRTUAL_ENV",
        "PYTHONPATH",
        "PYTHONHOME",
        "http_proxy",
        "https_proxy",
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "all_proxy",
        "ALL_PROXY",
    ):
        env.pop(k, None)
    env.update(
        {
            "XINFERENCE_HOME": str(home),
            "HF_HUB_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1",
            "HF_DATASETS_OFFLINE": "1",
            "XINFERENCE_ENABLE_VIRTUAL_ENV": "0",
            "XINFERENCE_MODEL_SRC": "huggingface",
            "TOKENIZERS_PARALLELISM": "false",
            "NO_PROXY": "127.0.0.1,localhost",
            "no_proxy": "127.0.0.1,localhost",
            "PATH": f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}",
            TAG_ENV: tag,
        }
    )
    if not auth:
        env["XINFERENCE_AUTH_ADVANCED"] = "false"
    else:
        env.pop("XINFERENCE_AUTH_ADVANCED", None)
    if extra:
        env.update(extra)  # an explicit PYTHONPATH here is kept (FakeVllm.env uses that)
    return env


# --------------------------------------------------------------------------------------------
# opt-in: the FAKE vllm package (tests/harness/fake_vllm/README.md)
# --------------------------------------------------------------------------------------------

FAKE_VLLM_PATH = HARNESS_DIR / "fake_vllm"  # holds the package directory ``vllm``


class FakeVllm:
    """The test-only fake ``vllm`` package for one server, with its files under ``root``.

    ``XinferenceServer(extra_env=fake.env())`` puts the package on the server's import path
    (``PYTHONPATH``, which :func:`server_env` otherwise strips), so ``model_engine="vLLM"`` works
    on a CPU-only box. Every engine construction is recorded (:meth:`record`); :meth:`script`
    makes a later construction fail. ``version`` is ``vllm.__version__`` and the version of the
    ``vllm`` distribution metadata written under ``root/site``; ``reply`` is the text every
    generation answers. Details in ``fake_vllm/vllm/_fake.py``.
    """

    def __init__(self, root: Path, *, version: str | None = None, reply: str | None = None):
        self.root = Path(root)
        self.record_dir = self.root / "record"
        self.script_dir = self.root / "script"
        self.site_dir = self.root / "site"
        self.version = version or "0.11.0"  # the default of fake_vllm/vllm/_fake.py
        self.reply = reply
        for d in (self.record_dir, self.script_dir, self.site_dir):
            d.mkdir(parents=True, exist_ok=True)
        dist_info = self.site_dir / f"vllm-{self.version}.dist-info"
        dist_info.mkdir(exist_ok=True)
        (dist_info / "METADATA").write_text(
            f"Metadata-Version: 2.1\nName: vllm\nVersion: {self.version}\n"
        )

    def env(self) -> dict:
        env = {
            "PYTHONPATH": os.pathsep.join([str(FAKE_VLLM_PATH), str(self.site_dir)]),
            "XR_FAKE_VLLM_RECORD": str(self.record_dir),
            "XR_FAKE_VLLM_SCRIPT": str(self.script_dir),
            "XR_FAKE_VLLM_VERSION": self.version,
        }
        if self.reply is not None:
            env["XR_FAKE_VLLM_REPLY"] = self.reply
        return env

    def script(self, key: str, **script: Any) -> None:
        """Script the constructions selected by ``key``: a model uid, ``max_model_len=<N>`` or
        ``default``; e.g. ``script(uid, outcome="raise", exception="ValueError", message=...)``."""
        (self.script_dir / f"{key}.json").write_text(json.dumps(script))

    def record(self, model_uid: str) -> dict:
        """The latest engine construction of ``model_uid`` (raises if there was none)."""
        return json.loads((self.record_dir / f"{model_uid}.json").read_text())

    def records(self, model_uid: str) -> list[dict]:
        """Every engine construction of ``model_uid``, oldest first."""
        path = self.record_dir / f"{model_uid}.jsonl"
        if not path.exists():
            return []
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


# --------------------------------------------------------------------------------------------
# process bookkeeping
# --------------------------------------------------------------------------------------------


def _stat_fields(pid_dir: Path) -> list[str] | None:
    """Fields of /proc/PID/stat after the command name: state, ppid, pgrp, session, ..."""
    try:
        stat = (pid_dir / "stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[-1].split()


def tagged_pids(tag: str, sessions: Iterable[int] = ()) -> list[int]:
    """PIDs of live (non-zombie) processes that carry ``XR_HARNESS_TAG=tag`` in their environment
    or belong to one of ``sessions`` (every harness process starts its own session; model
    processes whose environment block was rewritten by setproctitle are found that way)."""
    needle = f"{TAG_ENV}={tag}".encode()
    sessions = {int(s) for s in sessions}
    out = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        fields = _stat_fields(entry)
        if not fields or fields[0] == "Z":
            continue
        if sessions and int(fields[3]) in sessions:
            out.append(int(entry.name))
            continue
        try:
            data = (entry / "environ").read_bytes()
        except (OSError, PermissionError):
            continue
        if needle in data.split(b"\0"):
            out.append(int(entry.name))
    return sorted(out)


def _descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[-1].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    out, todo = [], [pid]
    while todo:
        for c in children.get(todo.pop(), []):
            out.append(c)
            todo.append(c)
    return out


def _kill_quietly(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, sig)


class XinferenceProcess:
    """One xinference command (local / supervisor / worker) in its own process group.

    Output (stdout + stderr) goes to ``log_path``. ``tag`` is exported as ``XR_HARNESS_TAG`` so
    every descendant can be found even after it has been re-parented.
    """

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        env: Mapping[str, str],
        log_path: Path,
        tag: str | None = None,
        sessions: list | None = None,
    ):
        self.name = name
        # session ids of every start (each start is a new session); may be shared by a cluster
        self.sessions: list = sessions if sessions is not None else []
        self.argv = list(argv)
        self.env = dict(env)
        self.tag = tag or self.env.get(TAG_ENV) or uuid.uuid4().hex
        self.env[TAG_ENV] = self.tag
        self.log_path = Path(log_path)
        self.proc: subprocess.Popen | None = None
        self.started_at: float | None = None

    # -- lifecycle --------------------------------------------------------------------------
    def start(self) -> XinferenceProcess:
        if self.proc is not None and self.alive():
            raise HarnessError(f"{self.name} already running (pid {self.proc.pid})")
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "ab")
        log.write(f"\n===== harness: starting {' '.join(self.argv)} at {time.ctime()}\n".encode())
        log.flush()
        try:
            self.proc = subprocess.Popen(
                self.argv,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                cwd=str(self.log_path.parent),
            )
        finally:
            log.close()
        self.sessions.append(self.proc.pid)
        STARTED_SESSIONS.append(self.proc.pid)
        self.started_at = time.monotonic()
        return self

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def _group_pids(self) -> list[int]:
        if not self.proc:
            return []
        pids = set(_descendants(self.proc.pid))
        if self.alive():
            pids.add(self.proc.pid)
        # the session of the current start: children re-parented to init are still in it
        pids.update(p for p in tagged_pids("-", [self.proc.pid]) if p != os.getpid())
        return sorted(pids)

    def signal_group(self, sig: int) -> None:
        """Send ``sig`` to the process group and to every known descendant."""
        if not self.proc:
            return
        targets = self._group_pids()
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, sig)
        for pid in targets:
            _kill_quietly(pid, sig)

    def stop(self, timeout: float = 20.0) -> None:
        """SIGTERM the group, wait, then SIGKILL whatever is left (descendants included)."""
        if not self.proc:
            return
        remembered = set(self._group_pids())
        if self.alive():
            self.signal_group(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=timeout)
        # whatever is still there (the main process, or children re-parented to init)
        deadline = time.monotonic() + min(timeout, 10.0)
        while time.monotonic() < deadline:
            left = [p for p in remembered | set(self._group_pids()) if _pid_alive(p)]
            if not left and not self.alive():
                break
            time.sleep(0.2)
        self.kill()

    def kill(self) -> None:
        """SIGKILL the main process, its group and all its descendants at once."""
        if not self.proc:
            return
        targets = set(self._group_pids())
        self.signal_group(signal.SIGKILL)
        for pid in targets:
            _kill_quietly(pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=10)

    def kill_main_only(self, sig: int = signal.SIGKILL) -> None:
        """Signal only the main process (children live on until the group is stopped)."""
        if self.proc is not None and self.alive():
            _kill_quietly(self.proc.pid, sig)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=10)

    # -- log --------------------------------------------------------------------------------
    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def log_tail(self, lines: int = 60) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])


def _pid_alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"


def kill_tagged(tag: str, sessions: Iterable[int] = (), timeout: float = 5.0) -> list[int]:
    """SIGTERM then SIGKILL every process found by :func:`tagged_pids`; returns those found."""
    sessions = list(sessions)
    found = tagged_pids(tag, sessions)
    for pid in found:
        _kill_quietly(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and tagged_pids(tag, sessions):
        time.sleep(0.2)
    for pid in tagged_pids(tag, sessions):
        _kill_quietly(pid, signal.SIGKILL)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and tagged_pids(tag, sessions):
        time.sleep(0.1)
    return found


# --------------------------------------------------------------------------------------------
# plain HTTP
# --------------------------------------------------------------------------------------------


@dataclass
class HttpResult:
    status: int
    body: Any  # parsed JSON when possible, else text
    headers: dict = field(default_factory=dict)
    elapsed_s: float = 0.0

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300

    def detail(self) -> str:
        if isinstance(self.body, dict) and "detail" in self.body:
            return str(self.body["detail"])
        return str(self.body)


class HttpError(HarnessError):
    def __init__(self, method: str, url: str, result: HttpResult):
        super().__init__(f"{method} {url} -> {result.status}: {str(result.body)[:2000]}")
        self.result = result
        self.status = result.status


def http(
    method: str,
    url: str,
    body: Any = None,
    *,
    token: str | None = None,
    params: Mapping[str, Any] | None = None,
    timeout: float = 30.0,
    headers: Mapping[str, str] | None = None,
) -> HttpResult:
    """One HTTP request with urllib; never raises for HTTP status codes (only for I/O errors)."""
    if params:
        url = f"{url}?{urllib.parse.urlencode({k: _qs(v) for k, v in params.items()})}"
    data = None
    hdrs = {"Accept": "application/json"}
    if body is not None:
        data = json.dumps(body).encode()
        hdrs["Content-Type"] = "application/json"
    if token:
        hdrs["Authorization"] = f"Bearer {token}"
    if headers:
        hdrs.update(headers)
    req = urllib.request.Request(url, data=data, method=method, headers=hdrs)
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    t0 = time.monotonic()
    try:
        with opener.open(req, timeout=timeout) as resp:
            raw, status, rh = resp.read(), resp.status, dict(resp.headers)
    except urllib.error.HTTPError as e:
        raw, status, rh = e.read(), e.code, dict(e.headers or {})
    elapsed = time.monotonic() - t0
    text = raw.decode("utf-8", errors="replace")
    try:
        parsed: Any = json.loads(text) if text else None
    except ValueError:
        parsed = text
    return HttpResult(status, parsed, rh, elapsed)


def _qs(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    return str(v)


def http_json(
    method: str,
    url: str,
    body: Any = None,
    *,
    token: str | None = None,
    params: Mapping[str, Any] | None = None,
    timeout: float = 30.0,
    expect: Iterable[int] = (200, 201),
) -> Any:
    """Like :func:`http` but raises :class:`HttpError` unless the status is in ``expect``."""
    r = http(method, url, body, token=token, params=params, timeout=timeout)
    if r.status not in tuple(expect):
        raise HttpError(method, url, r)
    return r.body


def get_status(base_url: str, timeout: float = 5.0) -> dict | None:
    """``GET /status`` (no auth needed) or None when the server does not answer (yet)."""
    try:
        r = http("GET", f"{base_url}/status", timeout=timeout)
    except (OSError, urllib.error.URLError):
        return None
    return r.body if r.status == 200 and isinstance(r.body, dict) else None


def worker_addresses(status: dict | None) -> list[str]:
    if not status:
        return []
    workers = status.get("workers") or {}
    return sorted(workers) if isinstance(workers, dict) else []


# --------------------------------------------------------------------------------------------
# auth helpers
# --------------------------------------------------------------------------------------------


SETUP_TOKEN_RE = re.compile(r"Setup token:\s*(\S+)")


def parse_setup_token(log_text: str) -> str | None:
    found = SETUP_TOKEN_RE.findall(log_text)
    return found[-1] if found else None


def admin_setup(base_url: str, setup_token: str, username: str, password: str) -> Any:
    """``POST /v1/admin/setup`` -- creates the first admin of a fresh auth-on server."""
    return http_json(
        "POST",
        f"{base_url}/v1/admin/setup",
        {"setup_token": setup_token, "username": username, "password": password},
        expect=(200, 201),
    )


def login_full(base_url: str, username: str, password: str) -> dict:
    """``POST /token`` -> ``{access_token, refresh_token, token_type, ...}``."""
    return http_json("POST", f"{base_url}/token", {"username": username, "password": password})


def login(base_url: str, username: str, password: str) -> str:
    """Access token of ``username`` (``POST /token``)."""
    return login_full(base_url, username, password)["access_token"]


def refresh(base_url: str, refresh_token: str) -> dict:
    return http_json("POST", f"{base_url}/v1/auth/refresh", {"refresh_token": refresh_token})


# --------------------------------------------------------------------------------------------
# tiny models and their registration
# --------------------------------------------------------------------------------------------


def build_tiny_models(outdir: Path, venv: Path | None = None, timeout: float = 300) -> dict:
    """Run ``tiny_models.py OUTDIR`` with the server venv's python; returns its JSON."""
    venv = venv or find_server_venv()
    env = server_env(
        Path(outdir) / ".home", auth=False, tag="tiny-models-" + uuid.uuid4().hex, venv=venv
    )
    r = subprocess.run(
        [str(venv / "bin" / "python"), str(HARNESS_DIR / "tiny_models.py"), str(outdir)],
        check=False,  # the return code is checked below, with the script's stderr
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if r.returncode != 0:
        raise HarnessError(f"tiny_models.py failed ({r.returncode}):\n{r.stderr[-4000:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def embedding_registration(path: str, name: str = EMBEDDING_MODEL) -> dict:
    return {
        "version": 2,
        "model_name": name,
        "dimensions": 384,
        "max_tokens": 256,
        "language": ["en"],
        "model_specs": [
            {
                "model_format": "pytorch",
                "model_hub": "huggingface",
                "model_id": None,
                "model_uri": str(path),
                "model_revision": None,
                "quantization": "none",
            }
        ],
    }


def llm_registration(
    path: str,
    chat_template: str,
    stop_token_ids: list[int],
    stop: list[str],
    name: str = LLM_MODEL,
    abilities: Sequence[str] = ("chat",),
) -> dict:
    return {
        "version": 2,
        "context_length": 2048,
        "model_name": name,
        "model_lang": ["en"],
        "model_ability": list(abilities),
        "model_description": "random-weight 2-layer Qwen2 for tests",
        "model_family": "qwen2.5-instruct",
        "model_specs": [
            {
                "model_format": "pytorch",
                "model_size_in_billions": "0_001",
                "quantization": "none",
                "model_id": None,
                "model_hub": "huggingface",
                "model_uri": str(path),
                "model_revision": None,
            }
        ],
        "chat_template": chat_template,
        "stop_token_ids": list(stop_token_ids),
        "stop": list(stop),
    }


def rerank_registration(path: str, name: str = RERANK_MODEL) -> dict:
    return {
        "version": 2,
        "model_name": name,
        "type": "normal",
        "language": ["en"],
        "max_tokens": 512,
        "model_specs": [
            {
                "model_format": "pytorch",
                "model_hub": "huggingface",
                "model_id": None,
                "model_uri": str(path),
                "model_revision": None,
                "quantization": "none",
            }
        ],
    }


def register_model(
    base_url: str,
    token: str | None,
    model_type: str,
    spec: dict,
    persist: bool = True,
    worker_ip: str | None = None,
) -> HttpResult:
    """``POST /v1/model_registrations/{model_type}`` with body
    ``{"model": <spec as a JSON *string*>, "persist": bool, "worker_ip": str|None}``."""
    body = {"model": json.dumps(spec), "persist": persist, "worker_ip": worker_ip}
    return http(
        "POST", f"{base_url}/v1/model_registrations/{model_type}", body, token=token, timeout=60
    )


def register_custom_models(
    base_url: str, token: str | None, paths: Mapping[str, Any], persist: bool = True
) -> dict:
    """Register the embedding, tiny LLM and rerank models; ``paths`` is tiny_models.py's JSON.

    Returns ``{"embedding": name, "LLM": name, "rerank": name}``. Already-registered names are
    accepted (idempotent), any other failure raises :class:`HttpError`.
    """
    specs = {
        "embedding": embedding_registration(paths["embedding"]),
        "LLM": llm_registration(
            paths["llm"], paths["llm_chat_template"], paths["llm_stop_token_ids"], paths["llm_stop"]
        ),
        "rerank": rerank_registration(paths["reranker"]),
    }
    names = {}
    for model_type, spec in specs.items():
        r = register_model(base_url, token, model_type, spec, persist=persist)
        if not r.ok and "already registered" not in r.detail():
            raise HttpError("POST", f"{base_url}/v1/model_registrations/{model_type}", r)
        names[model_type] = spec["model_name"]
    return names


# --------------------------------------------------------------------------------------------
# model helpers
# --------------------------------------------------------------------------------------------


def launch_model(
    base_url: str,
    token: str | None,
    body: Mapping[str, Any],
    *,
    wait_ready: bool = False,
    timeout: float = 300,
) -> HttpResult:
    """``POST /v1/models?wait_ready=...`` (``wait_ready`` is a QUERY parameter in 4.1.0)."""
    return http(
        "POST",
        f"{base_url}/v1/models",
        dict(body),
        token=token,
        params={"wait_ready": wait_ready},
        timeout=timeout,
    )


def instances(base_url: str, token: str | None, model_uid: str | None = None) -> list:
    params = {"model_uid": model_uid} if model_uid else None
    return http_json("GET", f"{base_url}/v1/models/instances", token=token, params=params)


def wait_instance(
    base_url: str,
    token: str | None,
    model_uid: str,
    until: Sequence[str] = ("READY", "ERROR"),
    timeout: float = 240,
    interval: float = 0.5,
    seen: list | None = None,
) -> dict:
    """Poll ``/v1/models/instances?model_uid=`` until the status is one of ``until``.

    ``seen`` (if given) collects every distinct ``(elapsed_s, instance-json)`` observed."""
    t0 = time.monotonic()
    last: dict | None = None
    while time.monotonic() - t0 < timeout:
        try:
            infos = instances(base_url, token, model_uid)
        except HttpError as e:
            infos = [{"status": f"HTTP {e.status}", "detail": e.result.body}]
        info = infos[0] if infos else {"status": None}
        if seen is not None and info.get("status") != (last or {}).get("status"):
            seen.append((round(time.monotonic() - t0, 2), info))
        last = info
        if info.get("status") in until:
            return info
        time.sleep(interval)
    raise HarnessError(f"model {model_uid} not in {until} after {timeout}s; last: {last}")


def terminate_model(base_url: str, token: str | None, model_uid: str) -> HttpResult:
    return http("DELETE", f"{base_url}/v1/models/{model_uid}", token=token, timeout=120)


def list_models(base_url: str, token: str | None) -> list:
    return http_json("GET", f"{base_url}/v1/models", token=token)["data"]


# --------------------------------------------------------------------------------------------
# servers
# --------------------------------------------------------------------------------------------


def _wait_for_workers(
    base_url: str, n: int, procs: Sequence[XinferenceProcess], timeout: float, exact: bool = False
) -> dict:
    t0 = time.monotonic()
    while True:
        for p in procs:
            if p.proc is not None and not p.alive():
                raise HarnessError(
                    f"{p.name} exited with {p.proc.returncode} while waiting for readiness; "
                    f"log {p.log_path}:\n{p.log_tail()}"
                )
        status = get_status(base_url)
        have = len(worker_addresses(status))
        if status is not None and (have == n if exact else have >= n):
            return status
        if time.monotonic() - t0 > timeout:
            tails = "\n".join(f"--- {p.name} ({p.log_path}):\n{p.log_tail()}" for p in procs)
            raise HarnessError(
                f"Xinference at {base_url} not ready after {timeout:.0f}s "
                f"({have}/{n} workers in /status)\n{tails}"
            )
        time.sleep(0.5)


class _Base:
    tag: str
    home_root: Path
    _own_tmp: bool

    def _cleanup_tmp(self) -> None:
        if self._own_tmp and os.environ.get("XR_HARNESS_KEEP_HOME") != "1":
            shutil.rmtree(self.home_root, ignore_errors=True)

    sessions: list

    def start(self, timeout: float = READY_TIMEOUT_S) -> _Base:
        raise NotImplementedError  # XinferenceServer, XinferenceCluster

    def stop(self, timeout: float = 20.0) -> None:
        raise NotImplementedError  # XinferenceServer, XinferenceCluster

    def leftover_pids(self) -> list[int]:
        """Live processes started by this server/cluster (should be [] after stop())."""
        return tagged_pids(self.tag, self.sessions)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


class XinferenceServer(_Base):
    """``xinference-local --host 127.0.0.1 --port P`` (supervisor + one worker in one tree)."""

    def __init__(
        self,
        *,
        auth: bool = False,
        port: int | None = None,
        home_root: Path | None = None,
        venv: Path | None = None,
        extra_env: Mapping[str, str] | None = None,
        log_level: str = "INFO",
    ):
        self.venv = venv or find_server_venv()
        self.auth = auth
        self.port = port or free_port()
        self._own_tmp = home_root is None
        self.home_root = Path(home_root or tempfile.mkdtemp(prefix="xr-xinf-"))
        self.home = self.home_root / "home"
        self.home.mkdir(parents=True, exist_ok=True)
        self.tag = uuid.uuid4().hex
        self.sessions = []
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.setup_token: str | None = None
        self.start_seconds: float | None = None
        env = server_env(self.home, auth=auth, tag=self.tag, extra=extra_env, venv=self.venv)
        self.process = XinferenceProcess(
            "xinference-local",
            [
                str(self.venv / "bin" / "xinference-local"),
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--log-level",
                log_level,
            ],
            env,
            self.home_root / "xinference-local.log",
            tag=self.tag,
            sessions=self.sessions,
        )

    @property
    def log_path(self) -> Path:
        return self.process.log_path

    def start(self, timeout: float = READY_TIMEOUT_S) -> XinferenceServer:
        t0 = time.monotonic()
        self.process.start()
        try:
            _wait_for_workers(self.base_url, 1, [self.process], timeout)
            if self.auth:
                self.setup_token = self._find_setup_token(timeout=15)
        except BaseException:
            self.stop()
            raise
        self.start_seconds = time.monotonic() - t0
        return self

    def _find_setup_token(self, timeout: float) -> str | None:
        t0 = time.monotonic()
        while time.monotonic() - t0 < timeout:
            tok = parse_setup_token(self.process.log_text())
            if tok:
                return tok
            for f in (
                sorted((self.home / "logs").rglob("*.log")) if (self.home / "logs").exists() else []
            ):
                tok = parse_setup_token(f.read_text(errors="replace"))
                if tok:
                    return tok
            time.sleep(0.3)
        r = http("GET", f"{self.base_url}/v1/admin/setup/status")
        if isinstance(r.body, dict) and r.body.get("needs_setup") is False:
            return None  # already set up (reused home)
        raise HarnessError(
            f"no 'Setup token:' in the log of {self.base_url}:\n{self.process.log_tail()}"
        )

    def stop(self, timeout: float = 20.0) -> None:
        self.process.stop(timeout=timeout)
        kill_tagged(self.tag, self.sessions)
        self._cleanup_tmp()

    def restart(self, timeout: float = READY_TIMEOUT_S) -> XinferenceServer:
        """Stop and start again on the same port and the same XINFERENCE_HOME."""
        self.process.stop()
        kill_tagged(self.tag, self.sessions)
        return self.start(timeout=timeout)

    def status(self) -> dict | None:
        return get_status(self.base_url)


class XinferenceCluster(_Base):
    """``xinference-supervisor`` + ``n_workers`` ``xinference-worker`` processes on 127.0.0.1.

    Each process has its own ``XINFERENCE_HOME`` under ``home_root`` (as on separate hosts).
    Worker ``i`` listens on ``worker_ports[i]``; its address in ``/status`` and in
    ``worker_ip`` is ``127.0.0.1:<port>`` (``worker_address(i)``).
    """

    def __init__(
        self,
        n_workers: int = 2,
        *,
        auth: bool = False,
        port: int | None = None,
        home_root: Path | None = None,
        venv: Path | None = None,
        extra_env: Mapping[str, str] | None = None,
        log_level: str = "INFO",
    ):
        self.venv = venv or find_server_venv()
        self.auth = auth
        self.n_workers = n_workers
        self.port = port or free_port()
        self.supervisor_port = free_port()
        self.worker_ports = [free_port() for _ in range(n_workers)]
        self.metrics_ports = [free_port() for _ in range(n_workers)]
        self._own_tmp = home_root is None
        self.home_root = Path(home_root or tempfile.mkdtemp(prefix="xr-xinf-cluster-"))
        self.tag = uuid.uuid4().hex
        self.sessions = []
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.setup_token: str | None = None
        self.start_seconds: float | None = None
        self._extra_env = extra_env
        self._log_level = log_level
        home = self.home_root / "supervisor"
        home.mkdir(parents=True, exist_ok=True)
        self.supervisor = XinferenceProcess(
            "xinference-supervisor",
            [
                str(self.venv / "bin" / "xinference-supervisor"),
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--supervisor-port",
                str(self.supervisor_port),
                "--log-level",
                log_level,
            ],
            server_env(home, auth=auth, tag=self.tag, extra=extra_env, venv=self.venv),
            self.home_root / "supervisor.log",
            tag=self.tag,
            sessions=self.sessions,
        )
        self.workers = [self._make_worker(i) for i in range(n_workers)]

    def _make_worker(self, i: int) -> XinferenceProcess:
        home = self.home_root / f"worker-{i}"
        home.mkdir(parents=True, exist_ok=True)
        return XinferenceProcess(
            f"xinference-worker-{i}",
            [
                str(self.venv / "bin" / "xinference-worker"),
                "-e",
                self.base_url,
                "--host",
                "127.0.0.1",
                "--worker-port",
                str(self.worker_ports[i]),
                "--metrics-exporter-host",
                "127.0.0.1",
                "--metrics-exporter-port",
                str(self.metrics_ports[i]),
                "--log-level",
                self._log_level,
            ],
            server_env(home, auth=self.auth, tag=self.tag, extra=self._extra_env, venv=self.venv),
            self.home_root / f"worker-{i}.log",
            tag=self.tag,
            sessions=self.sessions,
        )

    def worker_address(self, i: int) -> str:
        return f"127.0.0.1:{self.worker_ports[i]}"

    @property
    def processes(self) -> list[XinferenceProcess]:
        return [self.supervisor, *self.workers]

    def start(self, timeout: float = READY_TIMEOUT_S) -> XinferenceCluster:
        t0 = time.monotonic()
        try:
            self.supervisor.start()
            self._wait_supervisor(timeout)
            if self.auth:
                self.setup_token = self._find_setup_token(timeout=15)
            for w in self.workers:
                w.start()
            _wait_for_workers(self.base_url, self.n_workers, self.processes, timeout)
        except BaseException:
            self.stop()
            raise
        self.start_seconds = time.monotonic() - t0
        return self

    def _wait_supervisor(self, timeout: float) -> None:
        t0 = time.monotonic()
        while time.monotonic() - t0 < timeout:
            if not self.supervisor.alive():
                raise HarnessError(f"supervisor exited:\n{self.supervisor.log_tail()}")
            if get_status(self.base_url) is not None:
                return
            time.sleep(0.5)
        raise HarnessError(
            f"supervisor not answering /status after {timeout}s:\n{self.supervisor.log_tail()}"
        )

    def _find_setup_token(self, timeout: float) -> str | None:
        t0 = time.monotonic()
        while time.monotonic() - t0 < timeout:
            tok = parse_setup_token(self.supervisor.log_text())
            if tok:
                return tok
            time.sleep(0.3)
        return None

    def wait_workers(self, n: int, timeout: float = READY_TIMEOUT_S, exact: bool = True) -> dict:
        """Wait until /status lists ``n`` workers (exactly, by default)."""
        return _wait_for_workers(
            self.base_url, n, [p for p in self.processes if p.proc], timeout, exact=exact
        )

    # -- faults -----------------------------------------------------------------------------
    def stop_worker(self, i: int, timeout: float = 20.0) -> None:
        self.workers[i].stop(timeout=timeout)

    def kill_worker(self, i: int) -> None:
        """SIGKILL worker ``i`` and its model processes (a crashed host)."""
        self.workers[i].kill()

    def start_worker(self, i: int, wait: bool = True, timeout: float = READY_TIMEOUT_S) -> None:
        if self.workers[i].alive():
            raise HarnessError(f"worker {i} is running")
        self.workers[i] = self._make_worker(i)
        self.workers[i].start()
        if wait:
            t0 = time.monotonic()
            while time.monotonic() - t0 < timeout:
                if self.worker_address(i) in worker_addresses(get_status(self.base_url)):
                    return
                if not self.workers[i].alive():
                    raise HarnessError(f"worker {i} exited:\n{self.workers[i].log_tail()}")
                time.sleep(0.5)
            raise HarnessError(f"worker {i} did not re-register:\n{self.workers[i].log_tail()}")

    def restart_worker(self, i: int, timeout: float = READY_TIMEOUT_S) -> None:
        self.stop_worker(i)
        self.start_worker(i, timeout=timeout)

    def stop_supervisor(self, timeout: float = 20.0) -> None:
        self.supervisor.stop(timeout=timeout)

    def kill_supervisor(self) -> None:
        self.supervisor.kill()

    def start_supervisor(self, wait: bool = True, timeout: float = READY_TIMEOUT_S) -> None:
        self.supervisor.start()
        if wait:
            self._wait_supervisor(timeout)

    def restart_supervisor(
        self, timeout: float = READY_TIMEOUT_S, wait_workers: bool = True
    ) -> None:
        """Stop the supervisor and start it again on the same ports and home. Workers keep
        running; with ``wait_workers`` wait until they have all re-registered."""
        self.stop_supervisor()
        self.start_supervisor(timeout=timeout)
        if wait_workers:
            self.wait_workers(sum(1 for w in self.workers if w.alive()), timeout=timeout)

    def stop(self, timeout: float = 20.0) -> None:
        for w in self.workers:
            w.stop(timeout=timeout)
        self.supervisor.stop(timeout=timeout)
        kill_tagged(self.tag, self.sessions)
        self._cleanup_tmp()

    def status(self) -> dict | None:
        return get_status(self.base_url)


def main(argv: Sequence[str]) -> int:
    """Manual use: ``python tests/harness/server.py [--auth] [--cluster N]`` starts a server,
    prints its URL and waits for Ctrl-C."""
    auth = "--auth" in argv
    n = int(argv[argv.index("--cluster") + 1]) if "--cluster" in argv else 0
    srv: Any = XinferenceCluster(n, auth=auth) if n else XinferenceServer(auth=auth)
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    srv.start()
    print(
        json.dumps(
            {
                "base_url": srv.base_url,
                "setup_token": srv.setup_token,
                "home": str(srv.home_root),
                "start_seconds": srv.start_seconds,
            }
        ),
        flush=True,
    )
    try:
        while True:
            time.sleep(1)
    except KeyboardInterrupt:
        pass
    finally:
        srv.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
