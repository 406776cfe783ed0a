"""ChunkWriter: chunks go out in order, several per publish when the broker is slower than the
writer; a broker that hangs or fails costs the reply at most the flush timeout, never the text."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta

import msgspec
import pytest
from routeyard.consumers.agents.streaming import ChunkWriter
from routeyard.consumers.errors import BadReply
from routeyard.consumers.kafka.bus import Outgoing
from routeyard.schemas import AgentTask, Message, chunk_decoder

TASK = AgentTask(
    task_id="ev1:0:StoryAgent@2",
    event_id="ev1",
    conversation_id="c1",
    agent="StoryAgent",
    messages=[Message(role="user", content="story")],
    reply_topic="t.replies",
    deadline=datetime.now(UTC) + timedelta(minutes=1),
    tenant="acme",
    attempt=2,
    stream_topic="t.streams",
)


class Producer:
    def __init__(self, *, delay: float = 0.0, fail: bool = False) -> None:
        self.batches: list[list[Outgoing]] = []
        self.delay, self.fail = delay, fail

    async def start(self) -> None: ...
    async def stop(self) -> None: ...

    async def publish(self, messages: Iterable[Outgoing]) -> None:
        await asyncio.sleep(self.delay)
        if self.fail:
            raise ConnectionError("broker gone")
        self.batches.append(list(messages))


async def test_chunks_carry_the_task_and_go_out_in_order_batched_while_the_broker_is_busy() -> None:
    producer = Producer(delay=0.05)
    async with ChunkWriter(producer, TASK, max_bytes=1024) as writer:
        for piece in ["a", "b", "", "c", "d"]:
            await writer.write(piece)
            await asyncio.sleep(0.01)
    chunks = [chunk_decoder.decode(m.value) for batch in producer.batches for m in batch]
    assert [(c.seq, c.text) for c in chunks] == [(0, "a"), (1, "b"), (2, "c"), (3, "d")]
    assert len(producer.batches) < 4  # pieces written during a publish went out together
    assert {(c.task_id, c.attempt, c.agent, c.tenant, c.conversation_id) for c in chunks} == {
        ("ev1:0:StoryAgent@2", 2, "StoryAgent", "acme", "c1")
    }
    assert {(m.topic, m.key) for batch in producer.batches for m in batch} == {("t.streams", "c1")}
    assert writer.text == "abcd"


async def test_without_a_stream_topic_nothing_is_published_but_the_text_is_kept() -> None:
    producer = Producer()
    task = msgspec.structs.replace(TASK, stream_topic=None)
    async with ChunkWriter(producer, task, max_bytes=1024) as writer:
        await writer.write("hello ")
        await writer.write("world")
    assert producer.batches == [] and writer.text == "hello world"


async def test_a_hanging_broker_delays_the_reply_by_the_flush_timeout_at_most() -> None:
    producer = Producer(delay=3600)
    began = time.monotonic()
    async with ChunkWriter(producer, TASK, max_bytes=1024, flush_timeout_s=0.2) as writer:
        await writer.write("one")
        await writer.write("two")
    assert time.monotonic() - began < 1.0
    assert writer.text == "onetwo"


async def test_a_failing_broker_stops_the_stream_not_the_reply() -> None:
    producer = Producer(fail=True)
    async with ChunkWriter(producer, TASK, max_bytes=1024) as writer:
        await writer.write("one")
        await asyncio.sleep(0.01)
        await writer.write("two")
    assert writer.text == "onetwo" and producer.batches == []


async def test_bad_pieces_and_too_many_bytes_raise_one_line_errors() -> None:
    writer = ChunkWriter(Producer(), TASK, max_bytes=1024)
    with pytest.raises(BadReply, match=r"^StoryAgent yielded bytes, not str$"):
        await writer.write(b"raw")
    await writer.write("é" * 500)  # 1000 bytes in UTF-8
    with pytest.raises(BadReply, match=r"^reply of more than 1024 bytes exceeds agent.max_reply_bytes$"):
        await writer.write("é" * 20)
    assert writer.text == "é" * 500
    await writer.close()


async def test_cancelled_writing_abandons_the_pending_chunks() -> None:
    producer = Producer(delay=3600)
    before = asyncio.all_tasks()  # other tests' long-lived tasks (an engine's) may share this loop

    async def write() -> None:
        async with ChunkWriter(producer, TASK, max_bytes=1024, flush_timeout_s=3600) as writer:
            await writer.write("one")
            await asyncio.sleep(3600)

    job = asyncio.create_task(write())
    await asyncio.sleep(0.05)
    job.cancel()
    with pytest.raises(asyncio.CancelledError):
        await job
    assert asyncio.all_tasks() - before == set()
