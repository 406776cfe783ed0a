"""From an engine's answer to a decision: validate names, apply the no-route policy.

Plain functions over typed values; the router worker calls ``decide_routes`` for each turn.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import msgspec

from router.catalog import AgentSpec, Catalog
from router.engine import EngineResult
from router.parse import known_routes
from schemas import ConversationEvent, Mode, RoutingDecision


class Routing(msgspec.Struct, frozen=True, kw_only=True):
    """The outcome of routing one turn, before anything is published."""

    routes: list[str]
    selected: list[str]
    dropped: list[str]
    default_used: bool
    fallback_reason: str | None


def decide_routes(result: EngineResult, agents: Sequence[AgentSpec], catalog: Catalog) -> Routing:
    """Keep only agents the turn may use; send no-route or failed turns to the default agent.

    The default agent applies when one is configured and is among ``agents`` (a turn restricted
    to other agents does not fall to it). A failed decision with no default is a no-route.
    """
    allowed = [a.name for a in agents]
    if result.failed:
        selected: list[str] = []
        dropped: list[str] = []
        reason: str | None = f"engine failed: {result.error}"
    else:
        selected, dropped = known_routes(result.routes, allowed)
        reason = None
    if selected:
        return Routing(routes=selected, selected=selected, dropped=dropped, default_used=False, fallback_reason=reason)
    default = catalog.default_agent
    if default is not None and default.name in allowed:
        return Routing(routes=[default.name], selected=[], dropped=dropped, default_used=True, fallback_reason=reason)
    return Routing(routes=[], selected=[], dropped=dropped, default_used=False, fallback_reason=reason)


def make_decision(
    event: ConversationEvent,
    routing: Routing,
    result: EngineResult,
    *,
    engine: str,
    mode: Mode,
    catalog_version: str,
    latency_ms: float,
    decided_at: datetime,
    worker: str = "",
) -> RoutingDecision:
    return RoutingDecision(
        event_id=event.event_id,
        conversation_id=event.conversation_id,
        tenant=event.tenant,
        routes=routing.routes,
        mode=mode,
        engine=engine,
        selected=routing.selected,
        dropped=routing.dropped,
        raw_output=result.raw_output,
        latency_ms=latency_ms,
        fallback_reason=routing.fallback_reason,
        default_used=routing.default_used,
        catalog_version=catalog_version,
        model=result.model,
        confidence=result.confidence,
        scores=result.scores,
        worker=worker,
        decided_at=decided_at,
    )
