"""The correlator advances filter chains: SIGKILLed while turns are mid-chain (some waiting on an
input filter, some on their agent, some on an output filter) and started again, it loses no turn,
answers each once, sends no agent task twice and never lets an agent see unredacted text."""

from __future__ import annotations

import asyncio
import collections
import signal
from pathlib import Path

import pytest
import yaml
from routeyard.consumers.dev.embedded import EmbeddedBroker, EmbeddedValkey
from routeyard.consumers.workers.filters import run_filters
from routeyard.router.catalog import load_catalog
from routeyard.schemas import response_decoder

from examples.filters.filters import pii_redactor, pii_restorer
from tests.integration.stack import Recorder, bus_for, make_settings, read_all, running, spec, start_worker

pytestmark = pytest.mark.integration

CONVERSATIONS = 150


async def test_sigkill_correlator_mid_chain_loses_nothing_and_answers_once(
    broker: EmbeddedBroker, valkey: EmbeddedValkey, prefix: str, tmp_path: Path
) -> None:
    settings = make_settings(broker, valkey, prefix)
    data = {
        "filters": [
            {"name": "PiiRedactor", "kind": "python"},
            {"name": "PiiRestorer", "kind": "python", "stage": "output"},
        ],
        "agents": [spec("Weather", "weather", timeout="60s")],
    }
    path = tmp_path / "agents.yaml"
    path.write_text(yaml.safe_dump(data))
    catalog = load_catalog(path)
    recorder = Recorder()
    log = tmp_path / "correlator.log"
    correlator = start_worker("correlator", settings, path, log)
    stop = asyncio.Event()
    try:
        async with running(settings, catalog, [recorder.agent("Weather", delay=0.05)], correlator=False) as client:
            filters = asyncio.create_task(
                run_filters(settings, catalog, [pii_redactor, pii_restorer], stop, bus_for(settings))
            )
            events = [client.event(f"fc-{i}", f"weather for user{i}@example.com?") for i in range(CONVERSATIONS)]
            waiting = asyncio.create_task(_stream(client, events))
            async with asyncio.timeout(90):
                while len(recorder.tasks.get("Weather", [])) < CONVERSATIONS // 4:
                    await asyncio.sleep(0.01)
            correlator.send_signal(signal.SIGKILL)
            correlator.wait()
            seen_before = len(recorder.tasks["Weather"])
            correlator = start_worker("correlator", settings, path, log)
            responses = [r for chunk in await waiting for r in chunk]
            stop.set()
            await asyncio.wait_for(filters, 30)
    finally:
        stop.set()
        correlator.kill()
        correlator.wait()
    assert seen_before < CONVERSATIONS, "the kill came too late to test anything"
    assert {r.status for r in responses} == {"complete"}, log.read_text()[-3000:]
    by_event = {e.event_id: e.conversation_id for e in events}
    for response in responses:  # restored for the caller
        i = by_event[response.event_id].removeprefix("fc-")
        assert response.content == f"Weather: weather for user{i}@example.com?"
    on_topic = collections.Counter(
        response_decoder.decode(v).event_id for v in await read_all(settings, settings.topics.responses)
    )
    assert sorted(on_topic) == sorted(by_event) and max(on_topic.values()) == 1
    tasks = recorder.tasks["Weather"]
    assert max(collections.Counter(t.task_id for t in tasks).values()) == 1
    assert all("@example.com" not in m.content for t in tasks for m in t.messages)


async def _stream(client, events, chunk: int = 5, pause: float = 0.1):  # type: ignore[no-untyped-def]
    asks = []
    for i in range(0, len(events), chunk):
        asks.append(asyncio.create_task(client.ask_many(events[i : i + chunk], timeout=120)))
        await asyncio.sleep(pause)
    return await asyncio.gather(*asks)
