"""JSON Schema for every wire message, for producers and agents written in other languages."""

from __future__ import annotations

import json
import typing
from datetime import datetime
from pathlib import Path
from typing import Any

import msgspec
from routeyard.schemas.messages import SCHEMA_VERSION, WIRE_MESSAGES


def json_schema(name: str) -> dict[str, Any]:
    """A self-contained JSON Schema (draft 2020-12) for one wire message."""
    schema: dict[str, Any] = msgspec.json.schema(WIRE_MESSAGES[name])
    mark_datetimes(schema.get("$defs", {}))
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


def mark_datetimes(definitions: dict[str, Any]) -> None:
    """msgspec writes datetimes as plain strings; say they are RFC 3339 timestamps (in place, in
    the struct ``definitions`` of a schema)."""
    for name, definition in definitions.items():
        struct = _structs().get(name)
        if struct is None:
            continue
        for field in msgspec.structs.fields(struct):
            if datetime in _types(field.type):
                prop = definition["properties"][field.encode_name]
                for option in prop.get("anyOf", [prop]):
                    if option.get("type") == "string":
                        option["format"] = "date-time"


def _structs() -> dict[str, type[msgspec.Struct]]:
    found: dict[str, type[msgspec.Struct]] = {}
    pending = list(WIRE_MESSAGES.values())
    while pending:
        struct = pending.pop()
        if struct.__name__ in found:
            continue
        found[struct.__name__] = struct
        for field in msgspec.structs.fields(struct):
            pending += [t for t in _types(field.type) if isinstance(t, type) and issubclass(t, msgspec.Struct)]
    return found


def _types(annotation: Any) -> list[Any]:
    args = typing.get_args(annotation)
    return [t for arg in args for t in _types(arg)] if args else [annotation]
