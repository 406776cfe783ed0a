"""The transcript waits for a turn's decision as long as one is certain to come: the decisions
reader can lag seconds behind the responses reader on a loaded machine (a CI run printed a turn
without its decision line when the wait was one second)."""

from __future__ import annotations

import asyncio
import time
from types import SimpleNamespace
from typing import Any

import pytest
from routeyard.consumers import client as client_module
from routeyard.consumers.cli.transcript import describe, wait_decision
from routeyard.consumers.client import RouteyardClient
from routeyard.consumers.kafka.bus import Outgoing
from routeyard.consumers.kafka.memory import MemoryBus
from routeyard.schemas import ConversationResponse, RoutingDecision, encode

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


async def test_a_decision_read_after_its_response_is_kept() -> None:
    """One consumer reads responses and decisions: the response can come first, and then the turn
    is no longer awaited when its decision is read. The client keeps it (CI printed a no-route turn
    without its decision line: the router writes both within milliseconds), and only for the
    conversation the turn was sent in."""
    bus = MemoryBus()
    await bus.create_topics({"t.responses": 1, "t.decisions": 1, "t.conversations": 1})
    async with RouteyardClient(bus=bus, prefix="t.", watch_decisions=True) as client:
        event = client.event("c1", "thanks, bye")
        asking = asyncio.ensure_future(client.ask_many([event], timeout=10))
        while not bus.records("t.conversations"):
            await asyncio.sleep(0.01)
        response = ConversationResponse(event_id=event.event_id, conversation_id="c1", status="no_route")
        await bus.producer().publish([Outgoing("t.responses", encode(response), key="c1")])
        (answered,) = await asking
        forged = RoutingDecision(
            event_id=event.event_id, conversation_id="other", routes=["X"], mode="parallel", engine="x"
        )
        decision = RoutingDecision(
            event_id=event.event_id, conversation_id="c1", routes=[], mode="parallel", engine="rules"
        )
        await bus.producer().publish(
            [Outgoing("t.decisions", encode(forged), key="c1"), Outgoing("t.decisions", encode(decision), key="c1")]
        )
        assert await wait_decision(client, answered, patience_s=5) == decision


async def test_a_forged_decision_of_an_awaited_turn_is_ignored_and_kept_decisions_are_bounded(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(client_module, "LATE_DECISIONS", 2)
    bus = MemoryBus()
    await bus.create_topics({"t.responses": 1, "t.decisions": 1, "t.conversations": 1})
    async with RouteyardClient(bus=bus, prefix="t.", watch_decisions=True) as client:
        events = [client.event(f"c{i}", "hi") for i in range(3)]
        asking = asyncio.ensure_future(client.ask_many(events, timeout=10))
        while len(bus.records("t.conversations")) < 3:
            await asyncio.sleep(0.01)
        out = [
            RoutingDecision(
                event_id=e.event_id, conversation_id=e.conversation_id, routes=[], mode="parallel", engine="rules"
            )
            for e in events
        ]
        out += [  # after the genuine one, with the awaited turn's id and another conversation
            RoutingDecision(
                event_id=events[2].event_id, conversation_id="other", routes=["X"], mode="parallel", engine="x"
            )
        ]
        await bus.producer().publish([Outgoing("t.decisions", encode(d), key="k") for d in out])
        await bus.producer().publish(
            [
                Outgoing(
                    "t.responses",
                    encode(
                        ConversationResponse(event_id=e.event_id, conversation_id=e.conversation_id, status="no_route")
                    ),
                    key="k",
                )
                for e in events
            ]
        )
        await asking
    assert list(client.decisions) == [events[1].event_id, events[2].event_id]  # the newest two
    assert all(d.conversation_id != "other" for d in client.decisions.values())
