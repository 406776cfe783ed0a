"""From an engine's answer to a decision: validate names, apply the no-route policy.

Plain functions over typed values; the router worker calls ``decide_routes`` for each turn.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime

import msgspec
from routeyard.router.catalog import AgentSpec, Catalog
from routeyard.router.engines.base import EngineResult
from routeyard.router.plano.parse import known_routes
from routeyard.schemas import ConversationEvent, Mode, RoutingDecision


class Routing(msgspec.Struct, frozen=True, kw_only=True):
    """The outcome of routing one turn, before anything is published."""

    routes: list[str]
    selected: list[str]
    dropped: list[str]
    default_used: bool
    fallback_reason: str | None
    abstained: bool = False
    circuit_open: list[str] = msgspec.field(default_factory=list)
    continuation: str | None = None
    """The agent the turn went back to because it answers that agent's question (``continuation.py``)."""


def decide_routes(
    result: EngineResult, agents: Sequence[AgentSpec], catalog: Catalog, *, min_confidence: float | None = None
) -> Routing:
    """Keep only agents the turn may use; send no-route, failed or unsure turns to the default agent.

    The default agent applies when one is configured and is among ``agents`` (a turn restricted
    to other agents does not fall to it). With ``min_confidence``, a decision whose confidence is
    below it abstains: the default agent takes the turn (no route without one). A failed decision
    with no default is a no-route. The reason is recorded in every such case.
    """
    allowed = [a.name for a in agents]
    if result.failed:
        selected: list[str] = []
        dropped: list[str] = []
        reason: str | None = f"engine failed: {result.error}"
    else:
        selected, dropped = known_routes(result.routes, allowed)
        reason = f"earlier engines failed: {result.fallback_reason}" if result.fallback_reason else None
    unsure = min_confidence is not None and result.confidence is not None and result.confidence < min_confidence
    if selected and not unsure:
        return Routing(routes=selected, selected=selected, dropped=dropped, default_used=False, fallback_reason=reason)
    if selected:
        reason = f"confidence {result.confidence:.3f} below {min_confidence:g}: abstained"
    default = catalog.default_agent
    routes = [default.name] if default is not None and default.name in allowed else []
    return Routing(
        routes=routes,
        selected=selected,
        dropped=dropped,
        default_used=bool(routes),
        fallback_reason=reason,
        abstained=bool(selected),
    )


def avoid_open_circuits(
    routing: Routing,
    admit: Callable[[str], bool],
    catalog: Catalog,
    allowed: Sequence[str],
    *,
    label: str = "circuit open",
) -> Routing:
    """Move routes away from agents whose circuit breaker is open.

    ``admit(name)`` says whether a turn may go to an agent now (asked at most once per name).
    A refused agent's turn goes to the first admitted agent of its ``fallback`` chain, else to
    the default agent, among ``allowed``; with neither it is dropped. The reason is recorded
    (``label``: "circuit open", or e.g. "unavailable" for registered agents that stopped
    heartbeating: those are not listed in ``circuit_open``).
    """
    answers: dict[str, bool] = {}

    def ok(name: str) -> bool:
        if name not in answers:
            answers[name] = admit(name)
        return answers[name]

    routes: list[str] = []
    opened: list[str] = []
    notes: list[str] = []
    for name in routing.routes:
        if ok(name):
            routes += [] if name in routes else [name]
            continue
        opened.append(name)
        substitute = _substitute(name, ok, catalog, allowed)
        notes.append(f"{name} -> {substitute}" if substitute else f"{name} dropped")
        if substitute and substitute not in routes:
            routes.append(substitute)
    if not opened:
        return routing
    reason = f"{label}: " + ", ".join(notes)
    if routing.fallback_reason:
        reason = f"{routing.fallback_reason}; {reason}"
    circuit_open = opened if label == "circuit open" else routing.circuit_open
    return msgspec.structs.replace(routing, routes=routes, circuit_open=circuit_open, fallback_reason=reason)


def _substitute(name: str, ok: Callable[[str], bool], catalog: Catalog, allowed: Sequence[str]) -> str | None:
    default = catalog.default_agent
    candidates = [*catalog.fallbacks(name), *([default.name] if default is not None else [])]
    return next((c for c in candidates if c != name and c in allowed and ok(c)), None)


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
        engine=result.engine or engine,
        selected=routing.selected,
        dropped=routing.dropped,
        raw_output=result.raw_output,
        latency_ms=latency_ms,
        fallback_reason=routing.fallback_reason,
        default_used=routing.default_used,
        abstained=routing.abstained,
        circuit_open=routing.circuit_open,
        continuation=routing.continuation,
        catalog_version=catalog_version,
        model=result.model,
        confidence=result.confidence,
        scores=result.scores,
        reason=result.reason,
        worker=worker,
        decided_at=decided_at,
    )
