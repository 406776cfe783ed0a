"""The Kafka client wrapper, kept apart from the logic: producer/consumer factories, batch
publishing, dead letters and offset commits. Everything else sees ``Record`` and ``Outgoing``.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import logging
import random
import ssl
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any

import msgspec
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.errors import CommitFailedError, IllegalStateError, MessageSizeTooLargeError, RebalanceInProgressError
from aiokafka.partitioner import murmur2
from aiokafka.producer.message_accumulator import BatchBuilder
from aiokafka.record.default_records import DefaultRecordBatchBuilder
from routeyard.consumers.metrics import METRICS, child
from routeyard.consumers.retry import DEFAULT_BACKOFF, Action, Backoff, classify, retrying
from routeyard.consumers.settings import KafkaSettings
from routeyard.schemas import DeadLetter, encode

log = logging.getLogger(__name__)

Record = ConsumerRecord
MAX_REQUEST_SIZE = 1_048_576
"""The producers' max_request_size (aiokafka's default, set explicitly: ``publish`` checks it)."""
DEAD_LETTER_KEEP_BYTES = 64 * 1024
"""A dead letter keeps this much of its original (base64 in JSON: 4/3 of it), so it always fits."""
DEAD_LETTER_KEY_BYTES = 1024


class Outgoing(msgspec.Struct, frozen=True):
    topic: str
    value: bytes
    key: str | None = None
    headers: list[tuple[str, bytes]] | None = None


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


async def fetch(consumer: AIOKafkaConsumer, *, max_records: int, timeout_ms: int) -> list[Record]:
    """One batch in partition order, records of a partition in offset order."""
    batches = await consumer.getmany(timeout_ms=timeout_ms, max_records=max_records)
    return [record for records in batches.values() for record in records]


Poison = Callable[[Record, BaseException], Awaitable[None]]
"""Publishes one record's dead letter (see ``dead_letterer``)."""


async def consume_batches(
    consumer: AIOKafkaConsumer,
    handle: Callable[[Sequence[Record]], Awaitable[None]],
    stop: asyncio.Event,
    *,
    max_records: int,
    wait_ms: int,
    what: str,
    poison: Poison | None = None,
    backoff: Backoff = DEFAULT_BACKOFF,
    tick: Callable[[], None] | None = None,
    stage: str | None = None,
) -> None:
    """The batch loop of every worker: fetch -> handle -> commit, one batch at a time.
    ``tick`` is called on every turn of the loop (liveness: /healthz). With ``stage``, each
    record's time from its batch fetched to the batch handled goes to ``routeyard_held_seconds``.

    Backpressure: nothing is fetched while a batch is being handled or retried (aiokafka keeps
    heartbeating meanwhile), so in-flight work is at most ``max_records`` records. Offsets move
    only after ``handle`` returned, i.e. after its outcome was published; ``stop`` is checked
    between batches, so a shutdown finishes the batch in hand and commits it.
    """
    held = child(METRICS.held_seconds, stage=stage) if stage is not None else None
    while not stop.is_set():
        if tick is not None:
            tick()
        records = await fetch(consumer, max_records=max_records, timeout_ms=wait_ms)
        if records:
            fetched = time.perf_counter()
            await handle_batch(handle, records, what=what, poison=poison, backoff=backoff)
            if held is not None:
                took = time.perf_counter() - fetched
                for _ in records:
                    held.observe(took)
            await commit(consumer, next_offsets(records))


async def handle_batch(
    handle: Callable[[Sequence[Record]], Awaitable[None]],
    records: Sequence[Record],
    *,
    what: str,
    poison: Poison | None = None,
    backoff: Backoff = DEFAULT_BACKOFF,
) -> None:
    """``handle(records)``, with the action ``classify`` picks for an error: retry with backoff;
    raise when it is fatal (the process exits uncommitted); otherwise (anything else: a deep
    JSON's RecursionError, a date's OverflowError, an outcome too large to publish...) the batch
    is redone one record at a time and each record that still fails alone is dead-lettered with
    the error's type and message, so one bad record never stops the worker."""
    try:
        await retrying(functools.partial(handle, records), what=what, backoff=backoff)
        return
    except Exception as exc:
        if poison is None or classify(exc) is not Action.DEAD_LETTER:
            raise
        log.warning("%s: %s in a batch of %d; isolating the bad records", what, type(exc).__name__, len(records))
    for record in records:
        try:
            await retrying(functools.partial(handle, [record]), what=what, backoff=backoff)
        except Exception as exc:
            if classify(exc) is not Action.DEAD_LETTER:
                raise
            log.warning("dead-lettering %s[%d]@%d: %s", record.topic, record.partition, record.offset, exc)
            await retrying(functools.partial(poison, record, exc), what=f"{what} dead letter", backoff=backoff)


def dead_letterer(producer: AIOKafkaProducer, topic: str, *, stage: str) -> Poison:
    async def send(record: Record, error: BaseException) -> None:
        await publish(producer, [dead_letter(record, topic, stage=stage, error=error)])
        METRICS.dead_letters.labels(stage=stage).inc()

    return send


async def publish(producer: AIOKafkaProducer, messages: Iterable[Outgoing]) -> None:
    """Send every message and wait until the broker acknowledged all of them.

    Several messages are put into one record batch per partition (more where one fills), not
    sent one by one: ``send`` costs a partitioner call, an accumulator lookup and a future per
    message. A keyed message goes where every Kafka client's default partitioner puts it
    (murmur2 of the key), so a conversation's records stay on one partition, in order. These
    batches are complete, so they are closed and go out at once instead of waiting
    ``linger_ms`` for records that will not come (that wait was half of a router batch's
    publish time at half load). A lone message goes through ``send``, into the batch other
    callers are filling: a batch of its own would be a produce request of its own (an agent
    runtime may publish each reply alone).
    """
    if not isinstance(messages, Sequence):
        messages = list(messages)
    if len(messages) == 1:
        m = messages[0]
        key = m.key.encode() if m.key is not None else None
        await (await producer.send(m.topic, m.value, key=key, headers=m.headers))
        return
    batches: dict[tuple[str, int], BatchBuilder] = {}
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


def fits(m: Outgoing) -> bool:
    """Whether the broker can take ``m`` (its record, headers included, within ``MAX_REQUEST_SIZE``)."""
    key = m.key.encode() if m.key is not None else None
    return DefaultRecordBatchBuilder.estimate_size_in_bytes(key, m.value, m.headers or []) <= MAX_REQUEST_SIZE


@functools.lru_cache(maxsize=1 << 16)
def partition_of(key: bytes, count: int) -> int:
    """The partition of ``key`` among ``count`` partitions, as Kafka's default partitioner picks it."""
    return (murmur2(key) & 0x7FFFFFFF) % count


def dead_letter(record: Record, topic: str, *, stage: str, error: BaseException | str) -> Outgoing:
    """The dead letter of ``record``, bounded whatever the record: it keeps the first
    ``DEAD_LETTER_KEEP_BYTES`` of the original (and of its key: ``DEAD_LETTER_KEY_BYTES``) with the
    original's full size and SHA-256 digest; ``truncated`` says whether anything was cut."""
    original = record.value or b""
    key = record.key[:DEAD_LETTER_KEY_BYTES] if record.key is not None else None
    truncated = len(original) > DEAD_LETTER_KEEP_BYTES or (record.key is not None and key != record.key)
    letter = DeadLetter(
        original=original[:DEAD_LETTER_KEEP_BYTES],
        original_size=len(original),
        original_sha256=hashlib.sha256(original).hexdigest(),
        truncated=truncated,
        key=key,
        error=str(error)[:2000],
        error_type=type(error).__name__ if isinstance(error, BaseException) else "",
        stage=stage,
        source_topic=record.topic,
        source_partition=record.partition,
        source_offset=record.offset,
    )
    return Outgoing(topic=topic, value=encode(letter), key=key.decode(errors="replace") if key else None)


def next_offsets(records: Sequence[Record]) -> dict[TopicPartition, int]:
    offsets: dict[TopicPartition, int] = {}
    for r in records:
        tp = TopicPartition(r.topic, r.partition)
        offsets[tp] = max(offsets.get(tp, 0), r.offset + 1)
    return offsets


async def commit(consumer: AIOKafkaConsumer, offsets: dict[TopicPartition, int]) -> bool:
    """Commit; a rebalance that took the partitions away is not an error (they will be redone)."""
    if not offsets:
        return True
    try:
        await consumer.commit(offsets)
        return True
    except (CommitFailedError, IllegalStateError, RebalanceInProgressError) as exc:
        log.warning("commit of %d partitions skipped (%s); records will be redelivered", len(offsets), exc)
        return False
