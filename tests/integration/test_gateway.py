"""The gateway with the official ``openai`` client, on each bus (memory, the real broker) with the
real Valkey: routed answers with stream=False and stream=True, a follow-up routed by context, a
multi-intent turn, an agent named as the model, and what the routeyard extension says."""

from __future__ import annotations

import httpx
import pytest
from openai import AsyncOpenAI
from routeyard.consumers.kafka.bus import Bus

from tests.integration.gateway_stack import KEYS, gateway, with_gateway
from tests.integration.stack import Recorder, catalog, make_settings, running, spec

CATALOG = catalog(spec("WeatherAgent", "weather"), spec("RestaurantAgent", "restaurant"))
ACME = next(k for k, t in KEYS.items() if t == "acme")


@pytest.fixture
def settings(bus: Bus, valkey, prefix: str):  # type: ignore[no-untyped-def]
    return with_gateway(make_settings(bus, valkey, prefix))


def agents() -> tuple[Recorder, list]:  # type: ignore[type-arg]
    recorder = Recorder()
    return recorder, [recorder.agent("WeatherAgent"), recorder.agent("RestaurantAgent")]


async def test_openai_client_gets_routed_answers_and_follow_ups(settings) -> None:
    recorder, running_agents = agents()
    async with running(settings, CATALOG, running_agents), gateway(settings, CATALOG) as url:
        client = AsyncOpenAI(base_url=f"{url}/v1", api_key=ACME, max_retries=0)
        first = await client.chat.completions.with_raw_response.create(
            model="routeyard",
            messages=[{"role": "user", "content": "What's the weather in Paris?"}],
            extra_headers={"X-Conversation-Id": "conv-1"},
        )
        answer = first.parse()
        history = [
            {"role": "user", "content": "What's the weather in Paris?"},
            {"role": "assistant", "content": answer.choices[0].message.content},
            {"role": "user", "content": "And tomorrow?"},
        ]
        follow_up = await client.chat.completions.create(model="routeyard", messages=history, user="conv-1")
        models = await client.models.list()
    assert answer.choices[0].message.content == "WeatherAgent: What's the weather in Paris?"
    assert first.headers["x-conversation-id"] == "conv-1"
    assert first.headers["x-routeyard-agents"] == "WeatherAgent"
    extension = answer.model_extra["routeyard"]  # type: ignore[index]
    assert extension["status"] == "complete" and extension["routes"] == ["WeatherAgent"]
    assert extension["event_id"] == first.headers["x-routeyard-event-id"]
    assert extension["decision"]["engine"] == "rules"
    # the follow-up names no agent: the conversation's context routed it, and only the new turn was sent
    assert follow_up.choices[0].message.content.startswith("WeatherAgent: And tomorrow?")
    second_task = recorder.tasks["WeatherAgent"][1]
    assert [m.content for m in second_task.messages if m.role == "user"] == [
        "What's the weather in Paris?",
        "And tomorrow?",
    ]
    assert all(t.tenant == "acme" for t in recorder.tasks["WeatherAgent"])
    assert [m.id for m in models.data] == ["routeyard", "WeatherAgent", "RestaurantAgent"]


async def test_streamed_multi_intent_turn(settings) -> None:
    _, running_agents = agents()
    async with running(settings, CATALOG, running_agents), gateway(settings, CATALOG) as url:
        client = AsyncOpenAI(base_url=f"{url}/v1", api_key=ACME, max_retries=0)
        stream = await client.chat.completions.create(
            model="routeyard",
            messages=[{"role": "user", "content": "weather in Rome, then a restaurant there"}],
            stream=True,
        )
        chunks = [c async for c in stream]
    first, last = chunks[0].model_extra["routeyard"], chunks[-1].model_extra["routeyard"]  # type: ignore[index]
    assert chunks[0].choices[0].delta.role == "assistant"
    assert first["decision"]["routes"] == ["WeatherAgent", "RestaurantAgent"]
    labelled = [(c.model_extra["routeyard"]["agent"], c.choices[0].delta.content) for c in chunks[1:-1]]  # type: ignore[index]
    text = "weather in Rome, then a restaurant there"
    assert labelled == [("WeatherAgent", f"WeatherAgent: {text}"), ("RestaurantAgent", f"\n\nRestaurantAgent: {text}")]
    assert chunks[-1].choices[0].finish_reason == "stop"
    assert last["status"] == "complete" and [r["agent"] for r in last["replies"]] == ["WeatherAgent", "RestaurantAgent"]
    assert last["event_id"] == first["event_id"]


async def test_a_model_naming_an_agent_restricts_the_turn_to_it(settings) -> None:
    recorder, running_agents = agents()
    async with running(settings, CATALOG, running_agents), gateway(settings, CATALOG) as url:
        client = AsyncOpenAI(base_url=f"{url}/v1", api_key=ACME, max_retries=0)
        answer = await client.chat.completions.create(
            model="RestaurantAgent", messages=[{"role": "user", "content": "weather and a restaurant"}]
        )
    assert answer.model_extra["routeyard"]["routes"] == ["RestaurantAgent"]  # type: ignore[index]
    assert "WeatherAgent" not in recorder.tasks


async def test_no_route_gets_the_configured_text_and_metrics_count_it(settings) -> None:
    _, running_agents = agents()
    async with running(settings, CATALOG, running_agents), gateway(settings, CATALOG) as url:
        client = AsyncOpenAI(base_url=f"{url}/v1", api_key=ACME, max_retries=0)
        answer = await client.chat.completions.create(model="routeyard", messages=[{"role": "user", "content": "hi"}])
        async with httpx.AsyncClient() as http:
            metrics = (await http.get(f"{url}/metrics")).text
            ready = await http.get(f"{url}/readyz")
    assert answer.choices[0].message.content == settings.gateway.no_route_text
    assert answer.model_extra["routeyard"]["status"] == "no_route"  # type: ignore[index]
    assert 'routeyard_gateway_requests_total{kind="chat",status="200"}' in metrics
    assert ready.status_code == 200 and ready.json()["ok"] is True
