"""The config revision every event carries: the git commit of the config file when it lives in a git
work tree (with ``-dirty`` and the content hash when it has local changes), else its content hash.

git runs with a fixed argument list (never through a shell) and a short timeout; any failure falls
back to the content hash.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

GIT_TIMEOUT_SECONDS = 2.0


def _git(directory: Path, *args: str) -> str | None:
    try:
        done = subprocess.run(
            ["git", "-C", str(directory), *args],
            capture_output=True,
            text=True,
            timeout=GIT_TIMEOUT_SECONDS,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def config_revision(path: Path, content_hash: str) -> str:
    real = path.resolve()
    commit = _git(real.parent, "log", "-1", "--format=%H", "--", real.name)
    if not commit:
        return f"sha256:{content_hash}"
    dirty = _git(real.parent, "status", "--porcelain", "--", real.name)
    if dirty:
        return f"git:{commit[:12]}-dirty:{content_hash}"
    return f"git:{commit[:12]}"
