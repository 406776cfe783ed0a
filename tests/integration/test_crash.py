"""Killing the router worker with SIGKILL mid-stream and starting it again loses no
conversation and answers none twice; a router that dies between storing a turn and carrying out
its outbox leaves it to a sweeper."""

from __future__ import annotations

import asyncio
import collections
import signal
import subprocess
from pathlib import Path

import pytest
import redis.asyncio as redis
import yaml
from prometheus_client import REGISTRY
from routeyard.consumers.dev.embedded import EmbeddedBroker, EmbeddedValkey
from routeyard.consumers.kafka.memory import MemoryBus
from routeyard.consumers.stores.correlations import CorrelationStore, Done, Outbox, Stored, decode_state
from routeyard.schemas import response_decoder

from tests.integration.stack import Recorder, catalog, make_settings, read_all, running, spec, start_worker

pytestmark = pytest.mark.integration

CONVERSATIONS = 150


def start_router(settings, catalog_path: Path, log: Path) -> subprocess.Popen[bytes]:
    return start_worker("router", settings, catalog_path, log)


async def test_sigkill_router_mid_stream_loses_nothing_and_answers_once(
    broker: EmbeddedBroker, valkey: EmbeddedValkey, prefix: str, tmp_path: Path
) -> None:
    settings = make_settings(broker, valkey, prefix)
    entries = [spec("WeatherAgent", "weather"), spec("RestaurantAgent", "table")]
    catalog_path = tmp_path / "agents.yaml"
    catalog_path.write_text(yaml.safe_dump({"agents": entries}))
    from routeyard.router.catalog import load_catalog

    catalog = load_catalog(catalog_path)
    agents = Recorder()
    log = tmp_path / "router.log"
    router = start_router(settings, catalog_path, log)
    try:
        async with running(
            settings, catalog, [agents.agent("WeatherAgent"), agents.agent("RestaurantAgent")], routers=0
        ) as client:
            events = [
                client.event(f"crash-{i}", "weather and a table?" if i % 3 else "weather?")
                for i in range(CONVERSATIONS)
            ]
            waiting = asyncio.create_task(_stream(client, events))
            await _wait_for_progress(agents, at_least=CONVERSATIONS // 4)
            router.send_signal(signal.SIGKILL)
            router.wait()
            answered_before_restart = len(agents.tasks.get("WeatherAgent", []))
            router = start_router(settings, catalog_path, log)
            responses = [r for chunk in await waiting for r in chunk]
    finally:
        router.kill()
        router.wait()
    assert answered_before_restart < CONVERSATIONS, "the kill came too late to test anything"
    assert {r.status for r in responses} == {"complete"}, log.read_text()[-3000:]
    on_topic = collections.Counter(
        response_decoder.decode(v).event_id for v in await read_all(settings, settings.topics.responses)
    )
    assert sorted(on_topic) == sorted(e.event_id for e in events)
    assert max(on_topic.values()) == 1, [k for k, n in on_topic.items() if n > 1]
    handled = collections.Counter(t.task_id for t in agents.tasks["WeatherAgent"])
    assert max(handled.values()) == 1


async def _stream(client, events, chunk: int = 5, pause: float = 0.05):
    """Publish the events as a stream (a few every ``pause`` s) and wait for all responses."""
    asks = []
    for i in range(0, len(events), chunk):
        asks.append(asyncio.create_task(client.ask_many(events[i : i + chunk], timeout=120)))
        await asyncio.sleep(pause)
    return await asyncio.gather(*asks)


async def _wait_for_progress(agents: Recorder, at_least: int, timeout: float = 60) -> None:
    async with asyncio.timeout(timeout):
        while len(agents.tasks.get("WeatherAgent", [])) < at_least:
            await asyncio.sleep(0.01)


async def test_a_router_that_dies_between_staging_and_clearing_is_carried_out_once_by_a_sweeper(
    valkey: EmbeddedValkey, prefix: str, redis_client: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The router stores a turn with its decision and task in the outbox and dies before carrying
    them out (its first carry_out does nothing; the event is committed): after the outbox lease a
    sweeper carries them out, once (its clear sticks: no second rerun a lease later), the turn is
    answered once, and its correlation ends a done marker with nothing due."""
    settings = make_settings(MemoryBus(), valkey, prefix)
    settings = settings.model_copy(
        update={"correlator": settings.correlator.model_copy(update={"outbox_lease_s": 1.0})}
    )
    carry_out, dropped = Outbox.carry_out, []

    async def dies_before_carrying_out(self: Outbox, items: dict[str, Stored]) -> None:
        if not dropped:  # the first call is the router's first batch
            dropped.extend(e for item in items.values() for e in item.effects)
            return
        await carry_out(self, items)

    monkeypatch.setattr(Outbox, "carry_out", dies_before_carrying_out)
    rerun_before = REGISTRY.get_sample_value("routeyard_outbox_rerun_total") or 0
    agents = Recorder()
    async with running(settings, catalog(spec("WeatherAgent", "weather")), [agents.agent("WeatherAgent")]) as client:
        response = await client.ask("c1", "weather?", timeout=30)
        await asyncio.sleep(2.5)  # two leases more: a clear that did not stick would be rerun
    assert response.status == "complete" and {e.id.split(":")[0] for e in dropped} == {"decision", "task"}
    assert (REGISTRY.get_sample_value("routeyard_outbox_rerun_total") or 0) - rerun_before == len(dropped)
    assert [t.event_id for t in agents.tasks["WeatherAgent"]] == [response.event_id]
    store = CorrelationStore(
        redis_client, settings.namespace, ttl_s=60, lease_s=1, partitions=settings.kafka.partitions
    )
    key = store.key(None, "c1", response.event_id)
    assert isinstance(decode_state(await redis_client.get(key)), Done)
    assert await redis_client.zscore(store.wake_key(key), key) is None
    values = await read_all(settings, settings.topics.responses)
    assert collections.Counter(response_decoder.decode(v).event_id for v in values) == {response.event_id: 1}
