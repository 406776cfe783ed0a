"""The bus on a Kafka-protocol broker, through aiokafka: ``KafkaBus`` and its clients.

What stays exactly as it was: producers ``acks=all`` without idempotence (it fails on tansu),
batches of one publish closed and sent at once (no linger), keyed records on murmur2 partitions,
consumers without auto-commit reading from the earliest offset, metadata always read for all
topics (asking tansu about one named topic creates it), and commits that a rebalance refused
reported as False (the records are redone).
"""

from __future__ import annotations

import asyncio
import logging
import random
import ssl
from collections.abc import Collection, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, ConsumerRecord, TopicPartition
from aiokafka.errors import CommitFailedError, IllegalStateError, MessageSizeTooLargeError, RebalanceInProgressError
from routeyard.consumers.kafka.records import MAX_REQUEST_SIZE, Outgoing, Partition, Record, fits, partition_of
from routeyard.consumers.settings import KafkaSettings

if TYPE_CHECKING:
    from routeyard.consumers.kafka.bus import Bus, Revoked

log = logging.getLogger(__name__)


def security_options(settings: KafkaSettings) -> dict[str, Any]:
    """The TLS and SASL keyword arguments of every aiokafka client routeyard creates."""
    options: dict[str, Any] = {"security_protocol": settings.security_protocol}
    if settings.security_protocol in ("SSL", "SASL_SSL"):
        options["ssl_context"] = _ssl_context(settings)
    if settings.sasl_mechanism:
        options["sasl_mechanism"] = settings.sasl_mechanism
        options["sasl_plain_username"] = settings.sasl_username
        options["sasl_plain_password"] = settings.sasl_password.get_secret_value() if settings.sasl_password else None
    return options


def _ssl_context(settings: KafkaSettings) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(settings.ssl_cafile) if settings.ssl_cafile else None)
    context.check_hostname = settings.ssl_check_hostname
    if settings.ssl_certfile:
        password = settings.ssl_key_password.get_secret_value() if settings.ssl_key_password else None
        context.load_cert_chain(str(settings.ssl_certfile), str(settings.ssl_keyfile), password=password)
    return context


def make_producer(settings: KafkaSettings) -> AIOKafkaProducer:
    # Idempotent producers fail on tansu (notes/infra.md); dedup is done by ids instead.
    return AIOKafkaProducer(
        bootstrap_servers=settings.bootstrap,
        client_id=settings.client_id,
        acks="all",
        enable_idempotence=False,
        linger_ms=settings.linger_ms,
        max_request_size=MAX_REQUEST_SIZE,
        compression_type=None if settings.compression == "none" else settings.compression,
        **security_options(settings),
    )


def make_consumer(settings: KafkaSettings, topics: Sequence[str], group: str | None) -> AIOKafkaConsumer:
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.bootstrap,
        client_id=settings.client_id,
        group_id=group,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        fetch_max_wait_ms=settings.fetch_max_wait_ms,
        session_timeout_ms=settings.session_timeout_ms,
        heartbeat_interval_ms=settings.heartbeat_interval_ms,
        max_poll_interval_ms=settings.max_poll_interval_ms,
        **security_options(settings),
    )
    if topics:
        consumer.subscribe(list(topics))
    return consumer


def record(r: ConsumerRecord[bytes, bytes]) -> Record:
    return Record(
        topic=r.topic,
        partition=r.partition,
        offset=r.offset,
        key=r.key,
        value=r.value,
        headers=tuple(r.headers),
        timestamp=r.timestamp,
    )


async def fetch(consumer: AIOKafkaConsumer, *, max_records: int, timeout_ms: int) -> list[Record]:
    """One batch in partition order, records of a partition in offset order."""
    batches = await consumer.getmany(timeout_ms=timeout_ms, max_records=max_records)
    return [record(r) for records in batches.values() for r in records]


async def publish(producer: AIOKafkaProducer, messages: Iterable[Outgoing]) -> None:
    """Send every message and wait until the broker acknowledged all of them.

    Several messages are put into one record batch per partition (more where one fills), not
    sent one by one: ``send`` costs a partitioner call, an accumulator lookup and a future per
    message. A keyed message goes where every Kafka client's default partitioner puts it
    (murmur2 of the key), so a conversation's records stay on one partition, in order. These
    batches are complete, so they are closed and go out at once instead of waiting
    ``linger_ms`` for records that will not come. A lone message goes through ``send``, into the
    batch other callers are filling: a batch of its own would be a produce request of its own
    (an agent runtime may publish each reply alone).
    """
    if not isinstance(messages, Sequence):
        messages = list(messages)
    if len(messages) == 1:
        m = messages[0]
        key = m.key.encode() if m.key is not None else None
        await (await producer.send(m.topic, m.value, key=key, headers=m.headers))
        return
    batches: dict[tuple[str, int], Any] = {}
    partitions: dict[str, list[int]] = {}
    futures = []
    for m in messages:
        parts = partitions.get(m.topic)
        if parts is None:
            parts = partitions[m.topic] = sorted(await producer.partitions_for(m.topic))
        key = m.key.encode() if m.key is not None else None
        headers = m.headers or []
        if not fits(m):
            raise MessageSizeTooLargeError(f"a record for {m.topic} is larger than {MAX_REQUEST_SIZE} bytes")
        partition = parts[partition_of(key, len(parts))] if key is not None else random.choice(parts)
        batch = batches.get((m.topic, partition))
        if batch is not None and batch.append(timestamp=None, key=key, value=m.value, headers=headers) is not None:
            continue
        if batch is not None:  # full: send it, start the next one
            futures.append(await producer.send_batch(batch, m.topic, partition=partition))
        batch = batches[m.topic, partition] = producer.create_batch()
        batch.append(timestamp=None, key=key, value=m.value, headers=headers)  # an empty batch takes any record
    for (topic, partition), batch in batches.items():
        batch.close()  # a closed batch is ready to send: no linger
        futures.append(await producer.send_batch(batch, topic, partition=partition))
    if futures:
        await asyncio.gather(*futures)


def _tps(partitions: Iterable[Partition]) -> list[TopicPartition]:
    return [TopicPartition(p.topic, p.partition) for p in partitions]


class KafkaBus:
    """The bus on the broker ``settings`` name (TLS and SASL applied to every client)."""

    def __init__(self, settings: KafkaSettings | str) -> None:
        self.settings = KafkaSettings(bootstrap=settings) if isinstance(settings, str) else settings
        self.bootstrap = self.settings.bootstrap

    def producer(self) -> KafkaProducer:
        return KafkaProducer(make_producer(self.settings))

    def consumer(self, group: str | None, topics: Sequence[str] = ()) -> KafkaConsumer:
        return KafkaConsumer(make_consumer(self.settings, topics, group))

    async def create_topics(self, topics: Mapping[str, int]) -> None:
        from routeyard.consumers.kafka.admin import ensure_topics  # admin uses this module's options

        await ensure_topics(self.settings, topics)


class KafkaProducer:
    def __init__(self, producer: AIOKafkaProducer) -> None:
        self.client = producer

    async def start(self) -> None:
        await self.client.start()

    async def stop(self) -> None:
        await self.client.stop()

    async def publish(self, messages: Iterable[Outgoing]) -> None:
        await publish(self.client, messages)


class KafkaConsumer:
    def __init__(self, consumer: AIOKafkaConsumer) -> None:
        self.client = consumer

    async def start(self) -> None:
        await self.client.start()

    async def stop(self) -> None:
        await self.client.stop()

    def subscribe(self, topics: Sequence[str], on_revoked: Revoked | None = None) -> None:
        listener = _Listener(on_revoked) if on_revoked is not None else None
        self.client.subscribe(list(topics), listener=listener)

    def subscribed(self) -> bool:
        return bool(self.client.subscription())

    async def fetch(self, *, max_records: int, timeout_ms: int) -> list[Record]:
        return await fetch(self.client, max_records=max_records, timeout_ms=timeout_ms)

    async def commit(self, offsets: Mapping[Partition, int]) -> bool:
        try:
            await self.client.commit({TopicPartition(*p): o for p, o in offsets.items()})
            return True
        except (CommitFailedError, IllegalStateError, RebalanceInProgressError) as exc:
            log.warning("commit of %d partitions skipped (%s); records will be redelivered", len(offsets), exc)
            return False

    def assignment(self) -> set[Partition]:
        return {Partition(tp.topic, tp.partition) for tp in self.client.assignment()}

    def pause(self, partitions: Collection[Partition]) -> None:
        self.client.pause(*_tps(partitions))

    def resume(self, partitions: Collection[Partition]) -> None:
        self.client.resume(*_tps(partitions))

    def paused(self) -> set[Partition]:
        return {Partition(tp.topic, tp.partition) for tp in self.client.paused()}

    def highwater(self, partition: Partition) -> int | None:
        end: int | None = self.client.highwater(TopicPartition(*partition))
        return end

    async def position(self, partition: Partition) -> int:
        at: int = await self.client.position(TopicPartition(*partition))
        return at

    async def partitions_for(self, topic: str) -> list[Partition]:
        await self.client.topics()  # all topics' metadata: asking tansu about one named topic creates it
        return [Partition(topic, p) for p in sorted(self.client.partitions_for_topic(topic) or ())]

    def assign(self, partitions: Collection[Partition]) -> None:
        self.client.assign(_tps(partitions))

    async def seek_to_beginning(self, partitions: Collection[Partition]) -> None:
        await self.client.seek_to_beginning(*_tps(partitions))

    async def seek_to_end(self, partitions: Collection[Partition]) -> None:
        await self.client.seek_to_end(*_tps(partitions))


class _Listener(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, on_revoked: Revoked) -> None:
        self._on_revoked = on_revoked

    async def on_partitions_revoked(self, revoked: Collection[TopicPartition]) -> None:
        await self._on_revoked({Partition(tp.topic, tp.partition) for tp in revoked})

    async def on_partitions_assigned(self, assigned: Collection[TopicPartition]) -> None:
        return None


def as_bus(kafka: KafkaSettings | str | Bus) -> Bus:
    """``kafka`` as a bus: a broker named by settings or a bootstrap string, or a bus as is."""
    return KafkaBus(kafka) if isinstance(kafka, KafkaSettings | str) else kafka
