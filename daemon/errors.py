"""The project's own error tree. Adapters translate library errors into these at the boundary.

::

    ReconcilerError
    ├── ConfigError                 bad input file: never acted on (permanent until the file changes)
    │   ├── ConfigSyntaxError       not TOML / not UTF-8 / empty / unreadable
    │   └── ConfigValidationError   TOML that breaks the schema or a cross-field rule
    ├── SettingsError               an XINFERENCE_RECONCILER_* setting or a flag over it is invalid
    ├── SnapshotError               an observed-state snapshot file that cannot be read
    ├── SecretError                 a secret named by the config could not be read (never shows it)
    ├── StateError                  the ownership state file could not be written
    └── ClusterError                talking to Xinference failed (method, path, status, detail)
        ├── TemporaryClusterError   worth retrying: down, slow, 5xx, connection reset
        │   └── ServerUnavailable
        └── PermanentClusterError   retrying the same request will fail again: 4xx, bad auth
            ├── AuthError
            └── RequestRejected
                └── ModelNotFound   the uid or model name is unknown to the server

``ConfigError`` carries a tuple of :class:`Problem` so a CLI or an event can list every problem with
its file and key path.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, kw_only=True)
class Problem:
    """One thing wrong with an input file: where (file, key path or line:column) and what."""

    file: str
    location: str
    message: str

    def __str__(self) -> str:
        where = f"{self.file}: {self.location}" if self.location else self.file
        return f"{where}: {self.message}"


class ReconcilerError(Exception):
    """Base of every error this project raises on purpose."""


class ConfigError(ReconcilerError):
    """The config file cannot be used. Nothing may be acted on because of it."""

    def __init__(self, problems: tuple[Problem, ...]) -> None:
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))


class ConfigSyntaxError(ConfigError):
    """The file is missing, unreadable, empty, not UTF-8 or not valid TOML."""


class ConfigValidationError(ConfigError):
    """The file is TOML but breaks the schema or a cross-field rule."""


class SettingsError(ReconcilerError):
    """The runtime settings (environment variables, flags) are invalid: one line per problem, naming
    the variable or flag and what was expected, never a secret."""

    def __init__(self, problems: tuple[str, ...]) -> None:
        self.problems = problems
        super().__init__("\n".join(problems))


class SnapshotError(ReconcilerError):
    """An observed-state snapshot file is missing or malformed."""


class SecretError(ReconcilerError):
    """A secret named by the config could not be read. The message names the source, never the value."""


class StateError(ReconcilerError):
    """The state file could not be written (the pass's actions stand; ownership may be stale)."""


class ClusterError(ReconcilerError):
    """A call to Xinference failed. The facts are fields (``method``, ``path``, ``status``: the HTTP
    status or None when no answer came, ``detail``: the server's words, secrets removed); callers
    decide on the type and the fields, never on the message text."""

    temporary: bool = False

    def __init__(
        self,
        detail: str,
        *,
        method: str | None = None,
        path: str | None = None,
        status: int | None = None,
    ) -> None:
        self.detail, self.method, self.path, self.status = detail, method, path, status
        where = f"{method} {path}: " if method and path else ""
        code = f"HTTP {status}: " if status is not None else ""
        super().__init__(f"{where}{code}{detail}")


class TemporaryClusterError(ClusterError):
    """A failure worth retrying later: the server is down, slow, restarting or answered 5xx."""

    temporary = True


class ServerUnavailable(TemporaryClusterError):
    """The server could not be reached or did not answer in time."""


class PermanentClusterError(ClusterError):
    """Retrying the same request will fail the same way (4xx, refused credentials)."""


class AuthError(PermanentClusterError):
    """Credentials were refused or lack the permission the action needs."""


class RequestRejected(PermanentClusterError):
    """The server understood the request and refused it (HTTP 4xx other than auth)."""


class ModelNotFound(RequestRejected):
    """The server does not know the uid (terminate) or the model name (launch, registration)."""
