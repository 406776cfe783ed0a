"""What ``routeyard replay`` compares against when the user does not say: by default the candidate is
what the recorded decisions were made with, so a bare ``replay`` after ``routeyard dev`` compares
like with like.

    engine:  --engine, else ROUTEYARD_ROUTER__ENGINE if set, else the engine most recorded decisions
             name, else the settings' default (rules)
    catalog: --catalog, else ROUTEYARD_ROUTER__CATALOG if set, else ./agents.yaml if it exists, else
             the demo catalog if the recorded decisions were made with it; otherwise a UsageError
             asking for --catalog

``--engine``/``--catalog`` reach here as set fields of ``settings.router`` (``model_fields_set``).
"""

from __future__ import annotations

import asyncio
import typing
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from routeyard.consumers.errors import UsageError
from routeyard.consumers.settings import EngineName, Settings
from routeyard.schemas import RoutingDecision

ENGINES: tuple[str, ...] = typing.get_args(EngineName)


def candidate_settings(settings: Settings, *, fallback: Sequence[str] | None = None) -> Settings:
    """``settings`` with the candidate's engine, fallback and catalog filled in as above."""
    chosen = settings.router.model_fields_set
    decisions = [] if {"engine", "catalog"} <= chosen else asyncio.run(recorded_decisions(settings))
    update: dict[str, object] = {"fallback": list(fallback if fallback is not None else settings.router.fallback)}
    if "engine" not in chosen:
        update["engine"] = recorded_engine(decisions) or settings.router.engine
    if "catalog" not in chosen:
        update["catalog"] = default_catalog(settings.router.catalog, decisions)
    return settings.model_copy(update={"router": settings.router.model_copy(update=update)})


async def recorded_decisions(settings: Settings) -> list[RoutingDecision]:
    from routeyard.consumers.tools.replay import read_topics
    from routeyard.schemas import DecodeError, decision_decoder

    topic = settings.topics.decisions
    decisions = []
    for record in (await read_topics(settings.kafka, [topic]))[topic]:
        try:
            decisions.append(decision_decoder.decode(record.value or b""))
        except DecodeError:
            continue
    return decisions


def recorded_engine(decisions: Sequence[RoutingDecision]) -> str | None:
    """The engine most decisions name (one routeyard knows), or None."""
    counts = Counter(d.engine for d in decisions if d.engine in ENGINES)
    return counts.most_common(1)[0][0] if counts else None


def default_catalog(default: Path, decisions: Sequence[RoutingDecision]) -> Path:
    if default.is_file():
        return default
    from routeyard.consumers.dev.server import DEMO_CATALOG
    from routeyard.router.catalog import load_catalog

    versions = {d.catalog_version for d in decisions}
    if versions and versions <= {load_catalog(DEMO_CATALOG).version}:
        return DEMO_CATALOG
    recorded = ", ".join(sorted(v or "?" for v in versions)) or "none recorded"
    raise UsageError(
        f"replay needs a catalog: pass --catalog FILE (or set ROUTEYARD_ROUTER__CATALOG); "
        f"{default} does not exist and the recorded decisions' catalog ({recorded}) is not the demo's"
    )
