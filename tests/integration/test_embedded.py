"""The embedded broker and Valkey behave as the rest of the suite relies on."""

from __future__ import annotations

import socket

import pytest
import redis.asyncio as redis
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from routeyard.consumers.dev.embedded import EmbeddedBroker, EmbeddedServerError, EmbeddedValkey
from routeyard.consumers.kafka.admin import delete_topics, ensure_topics

pytestmark = pytest.mark.integration


def _consumer(bootstrap: str, *topics: str, group: str | None = None) -> AIOKafkaConsumer:
    return AIOKafkaConsumer(
        *topics,
        bootstrap_servers=bootstrap,
        group_id=group,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        fetch_max_wait_ms=25,
        session_timeout_ms=6000,
        heartbeat_interval_ms=1000,
    )


async def _produce(bootstrap: str, topic: str, values: list[bytes]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, enable_idempotence=False, acks="all")
    await producer.start()
    try:
        for value in values:
            await producer.send_and_wait(topic, value, key=b"k")
    finally:
        await producer.stop()


async def _read(consumer: AIOKafkaConsumer, count: int) -> list[bytes]:
    values: list[bytes] = []
    while len(values) < count:
        batches = await consumer.getmany(timeout_ms=10_000, max_records=count - len(values))
        assert batches, f"no records after {len(values)} of {count}"
        values += [rec.value for recs in batches.values() for rec in recs if rec.value is not None]
    return values


async def _partition_counts(bootstrap: str) -> dict[str, int]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        return {t["topic"]: len(t["partitions"]) for t in await admin.describe_topics()}
    finally:
        await admin.close()


async def test_keyed_message_with_headers_round_trips(broker: EmbeddedBroker, prefix: str) -> None:
    topic = f"{prefix}events"
    producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap, enable_idempotence=False)
    await producer.start()
    try:
        await producer.send_and_wait(topic, b"payload", key=b"agent-7", headers=[("trace", b"abc")])
    finally:
        await producer.stop()
    consumer = _consumer(broker.bootstrap, topic)
    await consumer.start()
    try:
        record = await consumer.getone()
    finally:
        await consumer.stop()
    assert (record.key, record.value, list(record.headers)) == (b"agent-7", b"payload", [("trace", b"abc")])


async def test_group_commit_then_resume(broker: EmbeddedBroker, prefix: str) -> None:
    topic, group = f"{prefix}jobs", f"{prefix}workers"
    await ensure_topics(broker.bootstrap, {topic: 1})
    await _produce(broker.bootstrap, topic, [b"%d" % i for i in range(5)])
    first = _consumer(broker.bootstrap, topic, group=group)
    await first.start()
    try:
        assert await _read(first, 3) == [b"0", b"1", b"2"]
        await first.commit({TopicPartition(topic, 0): 3})
    finally:
        await first.stop()
    second = _consumer(broker.bootstrap, topic, group=group)
    await second.start()
    try:
        assert await _read(second, 2) == [b"3", b"4"]
    finally:
        await second.stop()


async def test_ensure_topics_creates_partitions_idempotently(broker: EmbeddedBroker, prefix: str) -> None:
    wanted = {f"{prefix}wide": 4, f"{prefix}narrow": 1}
    await ensure_topics(broker.bootstrap, wanted)
    await ensure_topics(broker.bootstrap, {**wanted, f"{prefix}wide": 8})
    counts = await _partition_counts(broker.bootstrap)
    assert {name: counts.get(name) for name in wanted} == wanted


async def test_delete_topics_removes_them(broker: EmbeddedBroker, prefix: str) -> None:
    await ensure_topics(broker.bootstrap, {f"{prefix}gone": 2})
    await delete_topics(broker.bootstrap, [f"{prefix}gone", f"{prefix}never-existed"])
    assert f"{prefix}gone" not in await _partition_counts(broker.bootstrap)


async def test_valkey_commands_and_eval(redis_client: redis.Redis, prefix: str) -> None:
    assert await redis_client.ping()
    await redis_client.set(f"{prefix}k", "v")
    assert await redis_client.get(f"{prefix}k") == b"v"
    script = "return redis.call('INCRBY', KEYS[1], ARGV[1])"
    assert await redis_client.eval(script, 1, f"{prefix}n", 5) == 5  # type: ignore[misc]
    assert await redis_client.eval(script, 1, f"{prefix}n", 2) == 7  # type: ignore[misc]


async def _restart_keeps(server: EmbeddedValkey, *, crash: bool) -> bool:
    client = redis.Redis.from_url(server.url)
    await client.set("durable", "yes")
    await client.aclose()
    if crash:
        server.kill()
    server.restart()
    client = redis.Redis.from_url(server.url)
    try:
        return await client.get("durable") == b"yes"
    finally:
        await client.aclose()


@pytest.mark.parametrize("crash", [False, True], ids=["stop", "kill"])
async def test_valkey_appendonly_keeps_data_across_restart(crash: bool) -> None:
    with EmbeddedValkey(appendonly=True) as durable:
        port, pid = durable.port, durable.pid
        assert await _restart_keeps(durable, crash=crash)
        assert (durable.port, durable.pid != pid) == (port, True)
    with EmbeddedValkey(appendonly=False) as volatile:
        assert not await _restart_keeps(volatile, crash=crash)


async def test_broker_restart_keeps_port_and_loses_memory_data(prefix: str) -> None:
    topic = f"{prefix}before"
    with EmbeddedBroker() as server:
        port, pid = server.port, server.pid
        await ensure_topics(server.bootstrap, {topic: 2})
        server.kill()
        server.restart()
        assert (server.port, server.pid != pid) == (port, True)
        assert topic not in await _partition_counts(server.bootstrap)
        await _produce(server.bootstrap, f"{prefix}after", [b"again"])
        consumer = _consumer(server.bootstrap, f"{prefix}after")
        await consumer.start()
        try:
            assert await _read(consumer, 1) == [b"again"]
        finally:
            await consumer.stop()


def test_stop_is_idempotent_and_removes_temp_dir() -> None:
    server = EmbeddedValkey().start()
    log_dir = server.log_path.parent
    server.stop()
    server.stop()
    assert (server.running, log_dir.exists()) == (False, False)


def test_start_on_taken_port_fails_with_log_tail() -> None:
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        server = EmbeddedBroker(port=squatter.getsockname()[1])
        with pytest.raises(EmbeddedServerError, match="log tail"):
            server.start()
        server.stop()


def test_auto_picked_port_moves_if_taken_before_first_start() -> None:
    server = EmbeddedValkey()
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", server.port))
        squatter.listen()
        try:
            server.start()
            assert (server.running, server.port != squatter.getsockname()[1]) == (True, True)
        finally:
            server.stop()
