"""Streamed replies on each bus (in memory, and the real broker: tansu) with the real Valkey: an
async-generator agent's chunks reach ``RouteyardClient.stream`` in order before the response, whose
content is their concatenation; a plain turn publishes no chunks; nobody reading the stream does
not hold the reply up; bad pieces and oversized replies are error replies with a one-line reason."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import msgspec
import pytest
from routeyard.consumers.agents.agent import agent
from routeyard.consumers.dev.embedded import EmbeddedValkey
from routeyard.consumers.kafka.bus import Bus
from routeyard.consumers.settings import Settings
from routeyard.schemas import AgentChunk, AgentTask, ConversationResponse, RoutingDecision, chunk_decoder

from tests.integration.stack import catalog, make_settings, read_all, running, spec

PIECES = ["Once ", "upon ", "a time, ", "a router ", "streamed. ☀"]
CATALOG = catalog(spec("StoryAgent", "story"), spec("WeatherAgent", "weather"), spec("BadAgent", "bad"))


@agent("StoryAgent", "tells a story, piece by piece")
async def story(task: AgentTask) -> AsyncIterator[str]:
    for piece in PIECES:
        await asyncio.sleep(0.02)
        yield piece


@agent("WeatherAgent", "answers at once")
async def weather(task: AgentTask) -> str:
    return "Sunny."


@agent("BadAgent", "yields what it should not", expose_errors=False)
async def bad(task: AgentTask) -> AsyncIterator[str]:
    yield "fine so far"
    if "huge" in task.messages[-1].content:
        while True:
            yield "x" * 60_000
    yield 42  # type: ignore[misc]


AGENTS = [story, weather, bad]


@pytest.fixture
def settings(bus: Bus, valkey: EmbeddedValkey, prefix: str) -> Settings:
    return make_settings(bus, valkey, prefix)


async def test_chunks_arrive_in_order_before_the_response_which_holds_their_concatenation(settings: Settings) -> None:
    async with running(settings, CATALOG, AGENTS) as client:
        items = [item async for item in client.stream("c-story", "tell me a story", timeout=30)]
    decision, *chunks, response = items
    assert isinstance(decision, RoutingDecision) and decision.routes == ["StoryAgent"]
    assert isinstance(response, ConversationResponse) and response.status == "complete"
    assert all(isinstance(c, AgentChunk) for c in chunks)
    assert [c.text for c in chunks] == PIECES  # type: ignore[union-attr]
    assert [c.seq for c in chunks] == list(range(len(PIECES)))  # type: ignore[union-attr]
    assert {(c.agent, c.task_id, c.attempt) for c in chunks} == {  # type: ignore[union-attr]
        ("StoryAgent", response.replies[0].task_id, 1)
    }
    assert response.content == "".join(PIECES)


async def test_parallel_turn_streams_one_agent_and_the_other_answers_whole(settings: Settings) -> None:
    async with running(settings, CATALOG, AGENTS) as client:
        items = [item async for item in client.stream("c-both", "a story and the weather", timeout=30)]
    chunks = [i for i in items if isinstance(i, AgentChunk)]
    response = items[-1]
    assert isinstance(response, ConversationResponse) and response.status == "complete"
    assert {c.agent for c in chunks} == {"StoryAgent"}
    assert {r.agent: r.content for r in response.replies} == {"StoryAgent": "".join(PIECES), "WeatherAgent": "Sunny."}


async def test_a_plain_turn_publishes_no_chunks_and_a_stream_nobody_reads_holds_nothing_up(
    settings: Settings,
) -> None:
    async with running(settings, CATALOG, AGENTS) as client:
        plain = await client.ask("c-plain", "tell me a story", timeout=30)
        assert plain.content == "".join(PIECES)
        assert await read_all(settings, settings.topics.streams, settle=0.3) == []
        # Asked for a stream, read by nobody: the reply comes as fast as ever.
        event = client.event("c-unread", "tell me a story")
        unread = await client.ask_many([msgspec.structs.replace(event, stream=True)], timeout=30)
    assert unread[0].content == "".join(PIECES)
    written = [chunk_decoder.decode(v) for v in await read_all(settings, settings.topics.streams, settle=0.3)]
    assert [c.text for c in written if c.event_id == event.event_id] == PIECES


async def test_a_piece_that_is_not_text_is_an_error_reply_saying_so(settings: Settings) -> None:
    async with running(settings, CATALOG, AGENTS) as client:
        items = [item async for item in client.stream("c-bad", "bad agent", timeout=30)]
    response = items[-1]
    assert isinstance(response, ConversationResponse) and response.status == "failed"
    (reply,) = response.replies
    assert (reply.status, reply.error, reply.content) == ("error", "BadAgent yielded int, not str", "")
    assert [i.text for i in items if isinstance(i, AgentChunk)] == ["fine so far"]


async def test_a_reply_over_max_reply_bytes_stops_at_the_bound(settings: Settings) -> None:
    async with running(settings, CATALOG, AGENTS) as client:
        items = [item async for item in client.stream("c-huge", "bad agent, huge please", timeout=30)]
    response = items[-1]
    assert isinstance(response, ConversationResponse)
    (reply,) = response.replies
    limit = settings.agent.max_reply_bytes
    assert reply.error == f"reply of more than {limit} bytes exceeds agent.max_reply_bytes"
    streamed = sum(len(i.text.encode()) for i in items if isinstance(i, AgentChunk))
    assert 0 < streamed <= limit
