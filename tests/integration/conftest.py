"""Integration tests run against a real Xinference 4.1.0 started by the tests on 127.0.0.1."""

from tests.harness.conftest_fixtures import *  # noqa: F403  # the fixtures are the shared harness
