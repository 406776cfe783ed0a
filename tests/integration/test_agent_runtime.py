"""The agent runtime's bounded concurrency: never more tasks at once than configured, a freed
slot is used at once, and every task is answered."""

from __future__ import annotations

import asyncio
import collections
import threading
import time
from datetime import UTC, datetime, timedelta
from uuid import uuid4

import pytest
from aiokafka.errors import KafkaConnectionError
from routeyard.consumers.agents.agent import agent
from routeyard.consumers.app import redis_client, run_agent
from routeyard.consumers.dev.embedded import EmbeddedBroker, EmbeddedValkey
from routeyard.consumers.kafka.admin import ensure_topics
from routeyard.consumers.kafka.aio import KafkaBus, KafkaProducer
from routeyard.consumers.kafka.bus import Outgoing, make_producer, publish
from routeyard.consumers.settings import Settings
from routeyard.schemas import AgentTask, Message, dead_letter_decoder, encode, reply_decoder

from tests.integration.stack import catalog, make_settings, read_all, running, spec

pytestmark = pytest.mark.integration


async def test_concurrency_is_bounded_and_slots_are_reused(broker: EmbeddedBroker, valkey: EmbeddedValkey) -> None:
    settings = make_settings(broker, valkey, f"t{uuid4().hex[:8]}.")
    settings = settings.model_copy(update={"agent": settings.agent.model_copy(update={"concurrency": 2})})
    running_now, peak, started = 0, 0, []

    @agent("SlowAgent", "slow")
    async def slow(task: AgentTask) -> str:
        nonlocal running_now, peak
        running_now += 1
        peak = max(peak, running_now)
        started.append(time.monotonic())
        await asyncio.sleep(0.4)
        running_now -= 1
        return "done"

    async with running(settings, catalog(spec("SlowAgent", "slow")), [slow]) as client:
        events = [client.event(f"c-{i}", "slow please") for i in range(8)]
        responses = await client.ask_many(events, timeout=60)
    assert [r.status for r in responses] == ["complete"] * 8
    assert peak == 2
    # 8 tasks, 2 at a time, 0.4 s each: four waves that follow each other without long gaps.
    waves = sorted(started)
    assert waves[-1] - waves[0] < 0.4 * 3 + 1.0


async def test_intake_dead_letters_bad_tasks_and_skips_answered_ones(
    broker: EmbeddedBroker, valkey: EmbeddedValkey
) -> None:
    settings = make_settings(broker, valkey, f"t{uuid4().hex[:8]}.")
    topic, ran = settings.topics.agent("EchoAgent"), []

    @agent("EchoAgent", "echo")
    async def echo(task: AgentTask) -> str:
        ran.append(task.task_id)
        return task.messages[-1].content

    async with redis_client(settings) as redis:
        await redis.set(f"{settings.namespace}:_:task:answered", b"1")  # answered before a crash
    await ensure_topics(settings.kafka, {topic: 1, settings.topics.replies: 1, settings.topics.dead_letters: 1})
    producer = make_producer(settings.kafka)
    await producer.start()
    for value in (b"{not json", _task(settings, "answered"), _task(settings, "fresh")):
        await producer.send_and_wait(topic, value, key=b"c")
    await producer.stop()
    stop = asyncio.Event()
    runtime = asyncio.create_task(run_agent(echo, settings, stop))
    try:
        replies = await read_until(settings, settings.topics.replies, 1)
        letters = await read_until(settings, settings.topics.dead_letters, 1)
    finally:
        stop.set()
        await asyncio.wait_for(runtime, 30)
    assert ran == ["fresh"]  # the answered task is not run again
    assert [reply_decoder.decode(r).task_id for r in replies] == ["fresh"]
    (letter,) = [dead_letter_decoder.decode(x) for x in letters]
    assert letter.stage == "agent" and letter.original == b"{not json" and letter.error
    assert await redis_marked(settings, "fresh")


async def read_until(settings: Settings, topic: str, count: int, timeout: float = 30) -> list[bytes]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = await read_all(settings, topic, settle=0.3)
        if len(found) >= count:
            return found
    raise AssertionError(f"fewer than {count} records on {topic}")


async def redis_marked(settings: Settings, task_id: str) -> bool:
    async with redis_client(settings) as redis:
        return bool(await redis.exists(f"{settings.namespace}:_:task:{task_id}"))


async def test_a_failed_reply_publish_is_retried_without_running_the_handler_again(
    broker: EmbeddedBroker, valkey: EmbeddedValkey
) -> None:
    """Replies finishing together go out as one publish; when it fails, each reply is published
    again on its own retry, and no handler runs twice."""
    settings = make_settings(broker, valkey, f"t{uuid4().hex[:8]}.")
    topic, ran = settings.topics.agent("EchoAgent"), collections.Counter[str]()
    publishes: list[int] = []

    class Flaky(KafkaBus):
        """The runtime's bus: its first publish fails as if the broker went away."""

        def producer(self) -> KafkaProducer:
            producer = super().producer()
            publish = producer.publish

            async def flaky(messages: list[Outgoing]) -> None:
                publishes.append(len(messages))
                if len(publishes) == 1:
                    raise KafkaConnectionError("broker went away")
                await publish(messages)

            producer.publish = flaky  # type: ignore[method-assign]
            return producer

    @agent("EchoAgent", "echo")
    async def echo(task: AgentTask) -> str:
        ran[task.task_id] += 1
        return task.messages[-1].content

    await ensure_topics(settings.kafka, {topic: 1, settings.topics.replies: 1})
    producer = make_producer(settings.kafka)
    await producer.start()
    ids = [f"task-{i}" for i in range(5)]
    await publish(producer, [Outgoing(topic=topic, key="c", value=_task(settings, i)) for i in ids])
    await producer.stop()
    stop = asyncio.Event()
    runtime = asyncio.create_task(run_agent(echo, settings, stop, Flaky(settings.kafka)))
    try:
        replies = await read_until(settings, settings.topics.replies, len(ids))
    finally:
        stop.set()
        await asyncio.wait_for(runtime, 30)
    assert ran == dict.fromkeys(ids, 1)
    assert sorted(reply_decoder.decode(r).task_id for r in replies) == ids
    assert publishes[0] > 1  # the first publish carried several replies at once
    assert all([await redis_marked(settings, i) for i in ids])


def _task(settings: Settings, task_id: str) -> bytes:
    return encode(
        AgentTask(
            task_id=task_id,
            event_id=task_id,
            conversation_id="c",
            agent="EchoAgent",
            messages=[Message(role="user", content=task_id)],
            reply_topic=settings.topics.replies,
            deadline=datetime.now(UTC) + timedelta(minutes=1),
        )
    )


async def test_a_blocking_handler_is_stopped_at_its_deadline(broker: EmbeddedBroker, valkey: EmbeddedValkey) -> None:
    """A plain ``def`` handler runs in a worker thread: one that blocks past its deadline is
    timed out while the rest of the process (here: another agent, the router and the correlator,
    all on one event loop) goes on; its late result is never published."""
    settings = make_settings(broker, valkey, f"t{uuid4().hex[:8]}.")
    release, finished = threading.Event(), threading.Event()

    @agent("BusyAgent", "busy")
    def busy(task: AgentTask) -> str:
        release.wait(30)  # stands for CPU-bound work that never yields to the event loop
        finished.set()
        return "too late"

    @agent("QuickAgent", "quick")
    async def quick(task: AgentTask) -> str:
        return "quick"

    agents = catalog(spec("BusyAgent", "busy", timeout="1s"), spec("QuickAgent", "quick"))
    async with running(settings, agents, [busy, quick]) as client:
        slow = asyncio.create_task(client.ask("c-busy", "busy please", timeout=30))
        fast = await client.ask("c-quick", "quick please", timeout=30)
        busy_still_running = not finished.is_set()
        response = await slow
        release.set()
        await asyncio.to_thread(finished.wait, 10)
        await asyncio.sleep(1)  # a late reply would be published now
    assert fast.status == "complete" and busy_still_running
    assert response.status == "failed" and response.timed_out == ["BusyAgent"]
    replies = [reply_decoder.decode(v) for v in await read_all(settings, settings.topics.replies)]
    assert [r.agent for r in replies] == ["QuickAgent"]
