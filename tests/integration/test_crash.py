"""Killing the router worker with SIGKILL mid-stream and starting it again loses no
conversation and answers none twice."""

from __future__ import annotations

import asyncio
import collections
import signal
import subprocess
from pathlib import Path

import pytest
import yaml
from routeyard.consumers.dev.embedded import EmbeddedBroker, EmbeddedValkey
from routeyard.schemas import response_decoder

from tests.integration.stack import Recorder, make_settings, read_all, running, spec, start_worker

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
