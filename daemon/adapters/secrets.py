"""Read the secret that [cluster.auth] names: from the environment, a file, or a systemd credential.

Errors name where the secret was looked for, never what it is. A secret file that other users can
read is reported as a warning (the caller logs it).
"""

from __future__ import annotations

import os
import stat
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from daemon.core.desired import AuthConfig
from daemon.errors import SecretError

MAX_SECRET_BYTES = 64 * 1024


@dataclass(frozen=True, kw_only=True)
class Credentials:
    """What the adapter authenticates with. ``repr`` never shows the secret."""

    mode: str
    username: str | None = None
    secret: str | None = field(default=None, repr=False)
    source: str = ""  # where the secret came from, for messages
    warnings: tuple[str, ...] = ()

    @property
    def can_write(self) -> bool:
        """Xinference lets API keys read and infer only; launching needs a logged-in user."""
        return self.mode != "api_key"


def _read_file(path: Path, what: str) -> tuple[str, tuple[str, ...]]:
    try:
        info = path.stat()
        if info.st_size > MAX_SECRET_BYTES:
            raise SecretError(f"{what} file {path} is larger than {MAX_SECRET_BYTES} bytes")
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SecretError(f"{what} file {path} does not exist") from None
    except PermissionError:
        raise SecretError(f"{what} file {path} is not readable by this user") from None
    except UnicodeDecodeError:
        raise SecretError(f"{what} file {path} is not UTF-8 text") from None
    except OSError as exc:
        raise SecretError(f"{what} file {path} cannot be read ({exc.strerror})") from None
    warnings: tuple[str, ...] = ()
    if info.st_mode & (stat.S_IRGRP | stat.S_IROTH):
        warnings = (f"{what} file {path} is readable by other users (chmod 600 it)",)
    value = text.strip()
    if not value:
        raise SecretError(f"{what} file {path} is empty")
    return value, warnings


def load_credentials(auth: AuthConfig, *, environ: Mapping[str, str] | None = None) -> Credentials:
    """Resolve ``auth`` to credentials, or raise SecretError saying which source failed."""
    env = os.environ if environ is None else environ
    if auth.mode == "none":
        return Credentials(mode="none")
    what = "password" if auth.mode == "password" else "API key"
    var = auth.password_env if auth.mode == "password" else auth.api_key_env
    file = auth.password_file if auth.mode == "password" else auth.api_key_file
    warnings: tuple[str, ...] = ()
    if var:
        value = env.get(var, "")
        if not value.strip():
            raise SecretError(f"{what} environment variable {var} is not set or empty")
        secret, source = value.strip(), f"environment variable {var}"
    elif file:
        secret, warnings = _read_file(Path(file), what)
        source = f"file {file}"
    else:
        directory = env.get("CREDENTIALS_DIRECTORY")
        if not directory:
            raise SecretError(
                f"{what} credential {auth.credential!r}: $CREDENTIALS_DIRECTORY is not set "
                "(run under systemd with LoadCredential=, or use a file or variable)"
            )
        secret, warnings = _read_file(Path(directory) / str(auth.credential), what)
        source = f"systemd credential {auth.credential}"
    return Credentials(
        mode=auth.mode, username=auth.username, secret=secret, source=source, warnings=warnings
    )
