"""The config's JSON Schema, generated from the pydantic model (committed as schemas/)."""

from __future__ import annotations

import json

from daemon.core.desired import Config

SCHEMA_ID = (
    "https://github.com/xinference-reconciler/xinference-reconciler/schemas/config.schema.json"
)


def config_schema() -> dict[str, object]:
    schema = Config.model_json_schema(mode="validation")
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": SCHEMA_ID,
        "title": "xinference-reconciler config",
        **schema,
    }


def config_schema_text() -> str:
    return json.dumps(config_schema(), indent=2, sort_keys=True) + "\n"
