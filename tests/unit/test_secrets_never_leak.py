"""Secrets never leak (issue #5, part 3).

A marker secret (``XRSECRET-<random>``) is planted as the password (environment variable, file,
systemd credential) and as an API key; every command that produces output runs against a small
Xinference stand-in on 127.0.0.1, and every output is searched for the marker: standard output and
error of validate/plan/plan --json/fit/status/snapshot/apply, the snapshot and state files, the
daemon's JSON events, the adapter's error messages and ``repr`` of the credentials. The only place
the marker may appear is where it must: the login request body the stand-in received (or, for an
API key, the ``Authorization`` header). The access token the stand-in hands out is a marker too.

Also checked: inline secrets in the config and credentials in the endpoint URL are refused without
echoing them; events redact fields named like secrets; a secret file readable by other users gives a
warning; TLS verification is on by default; no subprocess call in daemon/ uses ``shell=True``.
"""

from __future__ import annotations

import ast
import io
import json
import os
import secrets
import socket
import sys
import threading
import traceback
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from daemon.adapters.secrets import Credentials, load_credentials
from daemon.adapters.systemd import Notifier
from daemon.adapters.xinference import XinferenceAdapter
from daemon.app import Daemon, real_cluster
from daemon.cli import main
from daemon.core.desired import AuthConfig, ClusterConfig
from daemon.errors import AuthError, ClusterError
from daemon.events import REDACTED, EventLogger, configure
from daemon.settings import Settings

if sys.version_info >= (3, 11):
    import tomllib
else:  # Python 3.10: the same parser, published as tomli
    import tomli as tomllib

REPO = Path(__file__).resolve().parents[2]
MARKER = f"XRSECRET-{secrets.token_hex(8)}"
TOKEN_MARKER = f"XRTOKEN-{secrets.token_hex(8)}"  # the access token the stand-in issues
USER = "reconciler"
ENV_VAR = "XR_TEST_SECRET"
WORKER = "127.0.0.1:40001"
GPU_BYTES = 24 * 2**30


# --- a tiny Xinference stand-in -------------------------------------------------------------------


@dataclass
class Received:
    method: str
    path: str
    headers: dict[str, str]
    body: str


@dataclass
class StubState:
    password: str = MARKER
    api_key: str | None = None
    echo_errors: bool = False  # answer a refused login like FastAPI's 422: echoing the body
    received: list[Received] = field(default_factory=list)
    launched: dict[str, dict[str, Any]] = field(default_factory=dict)
    registrations: dict[str, dict[str, Any]] = field(default_factory=dict)  # by URL path
    lock: threading.Lock = field(default_factory=threading.Lock)


def _handler(state: StubState) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        # HTTP/1.0: one request per connection, so no client socket outlives a test.
        def log_message(self, format: str, *args: Any) -> None:
            del format, args

        def _answer(self, code: int, body: Any) -> None:
            data = json.dumps(body).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _record(self) -> tuple[str, dict[str, list[str]], str]:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length).decode("utf-8", "replace") if length else ""
            with state.lock:
                state.received.append(
                    Received(self.command, self.path, dict(self.headers.items()), body)
                )
            split = urlsplit(self.path)
            return split.path, parse_qs(split.query), body

        def _authorized(self) -> bool:
            bearer = self.headers.get("Authorization", "")
            return bearer in (f"Bearer {TOKEN_MARKER}", f"Bearer {state.api_key}")

        def _instances(self, uid: str | None) -> list[dict[str, Any]]:
            return [
                {
                    "model_name": body["model_name"],
                    "model_uid": u,
                    "replica": 1,
                    "status": "READY",
                    "replica_statuses": [
                        {
                            "replica_id": 0,
                            "worker_address": WORKER,
                            "status": "READY",
                            "error_message": None,
                            "gpu_idx": body.get("gpu_idx"),
                        }
                    ],
                }
                for u, body in sorted(state.launched.items())
                if uid is None or u == uid
            ]

        def do_GET(self) -> None:
            path, query, _ = self._record()
            if path == "/v1/cluster/auth":
                return self._answer(200, {"auth": True})
            if path == "/status":
                gpu = {"name": "Stub GPU", "mem_total": GPU_BYTES, "mem_used": 2**30}
                return self._answer(200, {"workers": {WORKER: {"status": {"gpu-0": gpu}}}})
            if not self._authorized():
                return self._answer(401, {"detail": "Not authenticated"})
            if path == "/v1/models/instances":
                return self._answer(200, self._instances(query.get("model_uid", [None])[0]))
            if path.startswith("/v1/model_registrations/"):
                found = state.registrations.get(path)
                if found is None:
                    return self._answer(400, {"detail": f"Model {path} not found"})
                return self._answer(200, found)
            if path == "/v1/models":
                data = [
                    {
                        "id": u,
                        "model_name": b["model_name"],
                        "model_type": b["model_type"],
                        "model_engine": b.get("model_engine"),
                        "replica": 1,
                    }
                    for u, b in sorted(state.launched.items())
                ]
                return self._answer(200, {"object": "list", "data": data})
            return self._answer(404, {"detail": f"no route {path}"})

        def do_POST(self) -> None:
            path, _, body = self._record()
            if path == "/token":
                form = json.loads(body or "{}")
                if form.get("username") == USER and form.get("password") == state.password:
                    return self._answer(200, {"access_token": TOKEN_MARKER, "token_type": "bearer"})
                if state.echo_errors:  # what FastAPI does with a body it does not like
                    detail = [{"type": "value_error", "loc": ["body"], "msg": "bad", "input": form}]
                    return self._answer(422, {"detail": detail})
                return self._answer(401, {"detail": "Incorrect username or password"})
            if not self._authorized():
                return self._answer(401, {"detail": "Not authenticated"})
            if path == "/v1/models":
                launch = json.loads(body)
                state.launched[launch["model_uid"]] = launch
                return self._answer(200, {"model_uid": launch["model_uid"]})
            if path.startswith("/v1/model_registrations/"):
                spec = json.loads(json.loads(body)["model"])
                key = f"{path}/{spec['model_name']}"
                if key in state.registrations:
                    return self._answer(400, {"detail": "already registered"})
                state.registrations[key] = spec
                return self._answer(200, {})
            return self._answer(404, {"detail": f"no route {path}"})

        def do_DELETE(self) -> None:
            path, _, _ = self._record()
            if not self._authorized():
                return self._answer(401, {"detail": "Not authenticated"})
            if path.startswith("/v1/models/"):
                state.launched.pop(path.rsplit("/", 1)[1], None)
            state.registrations.pop(path, None)
            return self._answer(200, {})

    return Handler


@dataclass
class Stub:
    state: StubState
    url: str


@pytest.fixture
def stub() -> Iterator[Stub]:
    state = StubState()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        host, port = server.server_address[:2]
        yield Stub(state=state, url=f"http://{host!s}:{port}")
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def closed_port_url() -> str:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    finally:
        sock.close()
    return f"127.0.0.1:{port}"


# --- helpers --------------------------------------------------------------------------------------


def run(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = main(list(argv), stdout=out, stderr=err)
    return code, out.getvalue(), err.getvalue()


def assert_clean(where: str, text: str) -> None:
    assert MARKER not in text, f"the secret leaked into {where}"
    assert TOKEN_MARKER not in text, f"the access token leaked into {where}"


def config_text(endpoint: str, auth: str, *, mode: str = "enforce") -> str:
    return f"""
[cluster]
endpoint = "{endpoint}"
[cluster.auth]
{auth}
[policy]
mode = "{mode}"
gpu_reserve_gib = 0.0
[models.a]
model_name = "m"
model_engine = "Transformers"
[models.a.memory]
estimate_gib = 4.0
"""


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("XINFERENCE_RECONCILER_") or name == "CREDENTIALS_DIRECTORY":
            monkeypatch.delenv(name)


def secret_source(kind: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """Plant MARKER where ``kind`` says; return the [cluster.auth] lines that name it."""
    if kind == "env":
        monkeypatch.setenv(ENV_VAR, MARKER)
        return f'mode = "password"\nusername = "{USER}"\npassword_env = "{ENV_VAR}"'
    if kind == "file":
        path = tmp_path / "password"
        path.write_text(MARKER + "\n")
        path.chmod(0o600)
        return f'mode = "password"\nusername = "{USER}"\npassword_file = "{path}"'
    if kind == "credential":
        creds = tmp_path / "credentials"
        creds.mkdir()
        (creds / "xinference-password").write_text(MARKER)
        (creds / "xinference-password").chmod(0o600)
        monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(creds))
        return f'mode = "password"\nusername = "{USER}"\ncredential = "xinference-password"'
    assert kind == "api_key"
    monkeypatch.setenv(ENV_VAR, MARKER)
    return f'mode = "api_key"\napi_key_env = "{ENV_VAR}"'


def files_under(directory: Path) -> Iterator[tuple[Path, str]]:
    for path in sorted(directory.rglob("*")):
        if path.is_file():
            yield path, path.read_text(encoding="utf-8", errors="replace")


# --- every command, every source ------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["env", "file", "credential", "api_key"])
def test_no_command_output_or_file_shows_the_secret(
    kind: str,
    stub: Stub,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    if kind == "api_key":
        stub.state.api_key = MARKER
    auth = secret_source(kind, tmp_path, monkeypatch)
    cfg = tmp_path / "config.toml"
    # an API key may only read, so its config must say observe (validation refuses enforce)
    cfg.write_text(config_text(stub.url, auth, mode="observe" if kind == "api_key" else "enforce"))
    state = tmp_path / "state"
    snap = tmp_path / "snapshot.json"
    live = ("--state-dir", str(state))
    outputs = {
        "validate": run("validate", str(cfg)),
        "plan": run("plan", str(cfg), *live),
        "plan --json": run("plan", str(cfg), "--json", "--detailed-exitcode", *live),
        "fit": run("fit", str(cfg), *live),
        "status": run("status", str(cfg), *live),
        "snapshot": run("snapshot", str(cfg), *live),
        "snapshot -o": run("snapshot", str(cfg), "-o", str(snap), *live),
        "apply": run("apply", str(cfg), "--yes", "--poll-interval", "0.01", *live),
        "plan after apply": run("plan", str(cfg), "--json", *live),
    }
    process = capsys.readouterr()  # what went to sys.stdout/sys.stderr instead of the streams
    assert_clean("sys.stdout", process.out)
    assert_clean("sys.stderr", process.err)
    for name, (code, out, err) in outputs.items():
        assert_clean(f"{name} stdout", out)
        assert_clean(f"{name} stderr", err)
        if name == "apply" and kind == "api_key":
            assert code == 1  # observe mode (all an API key allows): apply refuses before acting
            assert "observe" in err
        else:
            assert code in (0, 2), (name, err)
    assert outputs["plan --json"][0] == 2
    if kind != "api_key":  # it really went through the server: launched and recorded
        assert set(stub.state.launched) == {"a"}
        assert json.loads(outputs["plan after apply"][1])["actions"] == []
        assert (state / "state.json").exists()
    for path, text in files_under(tmp_path):
        if path.name in {"password", "xinference-password"}:
            continue  # where the secret is kept
        assert_clean(str(path.relative_to(tmp_path)), text)
    # On the wire: the secret only in the login body (or, as an API key, only as a bearer token).
    assert stub.state.received
    for request in stub.state.received:
        headers = json.dumps(request.headers)
        assert MARKER not in request.path
        if kind == "api_key":
            assert MARKER not in request.body
        else:
            assert MARKER not in headers, request
            assert (MARKER in request.body) == (request.path == "/token"), request
    logins = [r for r in stub.state.received if r.path == "/token"]
    assert bool(logins) == (kind != "api_key")


@pytest.mark.parametrize("kind", ["env", "file", "credential", "api_key"])
def test_repr_of_the_credentials_never_shows_the_secret(
    kind: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    auth = AuthConfig.model_validate(tomllib.loads(secret_source(kind, tmp_path, monkeypatch)))
    credentials = load_credentials(auth)
    assert credentials.secret == MARKER
    for text in (repr(credentials), str(credentials), repr(auth), str(auth.model_dump())):
        assert_clean("repr", text)
    adapter = XinferenceAdapter(endpoint="http://127.0.0.1:1", credentials=credentials)
    assert_clean("repr(adapter)", repr(adapter))


# --- refused logins -------------------------------------------------------------------------------


def test_a_refused_login_names_the_user_and_source_never_the_secret(
    stub: Stub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    stub.state.password = "something-else"
    auth = secret_source("env", tmp_path, monkeypatch)
    credentials = load_credentials(AuthConfig.model_validate(_toml(auth)))
    adapter = XinferenceAdapter(endpoint=stub.url, credentials=credentials)
    with pytest.raises(AuthError) as info:
        adapter.observe()
    message = str(info.value)
    assert "HTTP 401" in message
    assert USER in message
    assert ENV_VAR in message
    for text in (message, repr(info.value), "".join(traceback.format_exception(info.value))):
        assert_clean("AuthError", text)
    cfg = tmp_path / "config.toml"
    cfg.write_text(config_text(stub.url, auth))
    code, out, err = run("plan", str(cfg), "--state-dir", str(tmp_path / "state"))
    assert code == 1
    assert "HTTP 401" in err
    assert_clean("plan stdout", out)
    assert_clean("plan stderr", err)


def test_a_server_that_echoes_the_login_body_does_not_make_the_adapter_repeat_it(
    stub: Stub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """FastAPI answers a body it rejects with 422 and the body's values under "input"; a proxy or a
    changed server could do the same. The adapter quotes the server's detail in its error, so the
    password must be scrubbed from that quote (the module promises: "Secrets never reach a
    message")."""
    stub.state.password = "something-else"
    stub.state.echo_errors = True
    auth = secret_source("env", tmp_path, monkeypatch)
    credentials = load_credentials(AuthConfig.model_validate(_toml(auth)))
    adapter = XinferenceAdapter(endpoint=stub.url, credentials=credentials)
    with pytest.raises(ClusterError) as info:
        adapter.observe()
    assert "422" in str(info.value)
    assert_clean("the error of a login the server echoed", str(info.value))


def _toml(text: str) -> dict[str, Any]:
    return tomllib.loads(text)


# --- the daemon's events --------------------------------------------------------------------------


def _daemon(cfg: Path, tmp_path: Path, **settings: Any) -> Daemon:
    return Daemon(
        config_path=cfg,
        settings=Settings(state_dir=tmp_path / "state", resync_interval_seconds=3600.0, **settings),
        cluster_factory=real_cluster,
        notifier=Notifier(environ={}),
    )


@pytest.mark.parametrize("kind", ["env", "file", "credential"])
def test_the_daemons_json_events_never_show_the_secret(
    kind: str, stub: Stub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    buffer = io.StringIO()
    configure(fmt="json", stream=buffer)
    cfg = tmp_path / "config.toml"
    cfg.write_text(config_text(stub.url, secret_source(kind, tmp_path, monkeypatch)))
    cfg.chmod(0o600)
    daemon = _daemon(cfg, tmp_path)
    daemon.load()
    assert daemon._secret_warnings() == ()
    report = daemon.run_pass({"start"})
    assert report is not None
    assert not report.failed
    assert set(stub.state.launched) == {"a"}
    settled = daemon.run_pass({"requeue"})
    assert settled is not None
    assert settled.converged
    # the login is refused from now on: auth.failed, and still nothing secret
    stub.state.password = "rotated"
    daemon.cluster = None
    daemon.run_pass({"resync"})
    events = [json.loads(line) for line in buffer.getvalue().splitlines() if line.strip()]
    names = {e["event"] for e in events}
    assert {"model.launch.started", "model.launch.succeeded", "pass.finished"} <= names
    assert "auth.failed" in names
    assert_clean("the daemon's events", buffer.getvalue())
    for path, text in files_under(tmp_path / "state"):
        assert_clean(str(path), text)


@pytest.mark.parametrize("command", ["run", "status", "plan", "snapshot"])
@pytest.mark.parametrize("source", ["environment", "flag"])
def test_an_endpoint_override_with_credentials_is_refused_without_repeating_it(
    command: str, source: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The config refuses ``user:pass@`` in [cluster] endpoint; the endpoint that
    XINFERENCE_RECONCILER_ENDPOINT or --endpoint give is refused the same way, up front, and the
    refusal never repeats it (the daemon's events and status line would otherwise carry it)."""
    cfg = tmp_path / "config.toml"
    cfg.write_text(
        config_text("http://127.0.0.1:9997", secret_source("env", tmp_path, monkeypatch))
    )
    endpoint = f"http://{USER}:{MARKER}@{closed_port_url()}"
    argv = [command, str(cfg), "--state-dir", str(tmp_path / "state")]
    if source == "flag":
        argv += ["--endpoint", endpoint]
    else:
        monkeypatch.setenv("XINFERENCE_RECONCILER_ENDPOINT", endpoint)
    code, out, err = run(*argv)
    assert code == (78 if command == "run" else 1), err
    assert "credentials in the endpoint URL are not allowed; use [cluster.auth]" in err
    assert "Traceback" not in err
    assert_clean("the refusal", out + err)


def test_a_secret_file_readable_by_others_gives_a_warning_without_the_secret(
    stub: Stub,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    auth = secret_source("file", tmp_path, monkeypatch)
    (tmp_path / "password").chmod(0o644)
    credentials = load_credentials(AuthConfig.model_validate(_toml(auth)))
    (warning,) = credentials.warnings
    assert "readable by other users" in warning
    assert_clean("the warning", warning)
    cfg = tmp_path / "config.toml"
    cfg.write_text(config_text(stub.url, auth, mode="observe"))
    cfg.chmod(0o644)
    code, out, err = run("plan", str(cfg), "--state-dir", str(tmp_path / "state"))
    assert code == 0, err
    # plan/fit without --observed write it to sys.stderr, not to main()'s stderr (cli._plan_inputs)
    process = capsys.readouterr()
    assert "warning: password file" in err + process.err
    assert_clean("plan output", err + out + process.err + process.out)
    daemon = _daemon(cfg, tmp_path)
    daemon.load()
    warnings = daemon._secret_warnings()
    assert any("readable by every user" in w for w in warnings)
    assert any("readable by other users" in w for w in warnings)
    assert_clean("config.warning", " ".join(warnings))


# --- the config file ------------------------------------------------------------------------------


@pytest.mark.parametrize("key", ["password", "api_key", "token", "secret"])
def test_an_inline_secret_is_refused_and_not_repeated(key: str, tmp_path: Path) -> None:
    cfg = tmp_path / "config.toml"
    cfg.write_text(
        config_text(
            "http://127.0.0.1:9997",
            f'mode = "password"\nusername = "{USER}"\n{key} = "{MARKER}"',
        )
    )
    code, out, err = run("validate", str(cfg))
    assert code == 1
    assert f"cluster.auth.{key}" in err
    assert "must not be written in the config" in err
    assert_clean("validate", out + err)


@pytest.mark.parametrize(
    "auth",
    [
        f'mode = "password"\nusername = "{USER}"\npasswd = "{MARKER}"',  # unknown key
        f'mode = "password"\nusername = "{USER}"\npassword_env = ["{MARKER}"]',  # wrong type
        f'mode = "none"\npassword_env = "{MARKER}"',  # cross-field rule
        f'mode = "password"\nusername = "{USER}"\npassword = "{MARKER}',  # unterminated string
        f'mode = "password"\nusername = "{USER}"\npassword = {{ value = "{MARKER}" }}',
    ],
)
def test_a_secret_in_a_broken_auth_table_is_not_repeated(auth: str, tmp_path: Path) -> None:
    cfg = tmp_path / "config.toml"
    cfg.write_text(config_text("http://127.0.0.1:9997", auth))
    code, out, err = run("validate", str(cfg))
    assert code == 1
    assert_clean("validate", out + err)


@pytest.mark.parametrize(
    "endpoint",
    [
        f"http://{USER}:{MARKER}@127.0.0.1:9997",
        f"https://{MARKER}@xinference.internal",
        f"https://{USER}:{MARKER}@xinference.internal:443/api",
        f"ftp://{USER}:{MARKER}@127.0.0.1",
    ],
)
def test_credentials_in_the_endpoint_url_are_refused_without_echo(
    endpoint: str, tmp_path: Path
) -> None:
    cfg = tmp_path / "config.toml"
    cfg.write_text(config_text(endpoint, 'mode = "none"'))
    code, out, err = run("validate", str(cfg))
    assert code == 1
    assert "cluster.endpoint" in err
    assert_clean("validate", out + err)


# --- events, TLS, subprocesses --------------------------------------------------------------------


def test_event_fields_named_like_secrets_are_redacted() -> None:
    buffer = io.StringIO()
    configure(fmt="json", stream=buffer)
    events = EventLogger(api_key=MARKER)
    events(
        "auth.failed",
        password=MARKER,
        token=MARKER,
        api_key=MARKER,
        Authorization=f"Bearer {MARKER}",
        client_secret=MARKER,
        credential=MARKER,
        refresh_token=MARKER,
        endpoint="http://127.0.0.1:9997",
    )
    events.bind(access_token=MARKER)("cluster.recovered", endpoint="x")
    lines = [json.loads(line) for line in buffer.getvalue().splitlines()]
    assert_clean("events", buffer.getvalue())
    first = lines[0]
    for name in (
        "password",
        "token",
        "api_key",
        "Authorization",
        "client_secret",
        "credential",
        "refresh_token",
    ):
        assert first[name] == REDACTED
    assert first["endpoint"] == "http://127.0.0.1:9997"
    assert lines[1]["access_token"] == REDACTED


def test_tls_verification_is_on_unless_disabled(tmp_path: Path) -> None:
    none = Credentials(mode="none")
    assert ClusterConfig().verify_tls is True
    assert XinferenceAdapter(endpoint="https://x", credentials=none)._verify is True
    real = real_cluster(ClusterConfig(endpoint="https://x"), None)
    assert isinstance(real, XinferenceAdapter)  # what it builds behind the ClusterPort type
    assert real._verify is True
    cfg = tmp_path / "config.toml"
    cfg.write_text(config_text("https://xinference.internal", 'mode = "none"'))
    from daemon.adapters.config_file import load_config

    assert load_config(cfg).config.cluster.verify_tls is True
    assert XinferenceAdapter(
        endpoint="https://x", credentials=none, ca_bundle="/ca.pem"
    )._verify == ("/ca.pem")
    off = XinferenceAdapter(endpoint="https://x", credentials=none, verify_tls=False)
    assert off._verify is False
    assert off._session.trust_env is False  # no proxy from the environment sees the traffic


def _calls(tree: ast.AST) -> Iterator[tuple[ast.Call, str]]:
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            func = node.func
            name = (
                f"{func.value.id}.{func.attr}"
                if isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name)
                else func.id
                if isinstance(func, ast.Name)
                else ""
            )
            yield node, name


def test_no_subprocess_call_in_daemon_uses_a_shell() -> None:
    offenders = []
    checked = 0
    for path in sorted((REPO / "daemon").rglob("*.py")):
        tree = ast.parse(path.read_text(), filename=str(path))
        for node, name in _calls(tree):
            where = f"{path.relative_to(REPO)}:{node.lineno} {name}"
            if name in {
                "os.system",
                "os.popen",
                "subprocess.getoutput",
                "subprocess.getstatusoutput",
            }:
                offenders.append(where)
            if name.startswith("subprocess.") or name in {"run", "Popen", "check_output", "call"}:
                checked += name.startswith("subprocess.")
                for kw in node.keywords:
                    if kw.arg == "shell" and not (
                        isinstance(kw.value, ast.Constant) and kw.value.value is False
                    ):
                        offenders.append(where + " shell=...")
                    if kw.arg is None:  # **kwargs could carry shell=True
                        offenders.append(where + " **kwargs")
    assert offenders == []
    assert checked >= 1  # the scan sees daemon/adapters/revision.py's git call
