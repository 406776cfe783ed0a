"""Issue 13, defects 4-6 on each bus (memory, the real broker) with the real Valkey: every
event ends as exactly one outcome, an event that is not decided never changes context, a rejected
turn answers its sender, and a finished turn leaves only a small done marker in Redis.

Names added by the fix are imported inside the tests, so the others still run (and fail for
their own reason) on code without them.
"""

from __future__ import annotations

import asyncio
import collections
import os
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable

import pytest
import redis.asyncio as redis
from routeyard.consumers.app import create_topics, stores
from routeyard.consumers.kafka.bus import Outgoing, Record
from routeyard.consumers.kafka.records import partition_of
from routeyard.consumers.metrics import METRICS, child
from routeyard.consumers.workers.router import RouterWorker
from routeyard.router.engines.rules import RulesEngine
from routeyard.schemas import AgentReply, ConversationEvent, Message, dead_letter_decoder, encode, response_decoder

from tests.integration.stack import Recorder, bus_for, catalog, make_settings, publisher, read_all, running, spec

CATALOG = catalog(spec("WeatherAgent", "weather"))


async def _until(check: Callable[[], Awaitable[bool]], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.05)


def _event(event_id: str, conversation: str, text: str, **fields: object) -> ConversationEvent:
    return ConversationEvent(
        event_id=event_id, conversation_id=conversation, messages=[Message(role="user", content=text)], **fields
    )  # type: ignore[arg-type]


async def test_event_id_reused_by_another_conversation_is_dead_lettered_and_never_appended(
    bus, valkey, prefix, redis_client
) -> None:
    settings = make_settings(bus, valkey, prefix)
    context, _ = stores(settings, redis_client)
    # Correlations live in their conversation's partition (stores/slots.py): the other conversation
    # is in another partition, so only the event id's claim can see the reuse.
    other = _other_partition("conv-a", settings.kafka.partitions)
    async with running(settings, CATALOG, [Recorder().agent("WeatherAgent")]) as client:
        (first,) = await client.ask_many([_event("shared-id", "conv-a", "weather for the secret trip")], timeout=30)
        assert first.status == "complete"
        (second,) = await client.ask_many([_event("shared-id", other, "weather in Oslo")], timeout=10)
    assert second.status == "rejected" and second.conversation_id == other
    assert "event id already used by another conversation" in (second.reason or "")
    assert "secret" not in (second.reason or "")
    letters = [dead_letter_decoder.decode(v) for v in await read_all(settings, settings.topics.dead_letters)]
    assert [("already used by another conversation" in d.error) for d in letters] == [True]
    assert "secret" not in letters[0].error
    assert await context.load(None, other) == []  # not decided: no context


def _other_partition(conversation: str, partitions: int) -> str:
    mine = partition_of(conversation.encode(), partitions)
    return next(c for i in range(1000) if partition_of((c := f"conv-b{i}").encode(), partitions) != mine)


async def test_an_old_event_replayed_after_its_seen_id_was_forgotten_changes_no_context(
    bus, valkey, prefix, redis_client
) -> None:
    settings = make_settings(bus, valkey, prefix)
    context, _ = stores(settings, redis_client)
    old = _event("old-turn", "c", "weather for the OLD-TURN")
    newer = [_event(f"n{i}", "c", f"nothing to route {i}") for i in range(context.seen_kept + 10)]
    async with running(settings, CATALOG, [Recorder().agent("WeatherAgent")]) as client:
        assert (await client.ask_many([old], timeout=30))[0].status == "complete"
        await client.ask_many(newer, timeout=60)
        assert not any("OLD-TURN" in m.content for m in await context.load(None, "c"))  # trimmed out by now
        await client.publish([old])  # replayed, e.g. by an operator's tool
        await client.ask_many([_event("after", "c", "still nothing")], timeout=30)  # same partition, after it
    assert not any("OLD-TURN" in m.content for m in await context.load(None, "c"))
    on_topic = collections.Counter(
        response_decoder.decode(v).event_id for v in await read_all(settings, settings.topics.responses)
    )
    assert on_topic["old-turn"] == 1


def _record(topic: str, offset: int, value: bytes) -> Record:
    return Record(topic=topic, partition=0, offset=offset, key=b"k", value=value)


async def test_a_redone_batch_publishes_its_dead_letters_and_rejections_once(bus, valkey, prefix, redis_client) -> None:
    settings = make_settings(bus, valkey, prefix)
    await create_topics(settings, CATALOG, bus_for(settings))
    context, store = stores(settings, redis_client)
    async with publisher(settings) as producer:
        worker = RouterWorker(
            settings=settings,
            catalog=CATALOG,
            engine=RulesEngine(),
            consumer=None,  # type: ignore[arg-type]  # handle() does not consume
            producer=producer,
            context=context,
            store=store,
        )
        topic = settings.topics.conversations
        records = [
            _record(topic, 7, encode(_event("bad-agents", "c", "weather", agents=["NoSuchAgent"]))),
            _record(topic, 8, b"{not json"),
        ]
        await worker.handle(records)
        await worker.handle(records)  # redone: e.g. the process died after publishing, before its commit
    letters = [dead_letter_decoder.decode(v) for v in await read_all(settings, settings.topics.dead_letters)]
    assert sorted(d.source_offset for d in letters) == [7, 8]
    responses = [response_decoder.decode(v) for v in await read_all(settings, settings.topics.responses)]
    assert [(r.event_id, r.status) for r in responses] == [("bad-agents", "rejected")]


async def test_a_rejected_turn_raises_turn_rejected_at_once(bus, valkey, prefix) -> None:
    from routeyard import TurnRejected

    settings = make_settings(bus, valkey, prefix)
    async with running(settings, CATALOG, [Recorder().agent("WeatherAgent")]) as client:
        await client.ask("warm-up", "weather?", timeout=30)  # the stack is up
        started = time.monotonic()
        with pytest.raises(TurnRejected) as info:
            await client.ask("c", "weather in Oslo?", agents=["NoSuchAgent"], event_id="ev-rej", timeout=30)
        took = time.monotonic() - started
    assert took < 5
    assert info.value.event_id == "ev-rej" and "unknown agents" in info.value.reason
    assert str(info.value).startswith("turn ev-rej rejected: unknown agents")


@pytest.mark.integration  # the CLI in a child process: the real broker only
async def test_send_wait_on_a_rejected_turn_prints_one_line_and_fails(broker, valkey, prefix) -> None:
    settings = make_settings(broker, valkey, prefix)
    env = {
        **os.environ,
        "ROUTEYARD_TOPIC_PREFIX": settings.topic_prefix,
        "ROUTEYARD_KAFKA__BOOTSTRAP": settings.kafka.bootstrap,
    }
    command = [sys.executable, "-m", "routeyard.consumers.cli", "send", "c", "weather?", "--agents", "Nope", "--wait"]
    async with running(settings, CATALOG, [Recorder().agent("WeatherAgent")]) as client:
        await client.ask("warm-up", "weather?", timeout=30)
        process = await asyncio.create_subprocess_exec(
            *command, "--timeout", "20", env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        out, err = await asyncio.wait_for(process.communicate(), 60)
    lines = out.decode().splitlines() + err.decode().splitlines()
    assert process.returncode != 0, lines
    assert "Traceback" not in err.decode(), err.decode()[-2000:]
    event_id = out.decode().splitlines()[0].strip()
    assert len(event_id) == 32  # the event id first, so `routeyard explain` can be used
    rejected = [line for line in lines if "rejected" in line]
    assert len(rejected) == 1 and event_id in rejected[0] and "unknown agents" in rejected[0]


async def test_a_finished_turn_leaves_a_small_done_marker_and_late_replies_are_counted(
    bus, valkey, prefix, redis_client: redis.Redis
) -> None:
    settings = make_settings(bus, valkey, prefix)
    _, store = stores(settings, redis_client)
    key = store.key("acme", "c", "big")
    late = child(METRICS.replies, outcome="late")
    async with running(settings, CATALOG, [Recorder().agent("WeatherAgent")]) as client:
        client.tenant = "acme"
        response = await client.ask("c", "weather " + "x" * 2000, event_id="big", timeout=30)
        assert response.status == "complete"

        async def settled() -> bool:  # the outbox cleared: nothing due any more
            return await redis_client.exists(key) == 1 and await redis_client.zscore(store.wake_key(key), key) is None

        await _until(settled)
        assert await redis_client.strlen(key) < 200
        before = late._value.get()
        task_id = response.replies[0].task_id
        reply = AgentReply(task_id=task_id, event_id="big", conversation_id="c", agent="WeatherAgent", tenant="acme")
        async with publisher(settings) as producer:
            await producer.publish([Outgoing(topic=settings.topics.replies, value=encode(reply), key="c")])

        async def counted() -> bool:
            return late._value.get() > before

        await _until(counted)
    from routeyard.consumers.stores.correlations import Done, decode_state

    marker = decode_state(await redis_client.get(key))
    assert isinstance(marker, Done) and marker.status == "complete" and marker.conversation_id == "c"
    letters = [dead_letter_decoder.decode(v) for v in await read_all(settings, settings.topics.dead_letters)]
    assert letters == []  # a late reply is counted, not dead-lettered as unknown
