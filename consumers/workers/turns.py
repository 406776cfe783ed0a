"""The turn log (logger ``routeyard.turns``): one line per turn answered, one per agent timeout,
one per decision. Coordinates only (ids, agents, status, milliseconds), never message content.

    turn 3f2a... conversation c1: complete [WeatherAgent] 52 ms
    turn 9b1c... conversation c2: WeatherAgent timed out after 10 s (attempt 1)
    decision 3f2a...: [WeatherAgent] engine=rules 0.4 ms                       (always at DEBUG)

Turns and timeouts are at INFO with ``Settings.log_turns`` (``routeyard dev`` sets it), else at
DEBUG: a production worker logs them only when asked to (ROUTEYARD_LOG_TURNS=true).
"""

from __future__ import annotations

import logging

from routeyard.router.correlation import Correlation, Outcome
from routeyard.schemas import RoutingDecision

__all__ = ["TurnLog", "decided", "log"]

log = logging.getLogger("routeyard.turns")


class TurnLog:
    def __init__(self, on: bool) -> None:
        self.level = logging.INFO if on else logging.DEBUG

    def responded(self, state: Correlation, status: str, took_s: float | None) -> None:
        if not log.isEnabledFor(self.level):
            return
        took = f"{took_s * 1000:.0f} ms" if took_s is not None and took_s >= 0 else "? ms"
        log.log(self.level, "turn %s%s: %s [%s] %s", state.event_id, _who(state), status, _routes(state), took)

    def timed_out(self, state: Correlation, outcome: Outcome) -> None:
        if not log.isEnabledFor(self.level):
            return
        timeout = next((s.timeout_s for s in state.slots if s.agent == outcome.agent), None)
        after = f" after {timeout:g} s" if timeout is not None else ""
        retry = ", retry scheduled" if outcome.retry else ""
        log.log(
            self.level,
            "turn %s%s: %s timed out%s (attempt %d%s)",
            state.event_id, _who(state), outcome.agent, after, outcome.attempt, retry,
        )  # fmt: skip


def decided(decision: RoutingDecision) -> None:
    """The router's decision of a turn, at DEBUG."""
    if log.isEnabledFor(logging.DEBUG):
        routes = ", ".join(decision.routes) or "no route"
        why = f" ({decision.fallback_reason})" if decision.fallback_reason else ""
        log.debug(
            "decision %s: [%s] engine=%s %.1f ms%s",
            decision.event_id, routes, decision.engine, decision.latency_ms, why,
        )  # fmt: skip


def _who(state: Correlation) -> str:
    tenant = f" tenant {state.tenant}" if state.tenant else ""
    return f" conversation {state.conversation_id}{tenant}"


def _routes(state: Correlation) -> str:
    return (" -> " if state.mode == "sequential" else ", ").join(state.routes) or "no route"
