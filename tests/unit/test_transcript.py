"""The transcript waits for a turn's decision as long as one is certain to come: the decisions
reader can lag seconds behind the responses reader on a loaded machine (a CI run printed a turn
without its decision line when the wait was one second)."""

from __future__ import annotations

import asyncio
import time
from types import SimpleNamespace
from typing import Any

from routeyard.consumers.cli.transcript import describe, wait_decision
from routeyard.schemas import ConversationResponse, RoutingDecision

DECISION = RoutingDecision(event_id="e1", conversation_id="c1", routes=[], mode="parallel", engine="semantic")


def _client() -> Any:
    return SimpleNamespace(decisions={})


async def test_a_decision_read_late_is_still_printed() -> None:
    client = _client()
    response = ConversationResponse(event_id="e1", conversation_id="c1", status="no_route")
    asyncio.get_running_loop().call_later(2.0, client.decisions.__setitem__, "e1", DECISION)
    decision = await wait_decision(client, response)
    assert decision is DECISION and "e1" not in client.decisions
    assert describe(decision, response).startswith("  decision: [no route] mode=parallel engine=semantic")


async def test_a_rejected_turn_has_no_decision_to_wait_for() -> None:
    response = ConversationResponse(event_id="e1", conversation_id="c1", status="rejected", reason="too big")
    began = time.monotonic()
    assert await wait_decision(_client(), response) is None
    assert time.monotonic() - began < 0.1


async def test_a_decision_that_never_comes_ends_the_wait() -> None:
    response = ConversationResponse(event_id="e1", conversation_id="c1", status="complete")
    assert await wait_decision(_client(), response, patience_s=0.2) is None
