"""Session-scoped pytest fixtures around a REAL Xinference 4.1.0 server (CPU, loopback).

Use from a conftest (or a test module)::

    from tests.harness.conftest_fixtures import *  # noqa: F401,F403

or ``pytest_plugins = ["tests.harness.conftest_fixtures"]`` in the top-level conftest.

Fixtures (all session-scoped, started lazily on first use, stopped at session end):

* ``tiny_models``            -> dict from ``tiny_models.py`` (paths, stop ids, chat template)
* ``xinference_server``      -> :class:`ServerInfo`, one node, auth off, custom models registered
* ``xinference_server_auth`` -> :class:`ServerInfo`, one node, auth on, admin set up
                                (``username``/``password``/``token``), custom models registered
* ``xinference_cluster``     -> :class:`ServerInfo`, supervisor + 2 workers, auth off, models
                                registered; ``.cluster`` is the :class:`XinferenceCluster`
                                (stop/kill/restart a worker or the supervisor)

No server venv -> the fixtures fail (a skipped integration test is not a pass).
Set ``XR_HARNESS_KEEP_HOME=1`` to keep the temporary homes and logs after the session.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Any

import pytest

from tests.harness import server as xh

ADMIN_USER = "xradmin"
ADMIN_PASSWORD = "xr-admin-password-1"

__all__ = [
    "ServerInfo",
    "_no_cluster_lease_left_behind",
    "pytest_configure",
    "tiny_models",
    "xinference_cluster",
    "xinference_server",
    "xinference_server_auth",
]


def pytest_configure(config: Any) -> None:
    config.addinivalue_line(
        "markers", "integration: needs a real Xinference server (.venv-xinference)"
    )


@dataclass
class ServerInfo:
    base_url: str
    server: Any  # XinferenceServer or XinferenceCluster
    models: dict = field(default_factory=dict)  # {"embedding": name, "LLM": name, "rerank": name}
    token: str | None = None
    username: str | None = None
    password: str | None = None
    setup_token: str | None = None

    @property
    def cluster(self) -> Any:
        return self.server


def _require_venv() -> None:
    """A missing server is a failure, never a skip: a skipped integration test proves nothing."""
    try:
        xh.find_server_venv()
    except xh.HarnessError as e:
        pytest.fail(f"{e} (install it with scripts/install-xinference-server.sh)")


def _stop_and_check(srv: Any) -> None:
    srv.stop()
    left = srv.leftover_pids()
    assert not left, f"processes survived the harness stop: {left}"


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory: Any) -> dict:
    _require_venv()
    return xh.build_tiny_models(tmp_path_factory.mktemp("tiny-models"))


@pytest.fixture(scope="session")
def xinference_server(tiny_models: dict) -> Any:
    srv = xh.XinferenceServer(auth=False).start()
    try:
        names = xh.register_custom_models(srv.base_url, None, tiny_models)
        yield ServerInfo(srv.base_url, srv, names)
    finally:
        _stop_and_check(srv)


@pytest.fixture(scope="session")
def xinference_server_auth(tiny_models: dict) -> Any:
    srv = xh.XinferenceServer(auth=True).start()
    try:
        assert srv.setup_token, "auth-on server printed no setup token"
        xh.admin_setup(srv.base_url, srv.setup_token, ADMIN_USER, ADMIN_PASSWORD)
        token = xh.login(srv.base_url, ADMIN_USER, ADMIN_PASSWORD)
        names = xh.register_custom_models(srv.base_url, token, tiny_models)
        yield ServerInfo(
            srv.base_url,
            srv,
            names,
            token=token,
            username=ADMIN_USER,
            password=ADMIN_PASSWORD,
            setup_token=srv.setup_token,
        )
    finally:
        _stop_and_check(srv)


@pytest.fixture(scope="session")
def xinference_cluster(tiny_models: dict) -> Any:
    cl = xh.XinferenceCluster(2, auth=False).start()
    try:
        names = xh.register_custom_models(cl.base_url, None, tiny_models)
        yield ServerInfo(cl.base_url, cl, names)
    finally:
        _stop_and_check(cl)


LEASE_PATH = "/v1/model_registrations/flexible/xinference-reconciler-lease"


@pytest.fixture(autouse=True)
def _no_cluster_lease_left_behind(request: Any) -> Any:
    """A daemon killed by a test (or stopped while its server was unreachable) leaves the cluster
    lease registered on a shared server; the next test's daemon would then, by design, observe
    only until the lease expires. Remove it after every test that used a shared server."""
    yield
    for name in ("xinference_server", "xinference_server_auth", "xinference_cluster"):
        if name in request.fixturenames:
            info = request.getfixturevalue(name)
            with contextlib.suppress(OSError):  # a test may have left its server stopped
                xh.http("DELETE", info.base_url + LEASE_PATH, token=info.token)
