"""The memory bus behaves as the broker does where routeyard depends on it: keys on murmur2
partitions, groups sharing partitions, commits, redelivery of what was not committed, fetches
woken by publishes, and idle() once everything is committed."""

from __future__ import annotations

import asyncio
import time

import pytest
from aiokafka.errors import MessageSizeTooLargeError
from aiokafka.partitioner import DefaultPartitioner
from routeyard.consumers.kafka.bus import Outgoing, Partition
from routeyard.consumers.kafka.memory import MemoryBus


async def _bus(partitions: int = 4) -> MemoryBus:
    bus = MemoryBus()
    await bus.create_topics({"t": partitions})
    return bus


async def test_a_key_goes_where_kafkas_default_partitioner_puts_it() -> None:
    bus = await _bus()
    keys = [f"conv-{i}" for i in range(20)]
    await bus.producer().publish([Outgoing(topic="t", value=k.encode(), key=k) for k in keys])
    where = {r.value.decode(): r.partition for r in bus.records("t") if r.value}
    assert where == {k: DefaultPartitioner()(k.encode(), [0, 1, 2, 3], [0, 1, 2, 3]) for k in keys}


async def test_group_members_share_the_partitions_and_each_record_is_read_once() -> None:
    bus = await _bus()
    a, b = bus.consumer("g", ["t"]), bus.consumer("g", ["t"])
    await a.start()
    await b.start()
    await bus.producer().publish([Outgoing(topic="t", value=str(i).encode(), key=str(i)) for i in range(40)])
    got_a = await a.fetch(max_records=100, timeout_ms=0)
    got_b = await b.fetch(max_records=100, timeout_ms=0)
    assert a.assignment().isdisjoint(b.assignment()) and len(a.assignment() | b.assignment()) == 4
    assert sorted(int(r.value or b"") for r in got_a + got_b) == list(range(40))


async def test_what_a_stopped_member_did_not_commit_goes_to_the_next_one() -> None:
    bus = await _bus(1)
    await bus.producer().publish([Outgoing(topic="t", value=b"x", key="k") for _ in range(3)])
    first = bus.consumer("g", ["t"])
    await first.start()
    records = await first.fetch(max_records=10, timeout_ms=0)
    assert await first.commit({Partition("t", 0): records[0].offset + 1})  # only the first one
    await first.stop()
    second = bus.consumer("g", ["t"])
    await second.start()
    assert [r.offset for r in await second.fetch(max_records=10, timeout_ms=0)] == [1, 2]


async def test_a_revoked_partition_is_released_after_its_callback_and_its_commit_then_refused() -> None:
    bus = await _bus(2)
    revoked: list[set[Partition]] = []
    first = bus.consumer("g")

    async def on_revoked(partitions: set[Partition]) -> None:
        revoked.append(partitions)
        assert await first.commit(dict.fromkeys(partitions, 0))  # still held while draining

    first.subscribe(["t"], on_revoked)
    await first.start()
    await first.fetch(max_records=1, timeout_ms=0)
    second = bus.consumer("g", ["t"])
    await second.start()
    await first.fetch(max_records=1, timeout_ms=0)  # gives one partition up
    await second.fetch(max_records=1, timeout_ms=0)
    assert revoked == [second.assignment()] and len(first.assignment()) == 1
    assert not await first.commit(dict.fromkeys(second.assignment(), 0))


async def test_a_fetch_waits_for_a_publish_and_is_woken_by_it() -> None:
    bus = await _bus(1)
    consumer = bus.consumer("g", ["t"])
    await consumer.start()

    async def later() -> None:
        await asyncio.sleep(0.05)
        await bus.producer().publish([Outgoing(topic="t", value=b"late")])

    started = time.monotonic()
    task = asyncio.create_task(later())
    records = await consumer.fetch(max_records=1, timeout_ms=5000)
    await task
    assert [r.value for r in records] == [b"late"] and time.monotonic() - started < 1


async def test_idle_waits_until_every_group_committed_everything() -> None:
    bus = await _bus(1)
    consumer = bus.consumer("g", ["t"])
    await consumer.start()
    await bus.producer().publish([Outgoing(topic="t", value=b"x")])
    with pytest.raises(TimeoutError):
        await bus.idle(timeout=0.1)
    (record,) = await consumer.fetch(max_records=1, timeout_ms=0)
    assert await consumer.commit({Partition("t", 0): record.offset + 1})
    await bus.idle(timeout=1)


async def test_a_record_over_the_request_size_is_refused_and_nothing_is_written() -> None:
    bus = await _bus(1)
    with pytest.raises(MessageSizeTooLargeError):
        await bus.producer().publish([Outgoing(topic="t", value=b"ok"), Outgoing(topic="t", value=b"x" * (2 << 20))])
    assert bus.records("t") == []


async def test_a_reader_without_a_group_seeks_and_reads_any_partition() -> None:
    bus = await _bus(2)
    await bus.producer().publish([Outgoing(topic="t", value=str(i).encode(), key=str(i)) for i in range(6)])
    reader = bus.consumer(None)
    await reader.start()
    partitions = await reader.partitions_for("t")
    reader.assign(partitions)
    await reader.seek_to_end(partitions[:1])
    records = await reader.fetch(max_records=100, timeout_ms=0)
    assert {r.partition for r in records} == {1} and records == bus.records("t")[len(bus.log(partitions[0])) :]
    assert await reader.partitions_for("missing") == []
