"""Read and check a config file: TOML -> :class:`Config` -> resolved :class:`Demand` per model.

Every problem is collected with its file and key path (or line and column); nothing here ever
returns a half-checked config. A problem never shows a value from the file (it may be a secret).
"""

from __future__ import annotations

import hashlib
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, get_args, get_origin

from pydantic import BaseModel, ValidationError

from daemon.adapters.json_file import JsonFileError, read_json_object
from daemon.adapters.revision import config_revision
from daemon.core.demand import Demand, ResolveError, resolve_model
from daemon.core.desired import Config, FieldError, cross_field_problems
from daemon.errors import ConfigSyntaxError, ConfigValidationError, Problem

MAX_CONFIG_BYTES = 4 * 1024 * 1024  # a real config is a few KiB; refuse a runaway file early


@dataclass(frozen=True, kw_only=True)
class LoadedConfig:
    """A config that passed every check, with its models resolved and a revision to report."""

    path: Path
    config: Config
    demands: Mapping[str, Demand]
    content_hash: str
    # What every output names this config by: the CLI, the daemon's events, the state file
    # (adapters/revision.py: git:<commit>, git:<commit>-dirty:<hash> or sha256:<hash>).
    revision: str


def read_config_bytes(path: Path) -> bytes:
    """The file's bytes, or ConfigSyntaxError saying plainly why it cannot be read."""
    name = str(path)

    def fail(message: str) -> ConfigSyntaxError:
        return ConfigSyntaxError((Problem(file=name, location="", message=message),))

    try:
        if path.is_dir():
            raise fail("is a directory, expected a TOML file")
        size = path.stat().st_size
        if size > MAX_CONFIG_BYTES:
            raise fail(f"is {size} bytes; a config larger than {MAX_CONFIG_BYTES} bytes is refused")
        data = path.read_bytes()
    except FileNotFoundError:
        raise fail("file not found") from None
    except PermissionError:
        raise fail("permission denied: cannot read the file") from None
    except OSError as exc:
        raise fail(f"cannot read the file: {exc.strerror or exc}") from None
    if len(data) > MAX_CONFIG_BYTES:  # grew between stat and read
        raise fail(f"is larger than {MAX_CONFIG_BYTES} bytes; refused")
    return data


def _line_col(data: bytes, offset: int) -> str:
    before = data[:offset]
    line = before.count(b"\n") + 1
    col = offset - (before.rfind(b"\n") + 1) + 1
    return f"line {line}, column {col}"


def parse_toml(data: bytes, name: str) -> dict[str, Any]:
    """Bytes -> TOML document, or ConfigSyntaxError with line and column."""

    def fail(location: str, message: str) -> ConfigSyntaxError:
        return ConfigSyntaxError((Problem(file=name, location=location, message=message),))

    if not data.strip():
        raise fail(
            "",
            "the file is empty; refusing to act on it (an empty file is never taken "
            "as 'run no models')",
        )
    if b"\x00" in data:
        raise fail(
            _line_col(data, data.index(b"\x00")),
            "binary data (NUL byte); expected a UTF-8 TOML text file",
        )
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise fail(
            _line_col(data, exc.start), "not valid UTF-8; expected a UTF-8 TOML text file"
        ) from None
    try:
        return tomllib.loads(text)
    except RecursionError:
        raise fail(
            "", "nested too deeply to be a config (arrays or tables inside each other)"
        ) from None
    except tomllib.TOMLDecodeError as exc:
        # tomllib's message ends with "(at line L, column C)"; keep it, it is what people need.
        raise fail("", f"TOML syntax error: {exc}") from None


def _allowed_keys(model: type[BaseModel], loc: tuple[str | int, ...]) -> list[str] | None:
    """Keys the schema accepts in the table that ``loc`` (ending in the unknown key) points into.
    A ``dict[str, Model]`` field (``[cluster.workers."<address>"]``) takes one free key first."""
    current: object = model
    keyed = False
    for part in loc[:-1]:
        if keyed:
            keyed = False
            continue
        if not (isinstance(current, type) and issubclass(current, BaseModel)):
            return None
        info = current.model_fields.get(str(part))
        if info is None:
            return None
        current = info.annotation
        if get_origin(current) is dict:
            current = get_args(current)[1]
            keyed = True
    if isinstance(current, type) and issubclass(current, BaseModel):
        return sorted(current.model_fields)
    return None


def _schema_problems(exc: ValidationError, name: str) -> list[Problem]:
    problems = []
    for err in exc.errors(include_url=False, include_input=False):
        loc = tuple(err["loc"])
        message = str(err["msg"])
        original = (err.get("ctx") or {}).get("error")
        if isinstance(original, FieldError):
            loc = (*loc, original.key)
            message = str(original)
        elif message.startswith(("Value error, ", "Assertion failed, ")):
            message = message.split(", ", 1)[1]
        if err["type"] == "extra_forbidden":
            allowed = _allowed_for(loc)
            message = "unknown key" + (
                f"; expected one of: {', '.join(allowed)}" if allowed else ""
            )
        elif err["type"] == "missing":
            message = "required key is missing"
        path = ".".join(str(p) for p in loc)
        problems.append(Problem(file=name, location=path, message=message))
    return problems


def _allowed_for(loc: tuple[str | int, ...]) -> list[str] | None:
    from daemon.core import desired

    if len(loc) >= 2 and loc[0] == "models":
        return _allowed_keys(desired.ModelSpec, loc[2:])
    return _allowed_keys(desired.Config, loc)


def _read_hf_config(base: Path, ref: str) -> dict[str, Any]:
    return read_json_object((base / ref).expanduser(), what="config.json")


def check_config(
    document: Mapping[str, Any], *, name: str, base_dir: Path
) -> tuple[Config, dict[str, Demand]]:
    """A parsed TOML document -> validated config and resolved models, or ConfigValidationError."""
    try:
        config = Config.model_validate(dict(document))
    except ValidationError as exc:
        raise ConfigValidationError(tuple(_schema_problems(exc, name))) from None
    problems = [Problem(file=name, location=p, message=m) for p, m in cross_field_problems(config)]
    demands: dict[str, Demand] = {}
    for uid, spec in sorted(config.models.items()):
        hf_config = None
        if spec.architecture.hf_config is not None:
            try:
                hf_config = _read_hf_config(base_dir, spec.architecture.hf_config)
            except JsonFileError as exc:
                problems.append(
                    Problem(
                        file=name, location=f"models.{uid}.architecture.hf_config", message=str(exc)
                    )
                )
                continue
        try:
            demands[uid] = resolve_model(uid, spec, hf_config=hf_config)
        except ResolveError as exc:
            problems.append(
                Problem(file=name, location=f"models.{uid}.{exc.path}", message=str(exc))
            )
    if problems:
        raise ConfigValidationError(tuple(problems))
    return config, demands


def load_config(path: Path) -> LoadedConfig:
    """Read, parse, validate and resolve ``path``. Raises ConfigError with every problem found."""
    data = read_config_bytes(path)
    document = parse_toml(data, str(path))
    config, demands = check_config(document, name=str(path), base_dir=path.parent)
    content_hash = hashlib.sha256(data).hexdigest()[:12]
    return LoadedConfig(
        path=path,
        config=config,
        demands=demands,
        content_hash=content_hash,
        revision=config_revision(path, content_hash),
    )
