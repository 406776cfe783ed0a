"""``publish`` builds record batches itself: on the embedded broker, its records land on the
partition Kafka's default partitioner picks (as ``producer.send`` puts them), in order per key,
with their headers, split over several batches where one fills."""

from __future__ import annotations

import asyncio
import random

import pytest
from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from aiokafka.errors import MessageSizeTooLargeError
from aiokafka.partitioner import DefaultPartitioner
from routeyard.consumers.dev.embedded import EmbeddedBroker
from routeyard.consumers.kafka.admin import ensure_topics
from routeyard.consumers.kafka.bus import MAX_REQUEST_SIZE, Outgoing, make_producer, partition_of, publish
from routeyard.consumers.settings import KafkaSettings

pytestmark = pytest.mark.integration


async def _records(bootstrap: str, topic: str, count: int) -> list[ConsumerRecord]:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, fetch_max_wait_ms=25)
    await consumer.start()
    try:
        await consumer.topics()
        partitions = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or [])]
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        records: list[ConsumerRecord] = []
        for _ in range(200):
            batch = await consumer.getmany(timeout_ms=100)
            records += [r for rs in batch.values() for r in rs]
            if len(records) >= count:
                break
        return records
    finally:
        await consumer.stop()


def test_partition_of_is_kafkas_default_partitioner() -> None:
    default, rng = DefaultPartitioner(), random.Random(7)
    for _ in range(2000):
        key = rng.randbytes(rng.randrange(1, 60))
        count = rng.randrange(1, 64)
        parts = list(range(count))
        assert partition_of(key, count) == default(key, parts, parts)


async def test_publish_places_records_as_send_does_in_order_with_headers(broker: EmbeddedBroker, prefix: str) -> None:
    batched, sent = f"{prefix}batched", f"{prefix}sent"
    await ensure_topics(broker.bootstrap, {batched: 6, sent: 6})
    producer = make_producer(KafkaSettings(bootstrap=broker.bootstrap))
    await producer.start()
    try:
        # 40 keys, 20 records each, ~600 B per record: several 16 KiB batches per partition.
        messages = [
            Outgoing(
                topic=batched, key=f"conv-{i % 40}", value=f"{i:04d}".encode() + b"x" * 600, headers=[("n", b"%d" % i)]
            )
            for i in range(800)
        ]
        await publish(producer, messages)
        for m in messages[:40]:
            await producer.send_and_wait(sent, m.value, key=m.key.encode() if m.key else None)
        unkeyed = [Outgoing(topic=sent, value=b"no key %d" % i) for i in range(20)]
        await publish(producer, unkeyed)
    finally:
        await producer.stop()

    records = await _records(broker.bootstrap, batched, len(messages))
    assert len(records) == len(messages)
    by_key: dict[bytes, list[int]] = {}
    placed: dict[bytes, set[int]] = {}
    for r in sorted(records, key=lambda r: (r.partition, r.offset)):
        assert r.key is not None and r.value is not None
        by_key.setdefault(r.key, []).append(int(r.value[:4]))
        placed.setdefault(r.key, set()).add(r.partition)
        assert dict(r.headers) == {"n": b"%d" % int(r.value[:4])}
    assert all(len(p) == 1 for p in placed.values())  # one partition per key ...
    assert all(order == sorted(order) for order in by_key.values())  # ... in publish order
    assert len({p for ps in placed.values() for p in ps}) > 1

    via_send = {r.key: r.partition for r in await _records(broker.bootstrap, sent, 60) if r.key is not None}
    assert via_send == {k: next(iter(p)) for k, p in placed.items()}


async def test_publish_refuses_a_record_over_the_request_size(broker: EmbeddedBroker, prefix: str) -> None:
    topic = f"{prefix}big"
    await ensure_topics(broker.bootstrap, {topic: 1})
    producer = make_producer(KafkaSettings(bootstrap=broker.bootstrap))
    await producer.start()
    try:
        with pytest.raises(MessageSizeTooLargeError):
            await publish(producer, [Outgoing(topic=topic, key="k", value=b"x" * (MAX_REQUEST_SIZE + 1))])
        await publish(producer, [Outgoing(topic=topic, key="k", value=b"x" * 200_000)])  # over a batch, under a request
    finally:
        await producer.stop()
    assert [len(r.value or b"") for r in await _records(broker.bootstrap, topic, 1)] == [200_000]


async def test_published_batches_go_out_at_once_without_waiting_for_linger(broker: EmbeddedBroker, prefix: str) -> None:
    """A many-message publish is complete: its batches do not wait ``linger_ms`` for more records
    (a lone message still does, so that other callers' messages can join it)."""
    topic = f"{prefix}linger"
    await ensure_topics(broker.bootstrap, {topic: 2})
    producer = make_producer(KafkaSettings(bootstrap=broker.bootstrap, linger_ms=3000))
    await producer.start()
    loop = asyncio.get_running_loop()
    try:
        messages = [Outgoing(topic=topic, key=f"k{i}", value=b"v") for i in range(20)]
        await publish(producer, messages)  # metadata fetched, connection made
        started = loop.time()
        await publish(producer, messages)
        many = loop.time() - started
        started = loop.time()
        await publish(producer, messages[:1])
        lone = loop.time() - started
    finally:
        await producer.stop()
    assert many < 1.5 and lone >= 2.5, (many, lone)
