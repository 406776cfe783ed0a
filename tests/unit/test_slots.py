"""Hash tags by conversation partition, and calls split by slot only on a cluster."""

from __future__ import annotations

from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster
from redis.crc import key_slot
from routeyard.consumers.kafka.records import partition_of
from routeyard.consumers.settings import Settings
from routeyard.consumers.stores import slots
from routeyard.consumers.stores.connection import connect_redis
from routeyard.consumers.stores.context import ContextStore
from routeyard.consumers.stores.correlations import CorrelationStore


def test_a_conversations_keys_share_one_slot_named_by_its_partition() -> None:
    client = Redis()
    context = ContextStore(client, "ns", max_messages=8, ttl_s=60, partitions=8)
    store = CorrelationStore(client, "ns", ttl_s=60, lease_s=5, partitions=8)
    keys = [*context.keys("acme", "conv-1"), store.key("acme", "conv-1", "e1"), store.key("acme", "conv-1", "e9")]
    wake = store.wake_key(keys[2])
    assert len({key_slot(k.encode()) for k in [*keys, wake]}) == 1
    assert keys[2].startswith(f"{{ns:p{partition_of(b'conv-1', 8)}}}:acme:corr:")
    assert wake in store.wake_keys and len(store.wake_keys) == 8


def test_split_is_one_group_on_a_single_redis_and_one_per_slot_on_a_cluster() -> None:
    keys = ["{a}x", "{b}x", "{a}y"]
    assert slots.split(Redis(), keys) == [[0, 1, 2]]
    cluster = RedisCluster.__new__(RedisCluster)  # no connection: only its type matters here
    assert sorted(slots.split(cluster, keys)) == [[0, 2], [1]]


def test_a_cluster_url_or_setting_selects_the_cluster_client() -> None:
    assert isinstance(connect_redis("redis+cluster://127.0.0.1:7000/0"), RedisCluster)
    assert isinstance(connect_redis("redis://127.0.0.1:7000/0", cluster=True), RedisCluster)
    assert not isinstance(connect_redis("redis://127.0.0.1:7000/0"), RedisCluster)
    assert Settings.model_validate({"redis": {"url": "rediss+cluster://h:1"}}).redis.is_cluster
    assert Settings.model_validate({"redis": {"cluster": True}}).redis.is_cluster
    assert not Settings().redis.is_cluster
