"""A turn as people read it: the decision (routes, mode, engine, milliseconds), then the response's
status and each agent's reply. ``routeyard demo`` prints every scripted turn this way and
``routeyard send --wait`` prints its turn this way (``--json``: the raw response instead).

      decision: [WeatherAgent] mode=parallel engine=semantic 3.12 ms
      response: complete
        WeatherAgent    < Paris today: 21°C, light clouds, no rain expected.
"""

from __future__ import annotations

import asyncio

from routeyard.consumers.client import RouteyardClient
from routeyard.schemas import ConversationResponse, RoutingDecision

__all__ = ["decision_line", "describe", "wait_decision"]


async def wait_decision(
    client: RouteyardClient, response: ConversationResponse, patience_s: float = 15.0
) -> RoutingDecision | None:
    """The decision of a turn whose response came, from a client that watches decisions.

    Every response but ``rejected`` comes from a correlation that began with a decision, and the
    decision is published before the tasks, so it is certain to come; the decisions reader may only
    lag behind the responses reader (seconds on a loaded machine). None for a rejected turn, or if
    the decision does not come within ``patience_s``."""
    if response.status == "rejected":
        return None
    for _ in range(max(1, int(patience_s / 0.025))):
        if response.event_id in client.decisions:
            return client.decisions.pop(response.event_id)
        await asyncio.sleep(0.025)
    return None


def describe(decision: RoutingDecision | None, response: ConversationResponse) -> str:
    """The transcript lines of one turn, each indented by two spaces, ending in a newline."""
    lines = [decision_line(decision)] if decision is not None else []
    lines.append(f"  response: {response.status}" + (f" ({response.reason})" if response.reason else ""))
    for reply in response.replies:
        text = reply.content if reply.status == "ok" else f"error: {reply.error}"
        lines.append(f"    {reply.agent:<16}< {text}")
    if response.timed_out:
        lines.append(f"    timed out: {', '.join(response.timed_out)}")
    return "\n".join(lines) + "\n"


def decision_line(decision: RoutingDecision) -> str:
    """``  decision: [A, B] mode=parallel engine=rules 1.23 ms (why, if a fallback decided)``."""
    routes = " -> ".join(decision.routes) if decision.mode == "sequential" else ", ".join(decision.routes)
    why = f" ({decision.fallback_reason})" if decision.fallback_reason else ""
    return (
        f"  decision: [{routes or 'no route'}] mode={decision.mode} engine={decision.engine}"
        f" {decision.latency_ms:.2f} ms{why}"
    )
