"""The pipelined router worker (``router.pipeline: on``) against a real 3-primary Valkey cluster.

test_cluster.py runs the flow, crash and multi-intent tests on the cluster with the one-batch
worker (the rules engine's default); here the same flows, a stream of multi-intent turns, the
pipeline's own invariants (test_router_pipeline.py), a rebalance mid-stream, a SIGKILL and a
SIGTERM run with the pipeline on. A key of one call in another slot fails the call (CROSSSLOT),
so these pass only where the pipeline's calls (admit, write_many, the outbox) keep to one slot.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from routeyard.consumers.dev.embedded import EmbeddedBroker
from routeyard.consumers.kafka.bus import Bus
from routeyard.consumers.settings import Settings

from tests.integration import test_pipeline_multi_intent, test_pipeline_rebalance, test_pipeline_shutdown
from tests.integration.cluster import EmbeddedValkeyCluster
from tests.integration.stack import make_settings
from tests.integration.test_pipeline import (  # noqa: F401  (collected here, on the cluster, pipelined)
    test_follow_up_is_routed_with_context_and_agents_see_earlier_replies,
    test_parallel_multi_intent,
    test_redelivered_events_do_not_dispatch_twice,
    test_sequential_multi_intent_passes_earlier_replies,
    test_single_route,
    test_two_router_workers_share_the_partitions,
)
from tests.integration.test_router_pipeline import (  # noqa: F401
    test_a_later_turn_is_decided_with_the_earlier_in_its_context,
    test_commits_wait_for_an_unfinished_turn_and_a_restart_dispatches_once,
    test_in_flight_work_is_bounded,
)


@pytest.fixture
def settings(bus: Bus, valkey_cluster: EmbeddedValkeyCluster, prefix: str) -> Settings:
    made = make_settings(bus, valkey_cluster, prefix, pipeline="on", max_in_flight=6)  # type: ignore[arg-type]
    assert made.router.pipelined() and made.redis.url.get_secret_value().startswith("redis+cluster://")
    return made


async def test_a_third_worker_joins_and_one_stops_mid_stream_on_a_cluster(
    bus: Bus, valkey_cluster: EmbeddedValkeyCluster, prefix: str
) -> None:
    settings = make_settings(bus, valkey_cluster, prefix, pipeline="on", max_in_flight=16)  # type: ignore[arg-type]
    await test_pipeline_rebalance.stop_one_mid_stream(settings)


async def test_parallel_and_sequential_turns_stream_through_the_pipeline_on_a_cluster(
    bus: Bus, valkey_cluster: EmbeddedValkeyCluster, prefix: str
) -> None:
    settings = make_settings(bus, valkey_cluster, prefix, pipeline="on", max_in_flight=8)  # type: ignore[arg-type]
    await test_pipeline_multi_intent.multi_intent_stream(settings)


@pytest.mark.integration
async def test_a_third_worker_joins_and_one_is_killed_mid_stream_on_a_cluster(
    broker: EmbeddedBroker, valkey_cluster: EmbeddedValkeyCluster, prefix: str, tmp_path: Path
) -> None:
    await test_pipeline_rebalance.kill_one_mid_stream(broker, valkey_cluster, prefix, tmp_path)  # type: ignore[arg-type]


@pytest.mark.integration
async def test_sigterm_finishes_and_commits_the_turns_in_flight_on_a_cluster(
    broker: EmbeddedBroker, valkey_cluster: EmbeddedValkeyCluster, prefix: str, tmp_path: Path
) -> None:
    settings = make_settings(broker, valkey_cluster, prefix)  # type: ignore[arg-type]
    await test_pipeline_shutdown.sigterm_mid_load(settings, tmp_path)
