"""Read and check a config file: TOML -> :class:`Config` -> resolved :class:`Demand` per model.

Every problem is collected with its file and key path (or line and column); nothing here ever
returns a half-checked config. A problem never shows a value from the file (it may be a secret).
"""

from __future__ import annotations

import hashlib
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, get_args, get_origin

from pydantic import BaseModel, ValidationError

from daemon.adapters.calibration_file import LedgerError, read_ledger
from daemon.adapters.json_file import JsonFileError, read_json_object
from daemon.adapters.revision import config_revision
from daemon.core.corrections import corrected
from daemon.core.demand import Demand, ResolveError, resolve_model
from daemon.core.desired import (
    Config,
    FieldError,
    ModelSpec,
    cross_field_problems,
    missing_custom_keys,
    model_problems,
)
from daemon.core.naming import uid_problem
from daemon.core.planning import launch_request_problems
from daemon.errors import ConfigSyntaxError, ConfigValidationError, Problem

if sys.version_info >= (3, 11):
    import tomllib
else:  # Python 3.10: the same parser, published as tomli (a dependency only there)
    import tomli as tomllib

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
    """A parsed TOML document -> validated config and resolved models, or ConfigValidationError
    with every problem found: a schema error anywhere does not hide the other models' problems."""
    try:
        config = Config.model_validate(dict(document))
    except ValidationError as exc:
        problems = _schema_problems(exc, name)
        problems += _problems_beside_schema_errors(document, name=name, base_dir=base_dir)
        raise ConfigValidationError(tuple(problems)) from None
    problems = [Problem(file=name, location=p, message=m) for p, m in cross_field_problems(config)]
    demands: dict[str, Demand] = {}
    for uid, spec in sorted(config.models.items()):
        demand, found = _check_model(uid, spec, name=name, base_dir=base_dir)
        problems += found
        if demand is not None:
            demands[uid] = demand
    ledger_path = config.calibration.file
    if ledger_path is not None and not problems:
        try:
            measured = read_ledger((base_dir / ledger_path).expanduser())
        except LedgerError as exc:
            problems.append(Problem(file=name, location="calibration.file", message=str(exc)))
        else:
            demands = dict(corrected(demands, measured))
    if problems:
        raise ConfigValidationError(tuple(problems))
    return config, demands


def _check_model(
    uid: str, spec: ModelSpec, *, name: str, base_dir: Path
) -> tuple[Demand | None, list[Problem]]:
    """One model past the schema: its launch request built and checked (what validates must be
    sendable, core/launch.py), then its memory demand resolved."""
    problems = [
        Problem(file=name, location=f"models.{uid}.{path}", message=message)
        for path, message in launch_request_problems(uid, spec)
    ]
    hf_config = None
    if spec.architecture.hf_config is not None:
        try:
            hf_config = _read_hf_config(base_dir, spec.architecture.hf_config)
        except JsonFileError as exc:
            where = f"models.{uid}.architecture.hf_config"
            return None, [*problems, Problem(file=name, location=where, message=str(exc))]
    try:
        return resolve_model(uid, spec, hf_config=hf_config), problems
    except ResolveError as exc:
        message = str(exc)
        if exc.path == "architecture" and spec.on_gpu:
            message += '; or, on a host without GPUs, run it on the CPU: placement.device = "cpu"'
        location = f"models.{uid}.{exc.path}"
        return None, [*problems, Problem(file=name, location=location, message=message)]


def _problems_beside_schema_errors(
    document: Mapping[str, Any], *, name: str, base_dir: Path
) -> list[Problem]:
    """When the file breaks the schema, the problems the schema check cannot see yet: every model
    that is valid on its own is checked as far as a valid file would be; for one that is not, the
    custom-model keys it lacks are still named (so they do not surface one run at a time)."""
    models = document.get("models")
    if not isinstance(models, Mapping):
        return []
    out: list[Problem] = []
    for uid, entry in sorted(models.items()):
        if not isinstance(entry, Mapping) or uid_problem(str(uid)):
            continue
        try:
            spec = ModelSpec.model_validate(dict(entry))
        except ValidationError:
            out += [
                Problem(file=name, location=f"models.{uid}.{path}", message=message)
                for path, message in _raw_custom_problems(entry)
            ]
            continue
        out += [
            Problem(file=name, location=f"models.{uid}.{path}", message=message)
            for path, message in model_problems(spec)
        ]
        out += _check_model(str(uid), spec, name=name, base_dir=base_dir)[1]
    return out


def _raw_custom_problems(entry: Mapping[str, Any]) -> list[tuple[str, str]]:
    custom = entry.get("custom")
    model_type = entry.get("model_type", "LLM")
    if not isinstance(custom, Mapping) or not isinstance(model_type, str):
        return []
    spec = custom.get("spec", {})
    return missing_custom_keys(
        model_type,
        spec if isinstance(spec, Mapping) else {},
        has_size=entry.get("model_size_in_billions") is not None,
    )


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
