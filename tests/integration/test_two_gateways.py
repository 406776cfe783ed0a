"""Two gateway instances behind a load balancer, on each bus with the real Valkey: each asks for
its turns' responses on its own reply topic (``<prefix>gateway.<instance>``) and reads only that
one, so instance A never receives B's answers, and both answer their own clients correctly while
they run side by side."""

from __future__ import annotations

import asyncio

import msgspec
import pytest
from openai import AsyncOpenAI
from routeyard.consumers.kafka.bus import Bus

from tests.integration.gateway_stack import KEYS, gateway, with_gateway
from tests.integration.stack import Recorder, catalog, make_settings, read_all, running, spec

CATALOG = catalog(spec("WeatherAgent", "weather"), spec("RestaurantAgent", "restaurant"))
ACME = next(k for k, t in KEYS.items() if t == "acme")
TURNS = 6


@pytest.fixture
def settings(bus: Bus, valkey, prefix: str):  # type: ignore[no-untyped-def]
    return make_settings(bus, valkey, prefix)


async def _ask(url: str, conversation: str, text: str) -> tuple[str, str]:
    client = AsyncOpenAI(base_url=f"{url}/v1", api_key=ACME, max_retries=0)
    raw = await client.chat.completions.with_raw_response.create(
        model="routeyard",
        messages=[{"role": "user", "content": text}],
        extra_headers={"X-Conversation-Id": conversation},
    )
    return raw.headers["x-routeyard-event-id"], raw.parse().choices[0].message.content or ""


async def test_each_instance_reads_only_its_own_responses(settings) -> None:
    a, b = with_gateway(settings, instance="a"), with_gateway(settings, instance="b")
    recorder = Recorder()
    agents = [recorder.agent("WeatherAgent"), recorder.agent("RestaurantAgent")]
    async with running(settings, CATALOG, agents), gateway(a, CATALOG) as url_a, gateway(b, CATALOG) as url_b:
        asks = [_ask(url_a if i % 2 else url_b, f"conv-{i}", f"weather for city {i}?") for i in range(TURNS)]
        answers = await asyncio.gather(*asks)
        on_a = await read_all(settings, f"{settings.topic_prefix}gateway.a")
        on_b = await read_all(settings, f"{settings.topic_prefix}gateway.b")
    for i, (_, content) in enumerate(answers):
        assert content == f"WeatherAgent: weather for city {i}?"
    ids_a = {msgspec.json.decode(r)["event_id"] for r in on_a}
    ids_b = {msgspec.json.decode(r)["event_id"] for r in on_b}
    assert ids_a == {event_id for i, (event_id, _) in enumerate(answers) if i % 2}
    assert ids_b == {event_id for i, (event_id, _) in enumerate(answers) if not i % 2}
