"""A short soak in CI (the full 10-minute run and its numbers are in docs/reliability.md):
config churn and out-of-band terminations against a real Xinference, with the daemon resyncing."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.integration
SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "soak.py"


def _soak_module() -> Any:
    spec = importlib.util.spec_from_file_location("soak", SCRIPT)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_a_short_soak_misses_and_duplicates_nothing(xinference_server: Any, tmp_path: Path) -> None:
    soak = _soak_module()
    result = soak.soak(
        xinference_server.base_url,
        xinference_server.models["embedding"],
        tmp_path,
        seconds=120,
        churn=15,
        kill=25,
    )
    summary = result.summary()
    assert result.converged, summary
    assert result.duplicated == [], summary
    assert result.missed == [], summary
    assert result.unexpected_terminations == [], summary
    assert result.edits >= 6
    assert result.kills >= 2, summary
    assert result.drift_detected >= result.kills
    rss = result.rss_mib
    assert max(rss) - rss[min(6, len(rss) - 1)] < 10, rss  # flat after the first minute
