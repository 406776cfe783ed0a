"""Where keys live in a Redis Cluster: hash tags by conversation, and calls split by hash slot.

Every key of a conversation (its context, its correlations, its variant pins) carries the hash tag
``{<namespace>:p<partition>}``, where ``partition`` is the conversation's partition among
``partitions`` as Kafka's default partitioner puts it (murmur2 of the conversation id, the key the
conversation's records carry). So a router worker's batch from one partition touches one hash slot,
and its script call goes to one shard; a batch of several partitions is split into one call per
partition. The tag is derived from the conversation id alone, which every task and reply carries:
the correlator finds a conversation's state without any field on the wire. Every process must use
the same ``partitions`` (``kafka.partitions``); a different count names different keys.

On a single Redis nothing is split: one call per batch, as before (``split`` is the identity).
Keys that do not belong to a conversation (task marks, "sent" markers, circuits) are split by
their own slot where a call would otherwise span several.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar, cast

from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster
from redis.crc import key_slot
from routeyard.consumers.kafka.records import partition_of

__all__ = ["DEFAULT_PARTITIONS", "is_cluster", "mget", "per_slot", "split", "tag", "tags"]

DEFAULT_PARTITIONS = 8
"""``kafka.partitions``' default."""

R = TypeVar("R")


def tag(namespace: str, conversation_id: str, partitions: int) -> str:
    """The hash tag of a conversation's keys (braces included)."""
    return f"{{{namespace}:p{partition_of(conversation_id.encode(), partitions)}}}"


def tags(namespace: str, partitions: int) -> list[str]:
    """Every partition's hash tag (the sweeper visits each partition's wake set)."""
    return [f"{{{namespace}:p{p}}}" for p in range(partitions)]


def is_cluster(redis: Any) -> bool:
    return isinstance(redis, RedisCluster)


def split(redis: Any, keys: Sequence[str]) -> list[list[int]]:
    """The indexes of ``keys`` grouped by hash slot on a cluster; all of them at once otherwise."""
    if not keys:
        return []
    if not is_cluster(redis):
        return [list(range(len(keys)))]
    groups: dict[int, list[int]] = {}
    for i, key in enumerate(keys):
        groups.setdefault(key_slot(key.encode()), []).append(i)
    return list(groups.values())


async def per_slot(redis: Any, keys: Sequence[str], call: Callable[[list[int]], Awaitable[list[R]]]) -> list[R]:
    """``call(indexes)`` once per slot group (concurrently), its results put back in key order."""
    groups = split(redis, keys)
    if len(groups) == 1:
        return await call(groups[0])
    out: list[Any] = [None] * len(keys)
    for group, results in zip(groups, await asyncio.gather(*(call(g) for g in groups)), strict=True):
        for i, r in zip(group, results, strict=True):
            out[i] = r
    return out


async def mget(redis: Redis, keys: Sequence[str]) -> list[bytes | None]:
    """MGET, split by slot on a cluster."""

    async def one(group: list[int]) -> list[bytes | None]:
        values = await redis.mget([keys[i] for i in group])  # bytes: the client does not decode responses
        return list(cast("list[bytes | None]", values))

    return await per_slot(redis, keys, one)
