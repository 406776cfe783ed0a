"""The gateway's reply reader when a request gives up waiting: the response that comes a moment
later is still stored for ``GET /v1/turns/{id}``, even when it lands between the request's timeout
and its ``keep``."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest
from routeyard.consumers.gateway.app import _wait
from routeyard.consumers.gateway.replies import Replies
from routeyard.consumers.kafka.bus import Outgoing
from routeyard.consumers.kafka.memory import MemoryBus
from routeyard.schemas import ConversationEvent, ConversationResponse, Message, encode


class Store:
    """TurnStore's calls, kept in memory."""

    def __init__(self) -> None:
        self.pending: set[str] = set()
        self.finished: dict[str, bytes] = {}

    async def pending_(self, tenant: str | None, event_id: str) -> None:
        self.pending.add(event_id)

    async def finish(self, responses: Sequence[tuple[str | None, str, bytes]]) -> None:
        self.finished.update((event_id, value) for _, event_id, value in responses)

    async def decide(self, tenant: str | None, event_id: str, decision: bytes) -> None:
        pass


async def test_a_response_after_the_timeout_and_before_keep_is_stored() -> None:
    bus, store = MemoryBus(), Store()
    turns = type("Turns", (), {"pending": store.pending_, "finish": store.finish, "decide": store.decide})()
    replies = Replies(bus, "gw.replies", "gw.decisions", "gw", turns, 20, streams_topic="gw.streams", keep_s=60)
    await bus.create_topics({"gw.decisions": 1, "gw.streams": 1})
    await replies.start()
    try:
        event = ConversationEvent(
            event_id="e1", conversation_id="c1", messages=[Message(role="user", content="hi")], reply_topic="gw.replies"
        )
        waiter = replies.expect(event)
        with pytest.raises(TimeoutError):
            await _wait(waiter.response, 0.01)
        assert waiter.response.cancelled()
        response = ConversationResponse(event_id="e1", conversation_id="c1", status="complete", replies=[])
        await bus.producer().publish([Outgoing("gw.replies", encode(response), "c1")])
        for _ in range(100):  # the reader takes it before the request's keep runs
            await asyncio.sleep(0)
        assert waiter.response.done() and not waiter.response.cancelled()
        await replies.keep("e1")
        assert store.pending == {"e1"} and "e1" in store.finished
    finally:
        await replies.stop()
