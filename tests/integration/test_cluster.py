"""The pipeline, a crash and multi-intent turns against a real 3-primary Valkey cluster.

The tests are the single-Redis ones (imported: pytest runs them here with this module's
``settings``); only the Redis differs: three primaries in cluster mode (tests/integration/cluster.py),
reached with a ``redis+cluster://`` url. A key of one call in another slot fails the call
(CROSSSLOT), so these pass only where every call keeps to one slot.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from redis.crc import key_slot
from routeyard.consumers.app import stores
from routeyard.consumers.dev.embedded import EmbeddedBroker
from routeyard.consumers.kafka.bus import Bus
from routeyard.consumers.kafka.records import partition_of
from routeyard.consumers.settings import Settings
from routeyard.consumers.stores.connection import connect_redis

from tests.integration import test_crash
from tests.integration.cluster import EmbeddedValkeyCluster
from tests.integration.stack import Recorder, make_settings, running
from tests.integration.test_pipeline import (  # noqa: F401  (collected here, on the cluster)
    CATALOG,
    test_follow_up_is_routed_with_context_and_agents_see_earlier_replies,
    test_parallel_multi_intent,
    test_redelivered_events_do_not_dispatch_twice,
    test_sequential_multi_intent_passes_earlier_replies,
    test_single_route,
    test_two_router_workers_share_the_partitions,
)


@pytest.fixture
def settings(bus: Bus, valkey_cluster: EmbeddedValkeyCluster, prefix: str) -> Settings:
    return make_settings(bus, valkey_cluster, prefix)  # type: ignore[arg-type]  # has .url


@pytest.mark.integration
async def test_sigkill_router_on_a_cluster_loses_nothing_and_answers_once(
    broker: EmbeddedBroker, valkey_cluster: EmbeddedValkeyCluster, prefix: str, tmp_path: Path
) -> None:
    await test_crash.test_sigkill_router_mid_stream_loses_nothing_and_answers_once(
        broker,
        valkey_cluster,  # type: ignore[arg-type]
        prefix,
        tmp_path,
    )


async def test_a_turns_keys_spread_over_the_shards_and_each_partition_keeps_to_one_slot(settings: Settings) -> None:
    """Conversations of several partitions answered; each partition's state in one slot."""
    async with running(settings, CATALOG, [Recorder().agent("WeatherAgent")]) as client:
        responses = [await client.ask(f"spread-{i}", "weather?", timeout=30) for i in range(12)]
    assert {r.status for r in responses} == {"complete"}
    client_ = connect_redis(settings.redis.url.get_secret_value())
    try:
        _, store = stores(settings, client_)
        keys = [store.key(None, r.conversation_id, r.event_id) for r in responses]
        assert all(raw is not None for raw in await store.get_many(keys))  # done markers, found by key
        slots_used = {key_slot(k.encode()) for k in keys}
        partitions = {partition_of(r.conversation_id.encode(), settings.kafka.partitions) for r in responses}
        assert len(slots_used) == len(partitions) > 1  # one slot per partition, several partitions
    finally:
        await client_.aclose()
