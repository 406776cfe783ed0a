"""The decision-engine interface: a batch of routing requests in, one result per request out.

Every engine (rules, in-process vLLM, OpenAI-compatible HTTP, semantic) implements
``DecisionEngine``. Engines are created and closed in one async context manager::

    async with engine:
        results = await engine.decide(requests)

``decide`` returns results in request order. A request the engine could not decide gets a
result with ``error`` set (the router then applies its fallback), never an exception.

Errors::

    Exception           from ``decide``: the engine could not answer this batch (timeout,
                        server unreachable, ...). Retriable by another engine: the fallback
                        chain treats every request of the batch as failed.
    EngineDead          the engine is gone for good (its process died). Not retriable: the
                        worker exits non-zero without committing, and a supervisor restarts it.
"""

from __future__ import annotations

from collections.abc import Sequence
from types import TracebackType
from typing import Protocol, Self, runtime_checkable

import msgspec
from routeyard.router.catalog import AgentSpec
from routeyard.router.errors import EngineDead as EngineDead
from routeyard.schemas import Message


class RoutingRequest(msgspec.Struct, frozen=True, kw_only=True):
    """One turn to route: the conversation so far (ending with the new user turn) and the agents."""

    event_id: str
    conversation: list[Message]
    agents: tuple[AgentSpec, ...]


class EngineResult(msgspec.Struct, frozen=True, kw_only=True):
    """What an engine answered for one request.

    ``routes`` may still contain names outside the catalog (the model's raw answer, parsed);
    the router drops and counts those. ``error`` set means "failed decision": fall back.
    """

    routes: list[str] = msgspec.field(default_factory=list)
    raw_output: str | None = None
    error: str | None = None
    confidence: float | None = None
    scores: dict[str, float] | None = None
    model: str | None = None
    engine: str | None = None
    """Which engine answered (set by the fallback chain; None: the engine that was asked)."""
    fallback_reason: str | None = None
    """Why earlier engines of the chain did not decide, when a later one did."""
    reason: str | None = None
    """Why the engine decided so, in its own terms (the threshold or rule that decided), for the
    decision record and ``routeyard explain``; None where the raw output is the reason (models)."""

    @property
    def failed(self) -> bool:
        return self.error is not None


@runtime_checkable
class DecisionEngine(Protocol):
    """A routing engine. ``name`` goes into every decision it makes."""

    name: str

    async def decide(self, requests: Sequence[RoutingRequest]) -> list[EngineResult]: ...

    def prefix_cache_hit_rate(self) -> float | None:
        """Share of prompt tokens served from the engine's prefix cache so far; None where the
        engine has no prefix cache or has not reported yet (an optional capability)."""
        ...

    async def __aenter__(self) -> DecisionEngine: ...

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...


class EngineBase:
    """Convenience base: a no-op context manager and no optional capabilities. Engines with
    resources or capabilities override these."""

    name = "engine"

    def prefix_cache_hit_rate(self) -> float | None:
        return None

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        return None
