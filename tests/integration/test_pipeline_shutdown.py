"""SIGTERM to a pipelined router worker mid-load (``router.pipeline: on``, the simulated 30B GPU: tens
of milliseconds a decision, so turns are in the engine when the signal comes).

It stops fetching, finishes the turns it admitted (decided, stored, published) and commits them,
and exits 0 within ``lifecycle.shutdown_timeout_s``. Checked between the exit and the restart:
every record below the committed offsets was decided (nothing committed is lost) and every
decision is below them (nothing finished is left for the successor to redo). After the restart:
each turn answered once, decided once, one agent task each.
"""

from __future__ import annotations

import asyncio
import collections
import signal
import subprocess
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
import yaml
from aiokafka import AIOKafkaConsumer, TopicPartition
from routeyard.consumers.dev.embedded import EmbeddedBroker, EmbeddedValkey
from routeyard.consumers.settings import Settings
from routeyard.router.catalog import load_catalog
from routeyard.schemas import RoutingDecision, decision_decoder, event_decoder, response_decoder

from tests.integration.stack import (
    Recorder,
    make_settings,
    read_all,
    running,
    spec,
    start_worker,
    stream,
    tasks_seen,
)

pytestmark = pytest.mark.integration

CONVERSATIONS = 200
SHUTDOWN_TIMEOUT_S = 10


def start_router(settings: Settings, catalog_path: Path, log: Path) -> subprocess.Popen[bytes]:
    return start_worker(
        "router",
        settings,
        catalog_path,
        log,
        ROUTEYARD_ROUTER__ENGINE="sim",
        ROUTEYARD_ROUTER__PIPELINE="on",
        ROUTEYARD_ROUTER__MAX_IN_FLIGHT="32",
        ROUTEYARD_SIM__PROFILE="plano-30b-a3b-h100",
        ROUTEYARD_LIFECYCLE__SHUTDOWN_TIMEOUT_S=str(SHUTDOWN_TIMEOUT_S),
    )


async def test_sigterm_finishes_and_commits_the_turns_in_flight(
    broker: EmbeddedBroker, valkey: EmbeddedValkey, prefix: str, tmp_path: Path
) -> None:
    await sigterm_mid_load(make_settings(broker, valkey, prefix), tmp_path)


async def sigterm_mid_load(settings: Settings, tmp_path: Path) -> None:
    catalog_path = tmp_path / "agents.yaml"
    catalog_path.write_text(yaml.safe_dump({"agents": [spec("WeatherAgent", "weather")]}))
    agents, log = Recorder(), tmp_path / "router.log"
    router = start_router(settings, catalog_path, log)
    try:
        recorders = [agents.agent("WeatherAgent", delay=0.01)]
        async with running(settings, load_catalog(catalog_path), recorders, routers=0) as client:
            events = [client.event(f"term-{i}", f"weather {i}?") for i in range(CONVERSATIONS)]
            streaming = asyncio.create_task(stream(client, events, timeout=120))
            await tasks_seen(agents, CONVERSATIONS // 4)
            signalled = datetime.now(UTC)
            began = time.monotonic()
            router.send_signal(signal.SIGTERM)
            code = await asyncio.to_thread(router.wait, SHUTDOWN_TIMEOUT_S + 10)
            took = time.monotonic() - began
            first = await _decisions(settings)
            committed = await _below_committed(settings)
            router = start_router(settings, catalog_path, log)
            responses = await streaming
    finally:
        router.kill()
        router.wait()
    tail = log.read_text()[-3000:]
    assert (code, took < SHUTDOWN_TIMEOUT_S + 5) == (0, True), (code, took, tail)
    decided = {d.event_id for d in first}
    assert committed <= decided, sorted(committed - decided)[:5]  # nothing committed undecided
    assert decided <= committed, sorted(decided - committed)[:5]  # nothing finished left uncommitted
    assert len(decided) < CONVERSATIONS, "the signal came too late to test anything"
    assert any(d.decided_at > signalled for d in first), "no turn was in flight at the signal"
    assert {r.status for r in responses} == {"complete"}, tail
    on_topic = collections.Counter(
        response_decoder.decode(v).event_id for v in await read_all(settings, settings.topics.responses)
    )
    assert sorted(on_topic) == sorted(e.event_id for e in events)
    assert max(on_topic.values()) == 1, [k for k, n in on_topic.items() if n > 1]
    decisions = collections.Counter(d.event_id for d in await _decisions(settings))
    assert max(decisions.values()) == 1, [k for k, n in decisions.items() if n > 1]  # none redone
    assert sorted(t.event_id for t in agents.tasks["WeatherAgent"]) == sorted(on_topic)


async def _decisions(settings: Settings) -> list[RoutingDecision]:
    return [decision_decoder.decode(v) for v in await read_all(settings, settings.topics.decisions, settle=1.0)]


async def _below_committed(settings: Settings) -> set[str]:
    """The event ids of the conversation records below the router group's committed offsets."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.kafka.bootstrap,
        group_id=f"{settings.topic_prefix}router",
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        fetch_max_wait_ms=25,
    )
    await consumer.start()
    try:
        topic = settings.topics.conversations
        parts = [TopicPartition(topic, p) for p in range(settings.kafka.partitions)]
        ends = {tp: await consumer.committed(tp) or 0 for tp in parts}
        consumer.assign(parts)
        await consumer.seek_to_beginning(*parts)
        below: set[str] = set()
        while [tp for tp, end in ends.items() if await consumer.position(tp) < end]:
            for tp, records in (await consumer.getmany(timeout_ms=500)).items():
                below |= {event_decoder.decode(r.value).event_id for r in records if r.offset < ends[tp]}
        return below
    finally:
        await consumer.stop()
