"""The catalog topic: ``<prefix>catalog``, compacted, one key ("catalog"), the whole catalog per record.

``publish`` validates the text exactly as ``routeyard catalog check`` does and refuses a bad catalog
(nothing is written); readers validate every record again, so a record written by anything else that
does not validate is logged and ignored: it never reaches an engine. Versions count up from 1; the
version string is ``N:hash`` (``hash``: the catalog's content hash, as in file mode).

Readers start from the beginning and keep the last record (tansu answers ListOffsets and
``seek_to_end`` wrongly); a compacted topic keeps that read short.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence

import msgspec
from routeyard.consumers.kafka.aio import KafkaBus
from routeyard.consumers.kafka.bus import Bus, Consumer, Outgoing, Record
from routeyard.router.catalog import MAX_CATALOG_BYTES, Catalog, CatalogError, catalog_from_text

log = logging.getLogger(__name__)

KEY = "catalog"
MAX_VERSION = 2**53


class CatalogRecord(msgspec.Struct, frozen=True, kw_only=True):
    """One published catalog version."""

    text: str
    version: int
    hash: str
    published_at: float = 0.0


class Published(msgspec.Struct, frozen=True):
    """A validated catalog read from the topic."""

    catalog: Catalog
    number: int
    offset: int

    @property
    def version(self) -> str:
        return f"{self.number}:{self.catalog.version}"


_decoder = msgspec.json.Decoder(CatalogRecord)


def catalog_topic(prefix: str) -> str:
    return f"{prefix}catalog"


def read_record(record: Record) -> Published | None:
    """The record's catalog, validated; None (logged) when it is not a valid catalog record."""
    where = f"{record.topic}[{record.partition}]@{record.offset}"
    try:
        if record.value is None or len(record.value) > 2 * MAX_CATALOG_BYTES:
            raise CatalogError("empty or too large")
        data = _decoder.decode(record.value)
        if not 0 < data.version <= MAX_VERSION:
            raise CatalogError(f"version {data.version} out of range")
        catalog = catalog_from_text(data.text, source=f"catalog record {where}")
        if catalog.version != data.hash:
            raise CatalogError(f"content hash {data.hash!r} does not match the text ({catalog.version})")
    except (msgspec.DecodeError, CatalogError, RecursionError) as exc:
        why = str(exc).replace(f"catalog record {where}: ", "").replace("\n", "; ")
        log.warning("ignoring catalog record %s: %s", where, why)
        return None
    return Published(catalog, data.version, record.offset)


def latest(records: Sequence[Record], current: Published | None) -> Published | None:
    """The last valid catalog of ``records`` (in offset order), else ``current``."""
    for record in records:
        found = read_record(record)
        if found is not None and (current is None or found.offset > current.offset):
            current = found
    return current


class CatalogReader:
    """A group-less consumer of the catalog topic, read from the beginning; ``poll`` between batches."""

    def __init__(self, bus: Bus, topic: str) -> None:
        self._bus = bus
        self.topic = topic
        self._consumer: Consumer | None = None
        self.current: Published | None = None

    async def start(self) -> None:
        await ensure_compacted(self._bus, self.topic)
        consumer = self._bus.consumer(None)
        await consumer.start()
        self._consumer = consumer
        partitions = await consumer.partitions_for(self.topic)
        consumer.assign(partitions)
        await consumer.seek_to_beginning(partitions)

    async def stop(self) -> None:
        if self._consumer is not None:
            consumer, self._consumer = self._consumer, None
            await consumer.stop()

    async def poll(self, timeout_ms: int = 0) -> Published | None:
        """Take what the consumer has fetched (``timeout_ms`` 0: only what is already there)."""
        assert self._consumer is not None, "start() first"
        records = await self._consumer.fetch(max_records=1000, timeout_ms=timeout_ms)
        self.current = latest(records, self.current)
        return self.current

    async def catch_up(self, quiet_ms: int = 500) -> Published | None:
        """Read until nothing new comes for ``quiet_ms``: the last catalog published so far."""
        assert self._consumer is not None, "start() first"
        while records := await self._consumer.fetch(max_records=1000, timeout_ms=quiet_ms):
            self.current = latest(records, self.current)
        return self.current


async def ensure_compacted(bus: Bus, topic: str) -> None:
    """Create ``topic`` with one partition, compacted where the broker takes the setting."""
    if isinstance(bus, KafkaBus):
        from routeyard.consumers.kafka.admin import ensure_topics

        try:
            await ensure_topics(bus.settings, {topic: 1}, configs={"cleanup.policy": "compact"})
            return
        except Exception as exc:  # a broker that refuses the setting still gets the topic
            log.warning("%s: created without cleanup.policy=compact (%s)", topic, exc)
    await bus.create_topics({topic: 1})


async def publish_catalog(bus: Bus, topic: str, text: str, *, source: str) -> Published:
    """Validate ``text`` (raises ``CatalogError``, nothing written) and publish it as the next version."""
    catalog = catalog_from_text(text, source=source)
    reader = CatalogReader(bus, topic)
    await reader.start()
    try:
        last = await reader.catch_up()
    finally:
        await reader.stop()
    number = (last.number if last else 0) + 1
    record = CatalogRecord(text=text, version=number, hash=catalog.version, published_at=time.time())
    producer = bus.producer()
    await producer.start()
    try:
        await producer.publish([Outgoing(topic=topic, key=KEY, value=msgspec.json.encode(record))])
    finally:
        await producer.stop()
    return Published(catalog, number, -1)
