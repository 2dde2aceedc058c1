"""How the tool runs (not what should run): read from XINFERENCE_RECONCILER_* environment variables.

Each field of :class:`Settings` is one variable, ``XINFERENCE_RECONCILER_<FIELD>``; its description is
what ``xinference-reconciler run --help`` and README.md's table show (a unit test keeps the README's
table equal to these fields). :func:`load_settings` turns pydantic's errors into one line per
problem that names the variable (or the flag), says what was expected and shows what was given,
except where the value may hold a secret. Other ``XINFERENCE_RECONCILER_*`` variables are left
alone: the example config names ``XINFERENCE_RECONCILER_PASSWORD`` for its ``password_env``.
"""

from __future__ import annotations

import typing
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from daemon.core.addresses import check_endpoint, parse_listen
from daemon.errors import SettingsError

ENV_PREFIX = "XINFERENCE_RECONCILER_"
# Values of these settings are never repeated in a message (an endpoint may carry user:password@).
_NEVER_SHOWN = frozenset({"endpoint"})


class Settings(BaseSettings):
    """Runtime settings. Each field is also an environment variable, e.g.
    ``XINFERENCE_RECONCILER_CONFIG=/etc/xinference-reconciler/config.toml``."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, extra="ignore", frozen=True, env_ignore_empty=True
    )

    config: Path = Field(
        Path("/etc/xinference-reconciler/config.toml"),
        description="The config file (what should run), when `run` is given none.",
    )
    endpoint: str | None = Field(
        None,
        json_schema_extra={"takes": "URL"},
        description="Xinference URL (http:// or https://, no credentials); overrides [cluster] "
        "endpoint, e.g. for a local test cluster.",
    )
    resync_interval_seconds: float = Field(
        30.0, gt=0, description="Full resync even when nothing changed (level-triggered)."
    )
    debounce_seconds: float = Field(
        0.2, ge=0, description="Quiet time after a file event before the pass."
    )
    drift_reminder_seconds: float = Field(
        3600.0, gt=0, description="How often a drift that persists is reported again."
    )
    log_format: Literal["auto", "json", "console"] = Field(
        "auto", description="auto: JSON lines unless standard error is a terminal."
    )
    log_level: Literal["debug", "info", "warning", "error"] = Field(
        "info", description="The least severe event that is written."
    )
    state_dir: Path = Field(
        Path("/var/lib/xinference-reconciler"),
        description="Where the ownership state file and the lock live (systemd's StateDirectory=).",
    )
    metrics_listen: str | None = Field(
        None,
        json_schema_extra={"takes": "HOST:PORT"},
        description="HOST:PORT for /healthz, /readyz and /metrics; off when unset (loopback advised).",
    )

    @field_validator("endpoint")
    @classmethod
    def _endpoint(cls, value: str | None) -> str | None:
        return None if value is None else check_endpoint(value)

    @field_validator("metrics_listen")
    @classmethod
    def _listen(cls, value: str | None) -> str | None:
        if value is not None:
            parse_listen(value)
        return value

    @field_validator("log_format", "log_level", mode="before")
    @classmethod
    def _lower(cls, value: Any) -> Any:
        return value.strip().lower() if isinstance(value, str) else value


def env_name(field: str) -> str:
    return ENV_PREFIX + field.upper()


@dataclass(frozen=True)
class SettingDoc:
    """One setting as people read it: the variable, what it takes, its default, what it does."""

    name: str
    expects: str
    default: str
    description: str


def _expects(annotation: Any) -> str:
    if typing.get_origin(annotation) is Literal:
        return " | ".join(str(a) for a in typing.get_args(annotation))
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    kind = args[0] if args else annotation
    return {Path: "path", float: "number", str: "text", int: "integer", bool: "true | false"}.get(
        kind, getattr(kind, "__name__", str(kind))
    )


def describe_settings() -> tuple[SettingDoc, ...]:
    """Every setting, in declaration order (``run --help`` and the README's table are made of this)."""
    docs = []
    for field, info in Settings.model_fields.items():
        default = info.default
        extra = info.json_schema_extra if isinstance(info.json_schema_extra, dict) else {}
        docs.append(
            SettingDoc(
                name=env_name(field),
                expects=str(extra.get("takes", "")) or _expects(info.annotation),
                default="(unset)" if default is None else str(default),
                description=info.description or "",
            )
        )
    return tuple(docs)


def _problem(error: Mapping[str, Any], flags: Mapping[str, str]) -> str:
    field = str(error["loc"][0]) if error["loc"] else ""
    where = flags.get(field) or env_name(field)
    message = str(error["msg"]).removeprefix("Value error, ")
    message = message[:1].lower() + message[1:]
    if error["type"] in ("float_parsing", "float_type"):
        message = "expected a number"
    if field not in _NEVER_SHOWN and "input" in error and error["type"] != "value_error":
        shown = str(error["input"])
        message += f" (got {shown[:80]!r})"
    return f"{where}: {message}"


def load_settings(flags: Mapping[str, tuple[str, Any]] | None = None) -> Settings:
    """The settings from the environment, with command-line flags over them.

    ``flags`` maps a field to ``(flag name, value)``, e.g. ``{"endpoint": ("--endpoint", url)}``;
    values that are None are left to the environment. Raises SettingsError listing every problem.
    """
    given = {field: value for field, (_, value) in (flags or {}).items() if value is not None}
    names = {field: flag for field, (flag, value) in (flags or {}).items() if value is not None}
    problems: list[str] = []
    settings = None
    try:
        settings = Settings(**given)
    except ValidationError as exc:
        problems += [_problem(e, names) for e in exc.errors(include_url=False)]
    if problems or settings is None:
        raise SettingsError(tuple(problems))
    return settings
