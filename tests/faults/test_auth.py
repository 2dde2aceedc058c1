"""An auth-on server: the access token is rejected mid-pass (the proxy answers 401 once, as the
server does for an expired or revoked token) and the adapter logs in again without an error; then
every call is refused for a while (auth.failed, nothing terminated) and the daemon recovers once
the server accepts its credentials again."""

from __future__ import annotations

import time

import pytest

from tests.faults.conftest import (
    Scenario,
    embedding,
    named,
    ready,
    record,
    terminations,
    wait_converged,
    watch,
)
from tests.harness.daemon_process import event
from tests.harness.proxy import PASS, status

pytestmark = pytest.mark.integration
PASSWORD_ENV = "XR_FAULTS_PASSWORD"


def test_token_rejected_mid_pass_then_refused_for_a_while(auth_scenario: Scenario) -> None:
    srv, base, token = auth_scenario.server, auth_scenario.base, auth_scenario.token
    assert srv.password is not None  # the auth server always has one
    proxy = auth_scenario.proxy()
    uid = auth_scenario.uid("auth")
    auth = {"mode": "password", "username": srv.username, "password_env": PASSWORD_ENV}
    auth_scenario.write_config(
        {uid: embedding(auth_scenario.name)}, endpoint=proxy.url, timeout=5, auth=auth
    )
    auth_scenario.config.chmod(0o600)
    daemon = auth_scenario.start_daemon(env={PASSWORD_ENV: srv.password})
    daemon.wait_for(event("model.launch.succeeded", uid=uid), timeout=120)
    wait_converged(daemon, timeout=30)
    created = ready(base, token)[uid]
    logins = len(proxy.requests(r"^POST /token "))
    assert logins >= 1

    # the token is rejected once, in the middle of an observation: log in again, carry on
    proxy.set(status(401, "Invalid token"), match=r"^GET /v1/models ", count=1)
    wait_converged(daemon, timeout=30)
    wait_converged(daemon, timeout=30)
    assert proxy.pending() == 0
    assert len(proxy.requests(r"^POST /token ")) > logins  # it logged in again
    assert named(daemon, "auth.failed") == []

    # now every authenticated call is refused for a while (a revoked user, a broken IdP)
    proxy.set(status(401, "Invalid token"), match=r"^GET /v1/models")
    failed = daemon.wait_for(event("auth.failed"), timeout=30)
    assert "HTTP 401" in failed["error"]
    assert srv.password not in str(failed)
    during = watch(daemon, 6)
    assert not [e for e in during if e["event"].startswith("model.")]
    proxy.set(PASS)
    cleared = time.monotonic()
    wait_converged(daemon, timeout=30)
    converge = round(time.monotonic() - cleared, 1)
    assert ready(base, token)[uid] == created
    assert terminations(daemon) == []
    record(
        "token rejected mid-pass / auth refused",
        converge_seconds=converge,
        unintended_terminations=0,
        auth_failed_events=len(named(daemon, "auth.failed")),
    )
