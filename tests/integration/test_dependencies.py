"""Dependencies going away mid-stream: the workers back off and resume, and every conversation
is still answered exactly once.

Each test starts its own Valkey (it restarts it), on a random loopback port. No broker-restart
test: the embedded tansu stores in memory (notes/infra.md), so a restart loses topics, messages
and committed offsets and there is nothing to resume; that needs tansu on s3:// (moto) or Kafka.
"""

from __future__ import annotations

import asyncio
import collections

import pytest

from consumers.embedded import EmbeddedBroker, EmbeddedValkey
from consumers.settings import Settings
from schemas import response_decoder
from tests.integration.stack import Recorder, catalog, make_settings, read_all, running, spec

pytestmark = pytest.mark.integration

CONVERSATIONS = 120


def _settings(broker: EmbeddedBroker, valkey: EmbeddedValkey, prefix: str) -> Settings:
    base = make_settings(broker, valkey, prefix, max_batch=8)
    # Short backoff caps so the workers notice the server is back within a second.
    return base.model_copy(update={"lifecycle": base.lifecycle.model_copy(update={"retry_max_delay_s": 0.5})})


async def _stream(client, events, chunk: int = 4, pause: float = 0.05):
    asks = []
    for i in range(0, len(events), chunk):
        asks.append(asyncio.create_task(client.ask_many(events[i : i + chunk], timeout=180)))
        await asyncio.sleep(pause)
    return [r for batch in await asyncio.gather(*asks) for r in batch]


async def _progress(agents: Recorder, name: str, at_least: int) -> None:
    async with asyncio.timeout(60):
        while len(agents.tasks.get(name, [])) < at_least:
            await asyncio.sleep(0.01)


async def _responses_by_event(settings: Settings) -> collections.Counter[str]:
    values = await read_all(settings, settings.topics.responses)
    return collections.Counter(response_decoder.decode(v).event_id for v in values)


async def test_redis_down_for_seconds_mid_stream_loses_nothing_and_answers_once(
    broker: EmbeddedBroker, prefix: str
) -> None:
    with EmbeddedValkey(appendonly=True) as valkey:
        settings = _settings(broker, valkey, prefix)
        agents = Recorder()
        cat = catalog(spec("WeatherAgent", "weather"), spec("RestaurantAgent", "table"))
        async with running(settings, cat, [agents.agent("WeatherAgent"), agents.agent("RestaurantAgent")]) as client:
            events = [
                client.event(f"redis-{i}", "weather and a table?" if i % 2 else "weather?")
                for i in range(CONVERSATIONS)
            ]
            streaming = asyncio.create_task(_stream(client, events))
            await _progress(agents, "WeatherAgent", CONVERSATIONS // 4)
            port = valkey.port
            valkey.kill()  # SIGKILL: appendfsync always keeps every acknowledged write
            down_at = len(agents.tasks["WeatherAgent"])
            await asyncio.sleep(3)
            valkey.start()
            assert valkey.port == port
            responses = await streaming
        assert down_at < CONVERSATIONS, "Redis went down too late to test anything"
        assert {r.status for r in responses} == {"complete"}
        on_topic = await _responses_by_event(settings)
        assert sorted(on_topic) == sorted(e.event_id for e in events)
        assert max(on_topic.values()) == 1, [k for k, n in on_topic.items() if n > 1]
