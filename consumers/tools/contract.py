"""``routeyard schema export DIR``: the whole contract for people in other languages, in one folder.

<Message>.schema.json   JSON Schema of each wire message (routeyard.schemas.export)
catalog.schema.json     JSON Schema of the agent catalog, for editors (yaml-language-server)
asyncapi.json           AsyncAPI 2.6: topics, record keys, consumer groups and messages together
                        (with a catalog, one channel per agent)
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from routeyard.router.catalog import Catalog, catalog_json_schema
from routeyard.schemas import Topics, export_schemas
from routeyard.schemas.asyncapi import asyncapi_document

__all__ = ["export_contract"]


def export_contract(directory: Path, topics: Topics, catalog: Catalog | None = None) -> list[Path]:
    """Write every file of the contract into ``directory``; returns their paths."""
    written = export_schemas(directory)
    agents = [(a.name, a.topic or topics.agent(a.name)) for a in catalog.agents] if catalog else []
    for name, document in (
        ("catalog.schema.json", catalog_json_schema()),
        ("asyncapi.json", asyncapi_document(topics, agents)),
    ):
        written.append(_write(directory / name, document))
    return written


def _write(path: Path, document: dict[str, Any]) -> Path:
    path.write_text(json.dumps(document, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return path
