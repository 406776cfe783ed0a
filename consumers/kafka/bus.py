"""The bus seam: what workers, the agent runtime and the client need of Kafka, and nothing more.

    Bus        makes the clients and creates topics   (kafka/aio.py: aiokafka; kafka/memory.py: in memory)
    Producer   publish a batch, acknowledged
    Consumer   in a group: fetch batches, commit, pause/resume, assignment, positions, high
               watermarks, a callback for revoked partitions; without a group: assign and seek

The batch loop every worker runs (fetch -> handle -> commit) and dead letters live here too,
written against the interface, so the same code runs on a broker and in memory.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import logging
import time
from collections.abc import Awaitable, Callable, Collection, Iterable, Mapping, Sequence
from typing import Protocol

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from routeyard.consumers.kafka import aio
from routeyard.consumers.kafka.aio import make_consumer, make_producer, security_options
from routeyard.consumers.kafka.records import MAX_REQUEST_SIZE, Outgoing, Partition, Record, fits, partition_of
from routeyard.consumers.metrics import METRICS, child
from routeyard.consumers.retry import DEFAULT_BACKOFF, Action, Backoff, classify, retrying
from routeyard.schemas import DeadLetter, encode

__all__ = [
    "MAX_REQUEST_SIZE",
    "Bus",
    "Consumer",
    "Outgoing",
    "Partition",
    "Producer",
    "Record",
    "Revoked",
    "commit",
    "consume_batches",
    "dead_letter",
    "dead_letterer",
    "fetch",
    "fits",
    "make_consumer",
    "make_producer",
    "partition_of",
    "publish",
    "security_options",
]

log = logging.getLogger(__name__)

DEAD_LETTER_KEEP_BYTES = 64 * 1024
"""A dead letter keeps this much of its original (base64 in JSON: 4/3 of it), so it always fits."""
DEAD_LETTER_KEY_BYTES = 1024

Revoked = Callable[[set[Partition]], Awaitable[None]]
"""Called with the partitions a rebalance takes away, before another member gets them."""


class Producer(Protocol):
    async def start(self) -> None: ...
    async def stop(self) -> None: ...
    async def publish(self, messages: Iterable[Outgoing]) -> None:
        """Send every message (a keyed one to ``partition_of`` its key) and wait until all are
        acknowledged; a record the broker cannot take raises ``MessageSizeTooLargeError``."""


class Consumer(Protocol):
    async def start(self) -> None: ...
    async def stop(self) -> None: ...
    def subscribe(self, topics: Sequence[str], on_revoked: Revoked | None = None) -> None: ...
    def subscribed(self) -> bool: ...
    async def fetch(self, *, max_records: int, timeout_ms: int) -> list[Record]:
        """One batch in partition order, records of a partition in offset order; waits up to
        ``timeout_ms`` for the first record."""

    async def commit(self, offsets: Mapping[Partition, int]) -> bool:
        """Commit; False (logged) when a rebalance took the partitions away (they will be redone)."""

    def assignment(self) -> set[Partition]: ...
    def pause(self, partitions: Collection[Partition]) -> None: ...
    def resume(self, partitions: Collection[Partition]) -> None: ...
    def paused(self) -> set[Partition]: ...
    def highwater(self, partition: Partition) -> int | None:
        """The end of ``partition`` as the last fetch saw it (None: not fetched yet)."""

    async def position(self, partition: Partition) -> int: ...
    async def partitions_for(self, topic: str) -> list[Partition]:
        """The topic's partitions, sorted (none if it does not exist: never creates it)."""

    def assign(self, partitions: Collection[Partition]) -> None:
        """Without a group: read exactly these partitions."""

    async def seek_to_beginning(self, partitions: Collection[Partition]) -> None: ...
    async def seek_to_end(self, partitions: Collection[Partition]) -> None: ...


class Bus(Protocol):
    bootstrap: str
    """Where it is (a broker's bootstrap servers; ``memory`` for the in-memory bus)."""

    def producer(self) -> Producer: ...
    def consumer(self, group: str | None, topics: Sequence[str] = ()) -> Consumer:
        """A member of ``group`` subscribed to ``topics``; ``None``: no group (assign and seek)."""

    async def create_topics(self, topics: Mapping[str, int]) -> None:
        """Create each topic with its partition count unless it exists (it keeps its count)."""


async def fetch(consumer: Consumer | AIOKafkaConsumer, *, max_records: int, timeout_ms: int) -> list[Record]:
    if isinstance(consumer, AIOKafkaConsumer):  # a bare aiokafka consumer (bench, operator tools)
        return await aio.fetch(consumer, max_records=max_records, timeout_ms=timeout_ms)
    return await consumer.fetch(max_records=max_records, timeout_ms=timeout_ms)


async def publish(producer: Producer | AIOKafkaProducer, messages: Iterable[Outgoing]) -> None:
    if isinstance(producer, AIOKafkaProducer):  # a bare aiokafka producer (bench, operator tools)
        await aio.publish(producer, messages)
    else:
        await producer.publish(messages)


async def commit(consumer: Consumer, offsets: Mapping[Partition, int]) -> bool:
    return True if not offsets else await consumer.commit(offsets)


Poison = Callable[[Record, BaseException], Awaitable[None]]
"""Publishes one record's dead letter (see ``dead_letterer``)."""


async def consume_batches(
    consumer: Consumer,
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
        records = await consumer.fetch(max_records=max_records, timeout_ms=wait_ms)
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


def dead_letterer(producer: Producer, topic: str, *, stage: str) -> Poison:
    async def send(record: Record, error: BaseException) -> None:
        await producer.publish([dead_letter(record, topic, stage=stage, error=error)])
        METRICS.dead_letters.labels(stage=stage).inc()

    return send


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


def next_offsets(records: Sequence[Record]) -> dict[Partition, int]:
    offsets: dict[Partition, int] = {}
    for r in records:
        tp = Partition(r.topic, r.partition)
        offsets[tp] = max(offsets.get(tp, 0), r.offset + 1)
    return offsets
