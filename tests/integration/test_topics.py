"""routeyard's topics are created with the replication the settings ask for, or not at all.

tansu is one broker that accepts any replication factor it is sent (it stores one copy): the
refusal of a factor above the broker count is routeyard's own check, made before creating.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from routeyard.consumers.dev.embedded import EmbeddedBroker
from routeyard.consumers.errors import TopicSettingsError
from routeyard.consumers.kafka.admin import ensure_topics, replication_plan
from routeyard.consumers.settings import KafkaSettings

ROOT = Path(__file__).parents[2]


def topics_create(broker: EmbeddedBroker, prefix: str, **env: str) -> subprocess.CompletedProcess[str]:
    """``routeyard topics create`` as a user runs it, with ``ROUTEYARD_KAFKA__*`` variables."""
    variables = {f"ROUTEYARD_KAFKA__{k.upper()}": v for k, v in env.items()}
    environ = {k: v for k, v in os.environ.items() if not k.startswith("ROUTEYARD_")}
    environ |= {"PYTHONPATH": str(ROOT), "ROUTEYARD_TOPIC_PREFIX": prefix, **variables}
    command = [sys.executable, "-m", "routeyard.consumers.cli", "--bootstrap", broker.bootstrap, "topics", "create"]
    return subprocess.run(command, env=environ, capture_output=True, text=True, timeout=60, check=False)


async def topic_names(bootstrap: str) -> set[str]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        return set(await admin.list_topics())
    finally:
        await admin.close()


async def topic_config(bootstrap: str, topic: str) -> dict[str, str]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        [response] = await admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, topic)])
    finally:
        await admin.close()
    entries: list[Any] = response.resources[0][4]
    return {entry[0]: entry[1] for entry in entries}


@pytest.mark.integration
async def test_a_factor_above_the_broker_count_is_one_line_and_creates_nothing(
    broker: EmbeddedBroker, prefix: str
) -> None:
    done = topics_create(broker, prefix, replication_factor="3")
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip() == (
        "routeyard: ROUTEYARD_KAFKA__REPLICATION_FACTOR=3 is more than the Kafka cluster's 1 broker(s):"
        " set it to 1 or less"
    )
    assert not {t for t in await topic_names(broker.bootstrap) if t.startswith(prefix)}


@pytest.mark.integration
async def test_min_insync_above_the_factor_is_one_line(broker: EmbeddedBroker, prefix: str) -> None:
    done = topics_create(broker, prefix, replication_factor="1", min_insync_replicas="2")
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip().startswith("routeyard: ROUTEYARD_KAFKA__MIN_INSYNC_REPLICAS=2 is more than")
    assert len(done.stderr.strip().splitlines()) == 1


@pytest.mark.integration
async def test_the_default_fits_a_one_broker_cluster(broker: EmbeddedBroker, prefix: str) -> None:
    done = topics_create(broker, prefix)
    assert done.returncode == 0, done.stderr
    assert f"{prefix}conversations" in await topic_names(broker.bootstrap)


@pytest.mark.integration
async def test_min_insync_replicas_is_set_on_created_topics(broker: EmbeddedBroker, prefix: str) -> None:
    settings = KafkaSettings(bootstrap=broker.bootstrap, replication_factor=1, min_insync_replicas=1)
    await ensure_topics(settings, {f"{prefix}isr": 2})
    assert (await topic_config(broker.bootstrap, f"{prefix}isr")).get("min.insync.replicas") == "1"


@pytest.mark.parametrize(
    ("factor", "isr", "brokers", "expected"),
    [
        (None, None, 1, (1, {})),  # a dev broker
        (None, None, 2, (2, {})),
        (None, None, 5, (3, {"min.insync.replicas": "2"})),  # production by default
        (3, 3, 3, (3, {"min.insync.replicas": "3"})),
        (2, None, 3, (2, {})),
    ],
)
def test_replication_plan(factor: int | None, isr: int | None, brokers: int, expected: tuple[Any, ...]) -> None:
    plan = replication_plan(factor, isr, brokers)
    assert (plan.factor, plan.configs) == expected


def test_below_three_on_a_big_cluster_warns() -> None:
    assert "ROUTEYARD_KAFKA__REPLICATION_FACTOR=3" in (replication_plan(1, None, 3).warning or "")
    assert replication_plan(None, None, 3).warning is None
    assert replication_plan(None, None, 1).warning is None  # a one-broker cluster cannot do better


async def test_the_warning_is_logged_at_topic_creation(caplog: pytest.LogCaptureFixture) -> None:
    from routeyard.consumers.kafka import admin

    class ThreeBrokers:
        async def describe_cluster(self) -> dict[str, Any]:
            return {"brokers": [{"node_id": n} for n in range(3)]}

    with caplog.at_level(logging.WARNING, logger=admin.__name__):
        plan = await admin._plan(ThreeBrokers(), KafkaSettings(replication_factor=1))  # type: ignore[arg-type]
    assert plan.factor == 1
    assert [r.levelno for r in caplog.records] == [logging.WARNING]
    assert "replication factor 1 on a cluster of 3 brokers" in caplog.records[0].getMessage()


def test_refusals_are_settings_errors() -> None:
    with pytest.raises(TopicSettingsError, match="REPLICATION_FACTOR=4 is more than the Kafka cluster's 3"):
        replication_plan(4, None, 3)
