"""The suite's one fixture registry (real Xinference servers, started once, stopped after their
last user; the leaked-process check): see tests/harness/fixtures.py."""

pytest_plugins = ["tests.harness.fixtures"]
