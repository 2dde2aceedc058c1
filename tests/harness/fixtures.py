"""The test suite's one fixture registry: real Xinference 4.1.0 servers (CPU, loopback), started
lazily once per run and stopped as soon as the last test that needs them is done; and a check that
the run leaves no process behind.

Loaded by the top-level ``tests/conftest.py`` (``pytest_plugins``); never import it with ``*``.

Fixtures (function-scoped handles on run-wide resources):

* ``tiny_models``            -> dict from ``tiny_models.py`` (paths, stop ids, chat template)
* ``xinference_server``      -> :class:`ServerInfo`, one node, auth off, custom models registered
* ``xinference_server_auth`` -> :class:`ServerInfo`, one node, auth on, admin set up
                                (``username``/``password``/``token``), custom models registered
* ``xinference_cluster``     -> :class:`ServerInfo`, supervisor + 2 workers, auth off, models
                                registered; ``.cluster`` is the :class:`XinferenceCluster`
                                (stop/kill/restart a worker or the supervisor)

How a resource lives:

1. At collection, the tests are ordered by the resources they use (``item.fixturenames``, plus
   ``@pytest.mark.needs_server(...)`` for a fixture fetched with ``request.getfixturevalue``): tests
   that need no server first, then those needing only the tiny models, then the plain server's, the
   auth server's and the cluster's (a stable sort: the order within a group is unchanged).
2. With the final order, the registry records each resource's last user.
3. The first test that asks for a resource starts it; later users get the same one.
4. In the teardown of each test (after its own fixtures are torn down) every resource whose last
   user this was is stopped, and the stop is checked (no process may survive it).
5. Before each test, a server it does not use is stopped (only possible when something reorders the
   tests after this plugin: the server is then started again by its next user). So at most the
   servers of the running test are up: never more than 3 Xinference process trees (the cluster
   alone is 3), which is checked.

No server venv -> the fixtures FAIL the tests that need it (a skipped integration test is not a
pass). Set ``XR_HARNESS_KEEP_HOME=1`` to keep the temporary homes and logs.

Leaks (see ``tests/harness/leaks.py``): after each test, any process it started that is still
alive (a daemon, a server it started itself...; the registry's running servers excepted) is killed
and the test's teardown fails naming it; at the end of the run, anything of the run still alive is
killed and the run fails naming it.
"""

from __future__ import annotations

import contextlib
import shutil
import time
from collections.abc import Callable, Generator, Iterable
from dataclasses import dataclass, field
from typing import Any

import pytest

from tests.harness import leaks
from tests.harness import server as xh

ADMIN_USER = "xradmin"
ADMIN_PASSWORD = "xr-admin-password-1"

# resource -> Xinference process trees it runs while up
TREES = {
    "tiny_models": 0,
    "xinference_server": 1,
    "xinference_server_auth": 1,
    "xinference_cluster": 3,
}
SERVERS = ("xinference_server", "xinference_server_auth", "xinference_cluster")
MAX_TREES = 3
MARKER = "needs_server"

__all__ = ["ADMIN_PASSWORD", "ADMIN_USER", "ServerInfo"]  # fixtures come from the plugin only


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


def uses(item: pytest.Item) -> set[str]:
    """The registry's resources a test needs: the fixtures it names (their closure) and those
    declared with ``@pytest.mark.needs_server(...)``, with the tiny models every server needs."""
    names = set(getattr(item, "fixturenames", ())) & TREES.keys()
    for mark in item.iter_markers(MARKER):
        unknown = set(mark.args) - set(TREES)
        if unknown:
            raise pytest.UsageError(f"{item.nodeid}: {MARKER}({', '.join(sorted(unknown))})?")
        names |= set(mark.args)
    if names & set(SERVERS):
        names.add("tiny_models")
    return names


def group(item: pytest.Item) -> tuple[int, ...]:
    """Sort key: no resource, tiny models only, then by the servers used (plain, auth, cluster)."""
    used = uses(item)
    servers = sorted(SERVERS.index(s) for s in used & set(SERVERS))
    if servers:
        return (2, *servers)
    return (1,) if used else (0,)


# --------------------------------------------------------------------------------------------
# starting and stopping
# --------------------------------------------------------------------------------------------


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


def _registered(srv: Any, tiny: dict) -> dict:
    """Register the tiny models on a server just started (no auth); stop it if that fails."""
    try:
        return xh.register_custom_models(srv.base_url, None, tiny)
    except BaseException:
        srv.stop()
        raise


def _start_plain(tiny: dict) -> ServerInfo:
    srv = xh.XinferenceServer(auth=False).start()
    return ServerInfo(srv.base_url, srv, _registered(srv, tiny))


def _start_auth(tiny: dict) -> ServerInfo:
    srv = xh.XinferenceServer(auth=True).start()
    try:
        assert srv.setup_token, "auth-on server printed no setup token"
        xh.admin_setup(srv.base_url, srv.setup_token, ADMIN_USER, ADMIN_PASSWORD)
        token = xh.login(srv.base_url, ADMIN_USER, ADMIN_PASSWORD)
        names = xh.register_custom_models(srv.base_url, token, tiny)
    except BaseException:
        srv.stop()
        raise
    return ServerInfo(
        srv.base_url,
        srv,
        names,
        token=token,
        username=ADMIN_USER,
        password=ADMIN_PASSWORD,
        setup_token=srv.setup_token,
    )


def _start_cluster(tiny: dict) -> ServerInfo:
    cl = xh.XinferenceCluster(2, auth=False).start()
    return ServerInfo(cl.base_url, cl, _registered(cl, tiny))


@dataclass
class _Live:
    value: Any
    stop: Callable[[], None]
    started: float
    tags: frozenset[bytes] = frozenset()  # environment entries, as leaks.Proc.environ holds them
    sessions: list[int] = field(default_factory=list)


@dataclass
class Registry:
    """The run's resources: what is up, and the last user of each (positions in the run order)."""

    run_id: str
    live: dict[str, _Live] = field(default_factory=dict)
    last_use: dict[str, int] = field(default_factory=dict)
    position: dict[pytest.Item, int] = field(default_factory=dict)
    history: list[str] = field(default_factory=list)
    # Servers a test module starts for its own tests (fake vLLM, a fresh home...): spared from
    # the per-test leak check while the fixture that owns them lives (see spare_while_alive).
    own: dict[int, tuple[frozenset[bytes], list[int]]] = field(default_factory=dict)

    def schedule(self, items: Iterable[pytest.Item]) -> None:
        self.position, self.last_use = {}, {}
        for i, item in enumerate(items):
            self.position[item] = i
            for name in uses(item):
                self.last_use[name] = i

    def get(self, name: str, start: Callable[[], tuple[Any, Callable[[], None]]]) -> Any:
        if name not in self.live:
            _require_venv()
            t0 = time.monotonic()
            value, stop = start()
            srv = getattr(value, "server", None)
            self.live[name] = _Live(
                value,
                stop,
                time.monotonic(),
                frozenset({f"{xh.TAG_ENV}={srv.tag}".encode()} if srv else ()),
                srv.sessions if srv else [],
            )
            self.history.append(f"{name}: started in {time.monotonic() - t0:.1f} s")
        return self.live[name].value

    def stop(self, name: str, why: str) -> None:
        live = self.live.pop(name)
        self.history.append(f"{name}: stopped after {time.monotonic() - live.started:.0f} s, {why}")
        live.stop()

    def before(self, item: pytest.Item) -> None:
        needed = uses(item)
        trees = sum(TREES[n] for n in needed)
        if trees > MAX_TREES:
            pytest.fail(
                f"{item.nodeid} needs {', '.join(sorted(needed))}: {trees} Xinference process trees"
                f" at once, more than {MAX_TREES}"
            )
        for name in [n for n in SERVERS if n in self.live and n not in needed]:
            self.stop(name, f"not used by {item.nodeid}, which runs before its next user")

    def after(self, item: pytest.Item) -> None:
        at = self.position.get(item)
        if at is not None:
            self._stop_each([n for n in self.live if self.last_use.get(n, -1) <= at], item.nodeid)

    def stop_all(self) -> None:
        self._stop_each(list(self.live), None)

    def _stop_each(self, names: list[str], last_user: str | None) -> None:
        """Stop them all (servers before the models they serve), then raise the first error."""
        errors = []
        for name in sorted(names, key=lambda n: n == "tiny_models"):
            try:
                self.stop(name, f"last user {last_user}" if last_user else "the run ended")
            except Exception as exc:  # the others must still be stopped
                errors.append(exc)
        if errors:
            raise errors[0]

    def spared(self, proc: leaks.Proc) -> bool:
        """A process of one of the servers that are up (they outlive a test on purpose)."""
        kept = [(live.tags, live.sessions) for live in self.live.values()]
        kept += list(self.own.values())
        return any(proc.sid in sessions or tags & proc.environ for tags, sessions in kept)


REGISTRY = pytest.StashKey[Registry]()
LEAKS = pytest.StashKey[list[str]]()


def _registry(request: pytest.FixtureRequest) -> Registry:
    return request.config.stash[REGISTRY]


def shared(request: pytest.FixtureRequest, name: str) -> Any:
    """A run-wide resource (``tiny_models`` or a server fixture's name) for a fixture of a wider
    scope than a test (module, class), which cannot request the function-scoped fixtures. Mark
    the tests that use it with ``@pytest.mark.needs_server(name)`` so the registry schedules it."""
    return request.getfixturevalue(name) if request.scope == "function" else _get(request, name)


def _get(request: pytest.FixtureRequest, name: str) -> Any:
    registry = _registry(request)
    if name == "tiny_models":
        factory = request.getfixturevalue("tmp_path_factory")

        def start() -> tuple[dict, Callable[[], None]]:
            out = factory.mktemp("tiny-models")
            return xh.build_tiny_models(out), lambda: shutil.rmtree(out, ignore_errors=True)

        return registry.get("tiny_models", start)
    starts = {
        "xinference_server": _start_plain,
        "xinference_server_auth": _start_auth,
        "xinference_cluster": _start_cluster,
    }
    tiny = _get(request, "tiny_models")

    def begin() -> tuple[ServerInfo, Callable[[], None]]:
        info = starts[name](tiny)
        return info, lambda: _stop_and_check(info.server)

    return registry.get(name, begin)


def spare_while_alive(request: pytest.FixtureRequest, server: Any) -> None:
    """A server a module starts for its own tests outlives each test on purpose: its processes
    are spared from the per-test leak check until the fixture that started it is finalized (by
    then they must be gone, or the last test of the module fails naming them)."""
    registry = _registry(request)
    key = id(server)
    tags = frozenset({f"{xh.TAG_ENV}={server.tag}".encode()})
    registry.own[key] = (tags, server.sessions)
    request.addfinalizer(lambda: registry.own.pop(key, None))


# --------------------------------------------------------------------------------------------
# fixtures
# --------------------------------------------------------------------------------------------


@pytest.fixture
def tiny_models(request: pytest.FixtureRequest) -> dict:
    return _get(request, "tiny_models")


def _server(request: pytest.FixtureRequest, name: str, start: Callable[[dict], ServerInfo]) -> Any:
    tiny = request.getfixturevalue("tiny_models")

    def begin() -> tuple[ServerInfo, Callable[[], None]]:
        info = start(tiny)
        return info, lambda: _stop_and_check(info.server)

    return _registry(request).get(name, begin)


@pytest.fixture
def xinference_server(request: pytest.FixtureRequest, tiny_models: dict) -> ServerInfo:
    del tiny_models  # named so that every user of the server is a user of the models
    return _server(request, "xinference_server", _start_plain)


@pytest.fixture
def xinference_server_auth(request: pytest.FixtureRequest, tiny_models: dict) -> ServerInfo:
    del tiny_models
    return _server(request, "xinference_server_auth", _start_auth)


@pytest.fixture
def xinference_cluster(request: pytest.FixtureRequest, tiny_models: dict) -> ServerInfo:
    del tiny_models
    return _server(request, "xinference_cluster", _start_cluster)


# --------------------------------------------------------------------------------------------
# hooks
# --------------------------------------------------------------------------------------------


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        f"{MARKER}(*names): the test fetches these server fixtures with request.getfixturevalue"
        " (the registry schedules and stops servers by the fixtures a test uses)",
    )
    config.stash[REGISTRY] = Registry(leaks.mark_run())
    config.stash[LEAKS] = []


@pytest.hookimpl(trylast=True)  # after -k / -m / --deselect have dropped what will not run
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    items.sort(key=group)


def pytest_collection_finish(session: pytest.Session) -> None:
    session.config.stash[REGISTRY].schedule(session.items)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_setup(item: pytest.Item) -> Generator[None, None, None]:
    item.config.stash[REGISTRY].before(item)
    return (yield)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_teardown(item: pytest.Item) -> Generator[None, None, None]:
    try:
        return (yield)  # the test's own fixtures first (they may still use a server)
    finally:
        registry = item.config.stash[REGISTRY]
        try:
            registry.after(item)
        finally:
            _check_leaks(item, registry)


def _check_leaks(item: pytest.Item, registry: Registry) -> None:
    def find() -> list[leaks.Proc]:
        return leaks.run_processes(registry.run_id, xh.STARTED_SESSIONS, spare=registry.spared)

    left = leaks.settle(find)
    if left:
        leaks.kill(left)
        named = "; ".join(map(str, left))
        item.config.stash[LEAKS].append(f"{item.nodeid}: {named}")
        pytest.fail(f"the test left processes running (now killed): {named}", pytrace=False)


def pytest_sessionfinish(session: pytest.Session) -> None:
    registry = session.config.stash.get(REGISTRY, None)
    if registry is None:
        return
    found = session.config.stash[LEAKS]
    try:
        registry.stop_all()  # after an interrupted run (-x, Ctrl-C); else nothing is up any more
    except Exception as exc:  # reported below, the leak check must still run
        found.append(f"stopping the harness servers at the end of the run: {exc}")
    left = leaks.settle(lambda: leaks.run_processes(registry.run_id, xh.STARTED_SESSIONS))
    if left:
        leaks.kill(left)
        found.append("alive at the end of the run: " + "; ".join(map(str, left)))
    if found and session.exitstatus in (pytest.ExitCode.OK, pytest.ExitCode.NO_TESTS_COLLECTED):
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    registry = config.stash.get(REGISTRY, None)
    if registry is not None and registry.history:
        terminalreporter.write_sep("-", "harness servers")
        for line in registry.history:
            terminalreporter.write_line(line)
    found = config.stash.get(LEAKS, [])
    if found:
        terminalreporter.write_sep("=", "LEAKED PROCESSES (killed; the run fails)", red=True)
        for line in found:
            terminalreporter.write_line(line)


LEASE_PATH = "/v1/model_registrations/flexible/xinference-reconciler-lease"


@pytest.fixture(autouse=True)
def _no_cluster_lease_left_behind(request: pytest.FixtureRequest) -> Any:
    """A daemon killed by a test (or stopped while its server was unreachable) leaves the cluster
    lease registered on a shared server; the next test's daemon would then, by design, observe
    only until the lease expires. Remove it after every test that used a shared server."""
    yield
    registry = _registry(request)
    for name in SERVERS:
        live = registry.live.get(name)
        if live is not None and name in uses(request.node):
            info = live.value
            with contextlib.suppress(OSError):  # a test may have left its server stopped
                xh.http("DELETE", info.base_url + LEASE_PATH, token=info.token)
