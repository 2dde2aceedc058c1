"""The systemd unit: verified by systemd-analyze (systemd 252, Debian 12) and hardened as promised."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
UNIT = REPO / "deploy" / "xinference-reconciler.service"
INSTALLED_BINARY = "/opt/xinference-reconciler/venv/bin/xinference-reconciler"


def test_the_unit_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    """verify checks that ExecStart exists, so the copy points at this checkout's entry point."""
    analyze = shutil.which("systemd-analyze")
    assert analyze, "systemd-analyze is needed (Debian package systemd)"
    binary = Path(sys.executable).parent / "xinference-reconciler"
    assert binary.exists(), binary
    copy = tmp_path / UNIT.name
    copy.write_text(UNIT.read_text().replace(INSTALLED_BINARY, str(binary)))
    done = subprocess.run(
        [analyze, "verify", "--man=no", str(copy)], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout + done.stderr == ""


def test_the_unit_has_the_promised_settings() -> None:
    text = UNIT.read_text()
    for line in (
        "Type=notify",
        f"ExecReload={INSTALLED_BINARY} reload --pid $MAINPID",
        "WatchdogSec=",
        "Restart=on-failure",
        "RestartPreventExitStatus=78",
        "LoadCredential=",
        "DynamicUser=yes",
        "ProtectSystem=strict",
        "StateDirectory=xinference-reconciler",
        "ConfigurationDirectory=xinference-reconciler",
        "NoNewPrivileges=yes",
        "RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX",
        "SystemCallFilter=@system-service",
    ):
        assert line in text, line


def test_the_security_exposure_stays_low(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    assert analyze
    copy = tmp_path / UNIT.name
    copy.write_text(UNIT.read_text())
    done = subprocess.run(
        [analyze, "security", "--offline=yes", "--threshold=20", str(copy)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    score = float(
        done.stdout.split("Overall exposure level for xinference-reconciler.service:")[1].split()[0]
    )
    assert score <= 2.0, score
