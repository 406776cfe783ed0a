"""Streamed replies through the gateway, on each bus (memory, the real broker) with the real
Valkey, read with the official ``openai`` client (stream=True): an async-generator agent's chunks
reach the client as SSE content chunks before the response, in order, labelled with the agent and
concatenated equal to the durable reply; a parallel turn with one streaming and one plain agent;
a turn that timed out (504, and a stream's error event) is kept and fetched later with its decision."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import httpx
from openai import AsyncOpenAI
from routeyard.consumers.agents.agent import agent
from routeyard.consumers.kafka.bus import Bus
from routeyard.schemas import AgentTask

from tests.integration.gateway_stack import KEYS, gateway, with_gateway
from tests.integration.stack import catalog, make_settings, running, spec

PIECES = ["Once ", "upon ", "a time, ", "a router ", "streamed. ☀"]
CATALOG = catalog(spec("StoryAgent", "story"), spec("WeatherAgent", "weather"), spec("SlowAgent", "slow"))
ACME = next(k for k, t in KEYS.items() if t == "acme")


@agent("StoryAgent", "tells a story, piece by piece")
async def story(task: AgentTask) -> AsyncIterator[str]:
    for piece in PIECES:
        await asyncio.sleep(0.15)
        yield piece


@agent("WeatherAgent", "answers at once")
async def weather(task: AgentTask) -> str:
    return "Sunny."


@agent("SlowAgent", "answers after the gateway gave up")
async def slow(task: AgentTask) -> str:
    await asyncio.sleep(2.5)
    return "Finally."


AGENTS = [story, weather, slow]


def settings_for(bus: Bus, valkey, prefix: str, **gateway: object):  # type: ignore[no-untyped-def]
    return with_gateway(make_settings(bus, valkey, prefix), **gateway)


async def timed_stream(url: str, text: str) -> list[tuple[float, dict]]:  # type: ignore[type-arg]
    """(seconds since the request, chunk as JSON) of each chunk of a streamed turn."""
    client = AsyncOpenAI(base_url=f"{url}/v1", api_key=ACME, max_retries=0)
    started = time.perf_counter()
    stream = await client.chat.completions.create(
        model="routeyard", messages=[{"role": "user", "content": text}], stream=True
    )
    return [(time.perf_counter() - started, c.model_dump()) async for c in stream]


async def test_an_async_generator_agent_streams_to_sse_as_it_writes(bus: Bus, valkey, prefix: str) -> None:
    settings = settings_for(bus, valkey, prefix)
    async with running(settings, CATALOG, AGENTS), gateway(settings, CATALOG) as url:
        timed = await timed_stream(url, "tell me a story")
    (_, first), *content, (t_last, last) = timed
    assert first["choices"][0]["delta"]["role"] == "assistant"
    assert first["routeyard"]["decision"]["routes"] == ["StoryAgent"]
    pieces = [(c["routeyard"]["agent"], c["choices"][0]["delta"]["content"]) for _, c in content]
    assert pieces == [("StoryAgent", p) for p in PIECES]  # as written, in order, nothing inserted
    # streamed: the first piece came well before the reply was done (the agent sleeps between pieces)
    assert content[0][0] < t_last - 0.3, [t for t, _ in timed]
    assert last["choices"][0]["finish_reason"] == "stop"
    (reply,) = last["routeyard"]["replies"]
    assert reply["content"] == "".join(PIECES) == "".join(p for _, p in pieces)


async def test_a_parallel_turn_streams_one_agent_and_sends_the_other_whole(bus: Bus, valkey, prefix: str) -> None:
    settings = settings_for(bus, valkey, prefix)
    async with running(settings, CATALOG, AGENTS), gateway(settings, CATALOG) as url:
        timed = await timed_stream(url, "a story and the weather")
    first, last = timed[0][1], timed[-1][1]
    assert first["routeyard"]["decision"]["mode"] == "parallel"
    content = [(c["routeyard"]["agent"], c["choices"][0]["delta"]["content"]) for _, c in timed[1:-1]]
    assert [p for a, p in content if a == "StoryAgent"] == PIECES
    # the plain agent's whole reply, once, when the response came (after the story's pieces)
    assert [p for a, p in content if a == "WeatherAgent"] == ["\n\nSunny."]
    assert content[-1][0] == "WeatherAgent"
    replies = {r["agent"]: r["content"] for r in last["routeyard"]["replies"]}
    assert replies == {"StoryAgent": "".join(PIECES), "WeatherAgent": "Sunny."}


async def test_a_turn_past_its_timeout_is_kept_and_fetched_later_with_its_decision(
    bus: Bus, valkey, prefix: str
) -> None:
    settings = settings_for(bus, valkey, prefix, turn_timeout_s=0.5)
    auth = {"Authorization": f"Bearer {ACME}"}
    turn = {"model": "routeyard", "messages": [{"role": "user", "content": "slow please"}]}
    async with (
        running(settings, CATALOG, AGENTS),
        gateway(settings, CATALOG) as url,
        httpx.AsyncClient(base_url=url, timeout=10, headers=auth) as http,
    ):
        late = await http.post("/v1/chat/completions", json=turn)
        streamed = await http.post("/v1/chat/completions", json=turn | {"stream": True})
        fetched = {}
        for name, answer in (("sync", late), ("stream", streamed)):
            location = f"/v1/turns/{answer.headers['x-routeyard-event-id']}"
            pending = await http.get(location)
            for _ in range(100):
                fetched[name] = await http.get(location)
                if fetched[name].status_code != 202:
                    break
                await asyncio.sleep(0.1)
            other = await http.get(location, headers={"Authorization": f"Bearer {next(iter(set(KEYS) - {ACME}))}"})
            assert (pending.status_code, other.status_code) == (202, 404)
    assert late.status_code == 504 and "/v1/turns/" in late.json()["error"]["message"]
    assert "turn_timeout" in streamed.text and streamed.text.endswith("data: [DONE]\n\n")
    for answer in fetched.values():
        assert answer.status_code == 200, answer.text
        body = answer.json()
        assert body["choices"][0]["message"]["content"] == "Finally."
        assert body["routeyard"]["decision"]["engine"] == "rules"
        assert body["routeyard"]["routes"] == ["SlowAgent"]


async def test_an_async_turn_is_fetched_with_its_decision(bus: Bus, valkey, prefix: str) -> None:
    settings = settings_for(bus, valkey, prefix)
    auth = {"Authorization": f"Bearer {ACME}", "Prefer": "respond-async"}
    turn = {"model": "routeyard", "messages": [{"role": "user", "content": "the weather"}]}
    async with (
        running(settings, CATALOG, AGENTS),
        gateway(settings, CATALOG) as url,
        httpx.AsyncClient(base_url=url, timeout=10, headers=auth) as http,
    ):
        accepted = await http.post("/v1/chat/completions", json=turn)
        for _ in range(100):
            done = await http.get(accepted.headers["location"])
            if done.status_code != 202:
                break
            await asyncio.sleep(0.05)
    assert done.status_code == 200, done.text
    assert done.json()["routeyard"]["decision"]["engine"] == "rules"
    assert done.json()["routeyard"]["mode"] is not None
