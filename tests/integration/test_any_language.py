"""Agents and producers that are not written with routeyard: plain aiokafka + the exported JSON
Schema (no routeyard import), and FastStream. The router and correlator run in-process with no
routeyard agents; every answer has to come from the examples."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiokafka import AIOKafkaProducer
from routeyard.consumers.app import create_topics
from routeyard.consumers.dev.embedded import EmbeddedBroker, EmbeddedValkey
from routeyard.consumers.dev.server import run_pipeline
from routeyard.consumers.settings import Settings
from routeyard.router.catalog import Catalog, load_catalog
from routeyard.schemas import export_schemas

from examples import faststream_agent, plain_kafka_agent, plain_kafka_client

pytestmark = pytest.mark.integration

CATALOG_YAML = """\
agents:
  - name: EchoAgent
    description: Repeats the user's latest message back
    timeout: 30s
    rules:
      keywords: [echo]
  - name: FaststreamAgent
    description: Answers from a FastStream service
    timeout: 30s
    rules:
      keywords: [stream]
"""


@pytest.fixture
def settings(broker: EmbeddedBroker, valkey: EmbeddedValkey, prefix: str, tmp_path: Path) -> Settings:
    catalog = tmp_path / "catalog.yaml"
    catalog.write_text(CATALOG_YAML)
    return Settings.model_validate(
        {
            "topic_prefix": prefix,
            "kafka": {"bootstrap": broker.bootstrap, "partitions": 2},
            "redis": {"url": valkey.url},
            "router": {"catalog": catalog},
        }
    )


@contextlib.asynccontextmanager
async def any_language_stack(settings: Settings, schemas_dir: Path) -> AsyncIterator[None]:
    """routeyard's router + correlator, the plain-Kafka EchoAgent and the FastStream agent."""
    catalog: Catalog = load_catalog(settings.router.catalog)
    await create_topics(settings, catalog)
    bootstrap, prefix = settings.kafka.bootstrap, settings.topic_prefix
    stop = asyncio.Event()
    tasks = [
        asyncio.create_task(run_pipeline(settings, catalog, [], stop)),
        asyncio.create_task(plain_kafka_agent.run(bootstrap, prefix, schemas_dir, "EchoAgent", stop)),
        asyncio.create_task(faststream_agent.run(bootstrap, prefix, stop)),
    ]
    try:
        yield
    finally:
        stop.set()
        done, late = await asyncio.wait(tasks, timeout=30)
        for task in late:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        assert not late, f"{len(late)} tasks did not stop within 30 s"
        for task in done:  # a component that crashed fails the test with its own error
            task.result()


async def publish_invalid_task(bootstrap: str, topic: str, key: str) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, enable_idempotence=False)
    await producer.start()
    try:
        await producer.send_and_wait(topic, b'{"task_id": "no other field"}', key=key.encode())
    finally:
        await producer.stop()


async def test_plain_kafka_and_faststream_agents_answer(settings: Settings, tmp_path: Path) -> None:
    schemas_dir = tmp_path / "schemas"
    export_schemas(schemas_dir)
    bootstrap, prefix = settings.kafka.bootstrap, settings.topic_prefix

    async with any_language_stack(settings, schemas_dir):
        # Same keys as the real tasks below, so the same partitions, ahead of them: each agent
        # must skip (and commit past) its invalid record to answer at all.
        await publish_invalid_task(bootstrap, settings.topics.agent("EchoAgent"), "conv-echo")
        await publish_invalid_task(bootstrap, settings.topics.agent("FaststreamAgent"), "conv-stream")
        echo = await plain_kafka_client.ask(bootstrap, prefix, schemas_dir, "conv-echo", "please echo this", timeout=30)
        streamed = await plain_kafka_client.ask(
            bootstrap, prefix, schemas_dir, "conv-stream", "stream this to me", timeout=30
        )

    assert echo["status"] == "complete"
    assert echo["routes"] == ["EchoAgent"]
    assert [(r["agent"], r["status"], r["content"]) for r in echo["replies"]] == [
        ("EchoAgent", "ok", "echo: please echo this")
    ]
    assert streamed["status"] == "complete"
    assert streamed["routes"] == ["FaststreamAgent"]
    assert [(r["agent"], r["status"], r["content"]) for r in streamed["replies"]] == [
        ("FaststreamAgent", "ok", "faststream: stream this to me")
    ]
