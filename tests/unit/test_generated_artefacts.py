"""Generated artefacts must match the model: the committed JSON Schema and the example config."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import jsonschema

from daemon.schema import config_schema, config_schema_text

if sys.version_info >= (3, 11):
    import tomllib
else:  # Python 3.10: the same parser, published as tomli
    import tomli as tomllib

REPO = Path(__file__).resolve().parents[2]


def test_committed_schema_is_up_to_date() -> None:
    committed = (REPO / "schemas" / "config.schema.json").read_text()
    assert committed == config_schema_text(), (
        "regenerate with: xinference-reconciler schema > schemas/config.schema.json"
    )


def test_schema_is_a_valid_json_schema_and_accepts_the_example() -> None:
    schema = config_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    example = tomllib.loads((REPO / "config.example.toml").read_text())
    jsonschema.validate(example, schema)


def test_example_starts_with_a_schema_directive_editors_understand() -> None:
    first = (REPO / "config.example.toml").read_text().splitlines()[0]
    assert first == "#:schema ./schemas/config.schema.json"


def test_every_config_field_is_documented_in_the_schema() -> None:
    """Editors show these texts; a field or table without one is a documentation bug."""
    schema: dict[str, Any] = config_schema()
    tables = {"#": schema, **{f"#/$defs/{k}": v for k, v in schema["$defs"].items()}}
    undocumented = []
    for where, table in tables.items():
        assert table.get("description"), f"{where} has no docstring"
        for name, prop in table.get("properties", {}).items():
            ref = prop.get("$ref")
            if not prop.get("description") and not (ref and tables[ref].get("description")):
                undocumented.append(f"{where}.{name}")
    assert not undocumented


def test_example_snapshot_round_trips() -> None:
    from daemon.adapters.snapshot_file import load_snapshot, observed_to_document

    path = REPO / "examples" / "observed-rag-host.json"
    doc = observed_to_document(load_snapshot(path))
    assert doc == {**json.loads(path.read_text())}
