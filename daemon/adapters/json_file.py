"""Reading a JSON file the user named (a model's config.json, a snapshot): one size limit and one
plain-language error for each way it can go wrong, never a traceback."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

MAX_JSON_BYTES = 16 * 1024 * 1024  # a config.json or a snapshot is KiB; refuse a runaway file early


class JsonFileError(ValueError):
    """The file cannot be used; the message names the file and says why (never its content)."""


def read_json_object(path: Path, *, what: str = "JSON file") -> dict[str, Any]:
    """The JSON object in ``path``, or JsonFileError saying why not."""
    try:
        size = path.stat().st_size
        if path.is_dir():
            raise JsonFileError(f"{path}: is a directory, expected a {what}")
        if size > MAX_JSON_BYTES:
            raise JsonFileError(
                f"{path}: is {size} bytes; a {what} larger than {MAX_JSON_BYTES} bytes is refused"
            )
        doc = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise JsonFileError(f"{path}: file not found") from None
    except PermissionError:
        raise JsonFileError(f"{path}: permission denied: cannot read the file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise JsonFileError(f"{path}: cannot read it ({exc.__class__.__name__})") from None
    except json.JSONDecodeError as exc:
        raise JsonFileError(
            f"{path}: not JSON ({exc.msg} at line {exc.lineno}, column {exc.colno})"
        ) from None
    except RecursionError:
        raise JsonFileError(f"{path}: nested too deeply to be a {what}") from None
    if not isinstance(doc, dict):
        raise JsonFileError(f"{path}: expected a JSON object, found {type(doc).__name__}")
    return doc
