"""A routeyard stack for one flow test: its own topics, consumer groups and Redis keys on the
session's real Valkey and on a bus: the session's real broker (tansu), or a memory bus of the
test's own. ``make_settings`` takes either; the helpers below find the bus by the settings'
prefix, so a test body reads the same on both."""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from routeyard.consumers.agents.agent import Agent, agent
from routeyard.consumers.app import create_topics, run_agent, run_correlator, run_router
from routeyard.consumers.client import RouteyardClient
from routeyard.consumers.dev.embedded import EmbeddedBroker, EmbeddedValkey
from routeyard.consumers.kafka.aio import KafkaBus
from routeyard.consumers.kafka.bus import Bus, Outgoing, Producer
from routeyard.consumers.kafka.memory import MemoryBus
from routeyard.consumers.settings import Settings
from routeyard.router.catalog import Catalog, catalog_from_dict
from routeyard.schemas import AgentTask

_MEMORY: dict[str, MemoryBus] = {}
"""The memory bus of each test's prefix (prefixes are unique per test)."""


def make_settings(where: EmbeddedBroker | Bus, valkey: EmbeddedValkey, prefix: str, **router: Any) -> Settings:
    """Settings for a stack on ``where``: the real broker (or a KafkaBus on it), or a memory bus."""
    if isinstance(where, MemoryBus):
        _MEMORY[prefix] = where
    return Settings.model_validate(
        {
            "topic_prefix": prefix,
            "kafka": {
                "bootstrap": where.bootstrap,
                "partitions": 4,
                "session_timeout_ms": 6000,
                "heartbeat_interval_ms": 1000,
            },
            "redis": {"url": valkey.url},
            "router": router,
            "correlator": {"sweep_interval_ms": 50},
        }
    )


def bus_for(settings: Settings) -> Bus:
    """The bus of the stack ``settings`` were made for."""
    return _MEMORY.get(settings.topic_prefix) or KafkaBus(settings.kafka)


def memory(settings: Settings) -> MemoryBus | None:
    return _MEMORY.get(settings.topic_prefix)


async def settled(settings: Settings, seconds: float) -> None:
    """Before asserting that nothing more arrives: on the memory bus, until every consumer group
    committed everything (drained); on a broker, ``seconds``."""
    bus = memory(settings)
    if bus is not None:
        await bus.idle()
    else:
        await asyncio.sleep(seconds)


async def joined(settings: Settings, group: str, members: int, seconds: float) -> None:
    """Until ``group`` has ``members`` members: on the memory bus, exactly; on a broker, ``seconds``."""
    bus = memory(settings)
    if bus is not None:
        await bus.joined(group, members)
    else:
        await asyncio.sleep(seconds)


async def send(
    settings: Settings, topic: str, values: Sequence[bytes], keys: Sequence[str | None] = (), *, limit: int = 1 << 20
) -> list[tuple[int, int]]:
    """Publish raw records one at a time, as any producer could (each up to ``limit`` bytes);
    returns each one's (partition, offset)."""
    keyed = [Outgoing(topic=topic, value=v, key=keys[i] if keys else None) for i, v in enumerate(values)]
    bus = memory(settings)
    if bus is not None:
        return [(r.partition, r.offset) for m in keyed for r in bus.append([m], limit=limit)]
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka.bootstrap, max_request_size=limit)
    await producer.start()
    try:
        sent = [await producer.send_and_wait(topic, m.value, key=m.key.encode() if m.key else None) for m in keyed]
    finally:
        await producer.stop()
    return [(m.partition, m.offset) for m in sent]


@contextlib.asynccontextmanager
async def publisher(settings: Settings) -> AsyncIterator[Producer]:
    """A started producer on the stack's bus (for records no client would send)."""
    producer = bus_for(settings).producer()
    await producer.start()
    try:
        yield producer
    finally:
        await producer.stop()


@dataclass
class Recorder:
    """Agents that answer ``<name>: <last user message>`` and remember every task they got."""

    tasks: dict[str, list[AgentTask]] = field(default_factory=dict)

    def agent(self, name: str, *, delay: float = 0.0, fail: bool = False) -> Agent:
        async def handle(task: AgentTask) -> str:
            self.tasks.setdefault(name, []).append(task)
            if delay:
                await asyncio.sleep(delay)
            if fail:
                raise RuntimeError(f"{name} is broken")
            last = next(m.content for m in reversed(task.messages) if m.role == "user")
            prior = "".join(f" [after {p.agent}: {p.content}]" for p in task.prior_replies)
            return f"{name}: {last}{prior}"

        return agent(name, f"test agent {name}")(handle)


def catalog(*agents: dict[str, Any], default: str | None = None) -> Catalog:
    data: dict[str, Any] = {"agents": list(agents)}
    if default:
        data["default"] = default
    return catalog_from_dict(data)


def spec(name: str, *keywords: str, timeout: str = "10s") -> dict[str, Any]:
    return {
        "name": name,
        "description": f"test agent {name}",
        "timeout": timeout,
        "rules": {"keywords": list(keywords)},
    }


@contextlib.asynccontextmanager
async def running(
    settings: Settings,
    catalog: Catalog,
    agents: Sequence[Agent],
    *,
    routers: int = 1,
    correlator: bool = True,
) -> AsyncIterator[RouteyardClient]:
    """Router worker(s), correlator and agents as tasks; yields a client watching decisions."""
    bus = bus_for(settings)
    await create_topics(settings, catalog, bus)
    stop = asyncio.Event()
    tasks = [asyncio.create_task(run_router(settings, stop, catalog, bus=bus)) for _ in range(routers)]
    if correlator:
        tasks.append(asyncio.create_task(run_correlator(settings, stop, bus)))
    tasks += [asyncio.create_task(run_agent(a, settings, stop, bus)) for a in agents]
    client = RouteyardClient(prefix=settings.topic_prefix, watch_decisions=True, bus=bus)
    await client.start()
    try:
        yield client
        for task in tasks:
            if task.done():
                task.result()  # a worker that died fails the test with its own error
    finally:
        await client.stop()
        stop.set()
        await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), 30)


async def read_all(settings: Settings, topic: str, *, settle: float = 0.5) -> list[bytes]:
    """Every record on a topic, from the beginning (waits ``settle`` s with nothing new; on the
    memory bus, until every consumer waits with nothing to read)."""
    bus = memory(settings)
    if bus is not None:
        await bus.quiet()
        return [r.value or b"" for r in bus.records(topic)]
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.kafka.bootstrap,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        fetch_max_wait_ms=25,
    )
    await consumer.start()
    try:
        partitions = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or [])]
        if not partitions:
            await consumer.topics()
            partitions = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or [])]
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        values: list[bytes] = []
        while True:
            batch = await consumer.getmany(timeout_ms=int(settle * 1000))
            if not batch:
                return values
            values += [r.value for records in batch.values() for r in records]
    finally:
        await consumer.stop()


def start_worker(role: str, settings: Settings, catalog_path: Path, log: Path, **env: str) -> subprocess.Popen[bytes]:
    """``routeyard worker ROLE`` as a child process on this test's broker, Redis and prefix, with
    small batches and quick group joins; ``env`` adds ROUTEYARD_* variables. Output goes to ``log``."""
    variables = dict(
        os.environ,
        ROUTEYARD_TOPIC_PREFIX=settings.topic_prefix,
        ROUTEYARD_KAFKA__BOOTSTRAP=settings.kafka.bootstrap,
        ROUTEYARD_KAFKA__SESSION_TIMEOUT_MS="6000",
        ROUTEYARD_KAFKA__HEARTBEAT_INTERVAL_MS="1000",
        ROUTEYARD_KAFKA__PARTITIONS=str(settings.kafka.partitions),
        ROUTEYARD_REDIS__URL=settings.redis.url.get_secret_value(),
        ROUTEYARD_ROUTER__CATALOG=str(catalog_path),
        ROUTEYARD_ROUTER__MAX_BATCH="8",
        **env,
    )
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "routeyard.consumers.cli", "worker", role],
            env=variables,
            stdout=out,
            stderr=subprocess.STDOUT,
        )


async def stream(
    client: RouteyardClient, events: Sequence[Any], *, chunk: int = 5, pause: float = 0.05, timeout: float = 180
) -> list[Any]:
    """Ask ``events`` ``chunk`` at a time every ``pause`` s (a steady stream, not one burst); their responses."""
    asks = []
    for i in range(0, len(events), chunk):
        asks.append(asyncio.create_task(client.ask_many(events[i : i + chunk], timeout=timeout)))
        await asyncio.sleep(pause)
    return [r for batch in await asyncio.gather(*asks) for r in batch]


async def tasks_seen(agents: Recorder, at_least: int, agent: str = "WeatherAgent", timeout: float = 90) -> None:
    """Until ``agent`` has had ``at_least`` tasks."""
    async with asyncio.timeout(timeout):
        while len(agents.tasks.get(agent, [])) < at_least:
            await asyncio.sleep(0.01)
