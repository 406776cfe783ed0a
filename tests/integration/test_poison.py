"""Poison pills on each bus (memory, the real broker) with the real Valkey: a record whose data makes
a worker raise (JSON nested 1,000 levels deep, a created_at out of datetime's range, an outcome
over the broker's 1 MiB limit, megabytes of trace headers) costs that record one dead letter, or
its turn an error reply; the router, the correlator, the agent runtime and the client stay up and
the turns around it are answered. On the code before the fix each of these stopped a worker (the
next turn timed out)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer
from routeyard.consumers.dev.embedded import EmbeddedValkey
from routeyard.consumers.kafka.bus import MAX_REQUEST_SIZE, Bus, Outgoing
from routeyard.consumers.settings import Settings
from routeyard.schemas import DeadLetter, dead_letter_decoder, decision_decoder, response_decoder

from tests.integration.stack import Recorder, catalog, make_settings, memory, read_all, running, settled, spec

CATALOG = catalog(spec("WeatherAgent", "weather", timeout="5s"), spec("CodeAgent", "code", timeout="5s"))
DEEP = "[" * 1000 + "]" * 1000
"""About 2 KB of JSON nested 1,000 levels deep: msgspec raises RecursionError on it."""
TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


@pytest.fixture
def settings(bus: Bus, valkey: EmbeddedValkey, prefix: str) -> Settings:
    return make_settings(bus, valkey, prefix)


def event(event_id: str, text: str = "weather in Oslo?", **fields: Any) -> bytes:
    """An event as raw JSON (``fields`` may hold what the Structs would refuse to write)."""
    body = {"event_id": event_id, "conversation_id": f"conv-{event_id}", "messages": [], **fields}
    body["messages"] = [{"role": "user", "content": text}]
    return json.dumps(body).replace('"@DEEP@"', DEEP).encode()


async def send(
    settings: Settings, topic: str, value: bytes, headers: list[tuple[str, bytes]] | None = None
) -> tuple[str, int, int]:
    """One raw record, up to twice a routeyard producer's limit, as another producer could send;
    returns its (topic, partition, offset)."""
    bus = memory(settings)
    if bus is not None:
        (record,) = bus.append(
            [Outgoing(topic, value, key="poison", headers=headers or [])], limit=2 * MAX_REQUEST_SIZE
        )
        return record.topic, record.partition, record.offset
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka.bootstrap, max_request_size=2 * MAX_REQUEST_SIZE)
    await producer.start()
    try:
        sent = await producer.send_and_wait(topic, value, key=b"poison", headers=headers)
    finally:
        await producer.stop()
    return sent.topic, sent.partition, sent.offset


async def letters_for(settings: Settings, sent: tuple[str, int, int], *, timeout: float = 20) -> list[DeadLetter]:
    """The dead letters of the record at ``sent``, once there is one (then a settle more)."""
    async with asyncio.timeout(timeout):
        while True:
            found = [
                x
                for x in map(dead_letter_decoder.decode, await read_all(settings, settings.topics.dead_letters))
                if (x.source_topic, x.source_partition, x.source_offset) == sent
            ]
            if found:
                return found
            await asyncio.sleep(0.2)


# -- the conversations topic ------------------------------------------------------------------------

CONVERSATION_CRASHERS = {
    "deep-json-in-an-ignored-field": ({"ignored": "@DEEP@"}, "RecursionError"),
    "created-at-year-0-in-utc": ({"created_at": "0001-01-01T00:00:00+01:00"}, "not representable"),
    "naive-created-at-year-1": ({"created_at": "0001-01-01T00:00:00"}, "before 2000-01-01"),
    "rejected-event-of-800-kb": ({"padding": "p" * 800_000}, "larger than"),
}


@pytest.mark.parametrize("case", sorted(CONVERSATION_CRASHERS))
async def test_a_poison_event_costs_one_dead_letter_and_the_router_goes_on(settings: Settings, case: str) -> None:
    fields, reason = CONVERSATION_CRASHERS[case]
    raw = event(f"poison-{case}", **fields)
    async with running(settings, CATALOG, [Recorder().agent("WeatherAgent")]) as client:
        before = await client.ask("c-before", "weather before?", timeout=30)
        sent = await send(settings, settings.topics.conversations, raw)
        after = await client.ask("c-after", "weather after?", timeout=20)
        (letter,) = await letters_for(settings, sent)
        await settled(settings, 1.0)  # a second letter (a crash-loop redoing it) would come by now
        assert len(await letters_for(settings, sent)) == 1
    assert (before.status, after.status) == ("complete", "complete")
    assert reason in letter.error or reason == letter.error_type, letter.error
    assert letter.original_size == len(raw) and len(letter.original) <= len(raw)
    assert letter.truncated == (len(raw) > 64 * 1024)


async def test_megabytes_of_trace_headers_give_a_normal_decision_and_response(settings: Settings) -> None:
    headers = [("traceparent", b"0" * 550_000), ("tracestate", b"k=" + b"v" * 550_000)]
    async with running(settings, CATALOG, [Recorder().agent("WeatherAgent")]) as client:
        await client.ask("c-before", "weather before?", timeout=30)
        event_id = "poison-headers"
        await send(settings, settings.topics.conversations, event(event_id), headers)
        ok_headers = [("traceparent", TRACEPARENT.encode()), ("tracestate", b"x" * 513)]
        await send(settings, settings.topics.conversations, event("fine-headers"), ok_headers)
        after = await client.ask("c-after", "weather after?", timeout=20)
        responses = await _responses(settings, {event_id, "fine-headers"})
    assert after.status == "complete"
    assert responses[event_id].status == "complete" and responses["fine-headers"].status == "complete"
    decisions = {d.event_id for d in map(decision_decoder.decode, await read_all(settings, settings.topics.decisions))}
    assert {event_id, "fine-headers"} <= decisions


async def _responses(settings: Settings, event_ids: set[str], timeout: float = 20) -> dict[str, Any]:
    async with asyncio.timeout(timeout):
        while True:
            found = {
                r.event_id: r
                for r in map(response_decoder.decode, await read_all(settings, settings.topics.responses))
                if r.event_id in event_ids
            }
            if set(found) == event_ids:
                return found
            await asyncio.sleep(0.2)


# -- replies, tasks, responses ------------------------------------------------------------------------


async def test_a_deep_reply_costs_one_dead_letter_and_the_correlator_goes_on(settings: Settings) -> None:
    reply = {"task_id": "t", "event_id": "e", "conversation_id": "c", "agent": "WeatherAgent", "x": "@DEEP@"}
    async with running(settings, CATALOG, [Recorder().agent("WeatherAgent")]) as client:
        await client.ask("c-before", "weather before?", timeout=30)
        sent = await send(settings, settings.topics.replies, json.dumps(reply).replace('"@DEEP@"', DEEP).encode())
        after = await client.ask("c-after", "weather after?", timeout=20)
        (letter,) = await letters_for(settings, sent)
    assert after.status == "complete"
    assert letter.stage == "correlate" and letter.error_type == "RecursionError"


async def test_a_deep_task_costs_one_dead_letter_and_the_agent_goes_on(settings: Settings) -> None:
    async with running(settings, CATALOG, [Recorder().agent("WeatherAgent")]) as client:
        await client.ask("c-before", "weather before?", timeout=30)
        task = {"task_id": "t", "x": "@DEEP@"}
        sent = await send(
            settings, settings.topics.agent("WeatherAgent"), json.dumps(task).replace('"@DEEP@"', DEEP).encode()
        )
        after = await client.ask("c-after", "weather after?", timeout=20)
        (letter,) = await letters_for(settings, sent)
    assert after.status == "complete" and not after.timed_out
    assert letter.stage == "agent" and letter.error_type == "RecursionError"


async def test_a_deep_response_is_skipped_by_the_client(settings: Settings) -> None:
    async with running(settings, CATALOG, [Recorder().agent("WeatherAgent")]) as client:
        await client.ask("c-before", "weather before?", timeout=30)  # the client is reading responses
        response = {"event_id": "e", "conversation_id": "c", "status": "complete", "x": "@DEEP@"}
        await send(settings, settings.topics.responses, json.dumps(response).replace('"@DEEP@"', DEEP).encode())
        after = await client.ask("c-after", "weather after?", timeout=20)
    assert after.status == "complete"


def _big(name: str, size: int) -> Any:
    from routeyard.consumers.agents.agent import agent
    from routeyard.schemas import AgentTask

    async def handle(task: AgentTask) -> str:
        return "weather" * (size // 7) if "big" in task.messages[-1].content else f"{name}: small"

    return agent(name, f"test agent {name}")(handle)


async def test_two_600_kb_replies_give_a_response_that_fits(settings: Settings) -> None:
    # Agents allowed to send 600 KB each: the correlator bounds what it records.
    settings = settings.model_copy(update={"agent": settings.agent.model_copy(update={"max_reply_bytes": 700_000})})
    async with running(settings, CATALOG, [_big("WeatherAgent", 600_000), _big("CodeAgent", 600_000)]) as client:
        big = await client.ask("c-big", "big weather and code", timeout=30)
        after = await client.ask("c-after", "small weather and code", timeout=20)
        raw = [v for v in await read_all(settings, settings.topics.responses) if b"c-big" in v]
    assert big.status == "failed" and len(big.replies) == 2
    assert all(r.status == "error" and "exceeds correlator.max_reply_bytes" in (r.error or "") for r in big.replies)
    assert len(raw) >= 1 and all(len(v) < MAX_REQUEST_SIZE for v in raw)
    assert after.status == "complete"


async def test_an_agent_returning_over_1_mb_sends_an_error_reply_and_goes_on(settings: Settings) -> None:
    async with running(settings, CATALOG, [_big("WeatherAgent", 1_100_000)]) as client:
        big = await client.ask("c-big", "big weather", timeout=30)
        after = await client.ask("c-after", "small weather", timeout=20)
    assert big.status == "failed" and not big.timed_out
    assert "exceeds agent.max_reply_bytes" in (big.replies[0].error or "")
    assert after.status == "complete" and after.content == "WeatherAgent: small"


async def test_dlq_replay_refuses_a_truncated_letter(settings: Settings, redis_client: Any) -> None:
    from routeyard.consumers.tools.dlq import Letter, redrive, refusal

    letter = DeadLetter(
        original=b"p" * 10,
        original_size=800_000,
        truncated=True,
        error="too large",
        stage="decode",
        source_topic=settings.topics.conversations,
        source_partition=0,
        source_offset=5,
    )
    result = await redrive(settings, redis_client, [Letter(0, 7, letter)])
    assert (result.published, result.refused) == ([], [Letter(0, 7, letter)])
    assert refusal(result.refused[0]) == (
        "refused: 0:7 is truncated (original 800000 bytes, 10 kept): it cannot be re-driven byte for byte"
    )
