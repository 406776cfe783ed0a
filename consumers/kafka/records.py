"""What travels on the bus, whichever bus: ``Record`` (read), ``Outgoing`` (to publish),
``Partition`` (a topic's partition), and the two rules every implementation shares: the size a
broker takes (``fits``) and the partition of a key (``partition_of``, murmur2 as Kafka's default
partitioner, so a conversation stays on one partition)."""

from __future__ import annotations

import functools
from typing import NamedTuple

import msgspec
from aiokafka.partitioner import murmur2
from aiokafka.record.default_records import DefaultRecordBatchBuilder

MAX_REQUEST_SIZE = 1_048_576
"""The producers' max_request_size (aiokafka's default, set explicitly: ``publish`` checks it)."""


class Partition(NamedTuple):
    """One partition of a topic. A tuple, so it equals (and hashes as) aiokafka's TopicPartition."""

    topic: str
    partition: int


class Record(msgspec.Struct, frozen=True):
    """One record read from the bus, at ``topic[partition]@offset``; ``timestamp`` in ms."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes], ...] = ()
    timestamp: int = 0


class Outgoing(msgspec.Struct, frozen=True):
    topic: str
    value: bytes
    key: str | None = None
    headers: list[tuple[str, bytes]] | None = None


def fits(m: Outgoing, limit: int = MAX_REQUEST_SIZE) -> bool:
    """Whether the broker can take ``m`` (its record, headers included, within ``limit``)."""
    key = m.key.encode() if m.key is not None else None
    size: int = DefaultRecordBatchBuilder.estimate_size_in_bytes(key, m.value, m.headers or [])
    return size <= limit


@functools.lru_cache(maxsize=1 << 16)
def partition_of(key: bytes, count: int) -> int:
    """The partition of ``key`` among ``count`` partitions, as Kafka's default partitioner picks it."""
    digest: int = murmur2(key)
    return (digest & 0x7FFFFFFF) % count
