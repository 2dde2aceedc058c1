"""How the tool runs (not what should run): read from XINFERENCE_RECONCILER_* environment variables."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

ENV_PREFIX = "XINFERENCE_RECONCILER_"


class Settings(BaseSettings):
    """Runtime settings. Each field is also an environment variable, e.g.
    ``XINFERENCE_RECONCILER_CONFIG=/etc/xinference-reconciler/config.toml``."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore", frozen=True)

    config: Path = Field(
        Path("/etc/xinference-reconciler/config.toml"),
        description="The config file (what should run).",
    )
    endpoint: str | None = Field(
        None, description="Overrides [cluster] endpoint, e.g. for a local test cluster."
    )
    resync_interval_seconds: float = Field(
        30.0, gt=0, description="Full resync even when nothing changed (level-triggered)."
    )
    debounce_seconds: float = Field(0.2, ge=0, description="Quiet time after a file event.")
    drift_reminder_seconds: float = Field(
        3600.0, gt=0, description="How often a drift that persists is reported again."
    )
    log_format: Literal["auto", "json", "console"] = Field(
        "auto", description="auto: JSON lines unless standard error is a terminal."
    )
    log_level: Literal["debug", "info", "warning", "error"] = Field("info")
    state_dir: Path = Field(
        Path("/var/lib/xinference-reconciler"),
        description="Where the ownership state file lives (systemd's StateDirectory=).",
    )
    metrics_listen: str | None = Field(
        None, description="host:port for /healthz and /metrics; off when unset (loopback advised)."
    )
