"""The contract suite runs once against the in-memory fake and once against a real Xinference."""

from tests.harness.conftest_fixtures import *  # noqa: F403  # the shared real-server fixtures
