"""JSON Schema for every wire message, for producers and agents written in other languages."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import msgspec

from schemas.messages import SCHEMA_VERSION, WIRE_MESSAGES


def json_schema(name: str) -> dict[str, Any]:
    """A self-contained JSON Schema (draft 2020-12) for one wire message."""
    schema: dict[str, Any] = msgspec.json.schema(WIRE_MESSAGES[name])
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = name
    schema["x-routeyard-schema-version"] = SCHEMA_VERSION
    return schema


def export_schemas(directory: Path) -> list[Path]:
    """Write ``<Name>.schema.json`` for every wire message into ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name in WIRE_MESSAGES:
        path = directory / f"{name}.schema.json"
        path.write_text(json.dumps(json_schema(name), indent=2, sort_keys=True) + "\n")
        written.append(path)
    return written
