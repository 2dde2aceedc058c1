"""The unit in deploy/ under a real systemd as PID 1 (systemd-nspawn; tests/systemd/nspawn.py says
how), against a real Xinference 4.1.0 that the shared harness starts on the host's 127.0.0.1."""

from __future__ import annotations

import os
import shutil
from typing import Any

import pytest

TOOLS = {
    "systemd-nspawn": "systemd-container",
    "mmdebstrap": "mmdebstrap",
    "nsenter": "util-linux",
    "zstd": "zstd",
}


@pytest.fixture(scope="session")
def nspawn_host() -> Any:
    """Root and the host tools, or a clear reason. Not root is the only reason to skip (CI runs as
    root); a root host without the tools fails: scripts/setup-dev.sh installs them."""
    if os.geteuid() != 0:
        pytest.skip("booting systemd with systemd-nspawn needs root (CI runs as root)")
    missing = [
        f"{tool} (Debian package {pkg})" for tool, pkg in TOOLS.items() if not shutil.which(tool)
    ]
    if missing:
        pytest.fail(f"missing: {', '.join(missing)}; run scripts/setup-dev.sh as root")
    return True
