"""Every way a gateway request can go wrong gets an HTTP error in OpenAI's shape with a one-line
message, never a hang or a traceback; and async turns (``Prefer: respond-async``) with tenancy."""

from __future__ import annotations

import asyncio

import httpx
import openai
import pytest
from openai import AsyncOpenAI
from routeyard.consumers.kafka.bus import Bus

from tests.integration.gateway_stack import KEYS, gateway, with_gateway
from tests.integration.stack import Recorder, catalog, make_settings, running, spec

CATALOG = catalog(spec("WeatherAgent", "weather"), spec("SlowAgent", "slow"))
ACME, BETA = (k for k, t in KEYS.items())
TURN = {"model": "routeyard", "messages": [{"role": "user", "content": "weather in Oslo"}]}


def auth(key: str = ACME) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@pytest.fixture
def settings(bus: Bus, valkey, prefix: str):  # type: ignore[no-untyped-def]
    return with_gateway(make_settings(bus, valkey, prefix), max_in_flight_per_tenant=1, turn_timeout_s=2.0)


def stack(settings):  # type: ignore[no-untyped-def]
    recorder = Recorder()
    agents = [recorder.agent("WeatherAgent"), recorder.agent("SlowAgent", delay=4.0)]
    return recorder, running(settings, CATALOG, agents)


def error(response: httpx.Response) -> dict[str, str]:
    body: dict[str, dict[str, str]] = response.json()
    assert set(body["error"]) == {"message", "type", "code"} and "\n" not in body["error"]["message"]
    return body["error"]


async def test_bad_requests_get_clear_errors(settings) -> None:
    _, pipeline = stack(settings)
    async with pipeline, gateway(settings, CATALOG) as url, httpx.AsyncClient(base_url=url, timeout=10) as http:
        chat = "/v1/chat/completions"
        no_key = await http.post(chat, json=TURN)
        bad_key = await http.post(chat, json=TURN, headers=auth("not-a-key-at-all"))
        models_no_key = await http.get("/v1/models")
        unknown_model = await http.post(chat, json=TURN | {"model": "gpt-4o"}, headers=auth())
        empty = await http.post(chat, json=TURN | {"messages": []}, headers=auth())
        bad_role = await http.post(chat, json=TURN | {"messages": [{"role": "bot", "content": "x"}]}, headers=auth())
        no_text = await http.post(chat, json=TURN | {"messages": [{"role": "user", "content": " "}]}, headers=auth())
        not_json = await http.post(chat, content=b"{nope", headers=auth())
        deep = await http.post(chat, content=b'{"x":' + b"[" * 100_000 + b"]" * 100_000 + b"}", headers=auth())
        huge = await http.post(chat, content=b"x" * (settings.gateway.max_body_bytes + 1), headers=auth())
        bad_conversation = await http.post(chat, json=TURN, headers=auth() | {"X-Conversation-Id": "a" * 300})
    assert no_key.status_code == bad_key.status_code == models_no_key.status_code == 401
    assert error(no_key)["code"] == "invalid_api_key"
    assert unknown_model.status_code == 404 and error(unknown_model)["code"] == "model_not_found"
    assert "gpt-4o" in error(unknown_model)["message"]
    assert empty.status_code == 400 and error(empty)["message"] == "messages must not be empty"
    assert bad_role.status_code == 400 and "$.messages[0].role" in error(bad_role)["message"]
    assert no_text.status_code == 400 and "no user message" in error(no_text)["message"]
    assert not_json.status_code == deep.status_code == 400
    assert "recursion" in error(deep)["message"]
    assert huge.status_code == 413 and error(huge)["code"] == "request_too_large"
    assert bad_conversation.status_code == 400


async def test_too_many_in_flight_is_429_per_tenant(settings) -> None:
    _, pipeline = stack(settings)
    async with pipeline, gateway(settings, CATALOG) as url, httpx.AsyncClient(base_url=url, timeout=10) as http:
        slow = {"model": "SlowAgent", "messages": [{"role": "user", "content": "slow please"}]}
        first = asyncio.create_task(http.post("/v1/chat/completions", json=slow, headers=auth()))
        await asyncio.sleep(0.5)
        second = await http.post("/v1/chat/completions", json=TURN, headers=auth())
        other_tenant = await http.post("/v1/chat/completions", json=TURN, headers=auth(BETA))
        timed_out = await first
    assert second.status_code == 429 and second.headers["retry-after"] == "1"
    assert error(second)["code"] == "too_many_requests"
    assert other_tenant.status_code == 200  # the limit is per tenant
    assert timed_out.status_code == 504  # the slow agent takes 4 s; the gateway waits 2
    assert timed_out.headers["x-routeyard-event-id"] in error(timed_out)["message"]


async def test_openai_client_sees_the_errors_as_its_own_exceptions(settings) -> None:
    _, pipeline = stack(settings)
    async with pipeline, gateway(settings, CATALOG) as url:
        client = AsyncOpenAI(base_url=f"{url}/v1", api_key="wrong-key-123", max_retries=0)
        with pytest.raises(openai.AuthenticationError):
            await client.chat.completions.create(**TURN)  # type: ignore[call-overload]
        client = AsyncOpenAI(base_url=f"{url}/v1", api_key=ACME, max_retries=0)
        with pytest.raises(openai.NotFoundError, match=r"unknown model .nope."):
            await client.chat.completions.create(model="nope", messages=TURN["messages"])  # type: ignore[arg-type]


async def test_async_turns_are_answered_later_and_only_to_their_tenant(settings) -> None:
    recorder, pipeline = stack(settings)
    async with pipeline, gateway(settings, CATALOG) as url, httpx.AsyncClient(base_url=url, timeout=10) as http:
        slow = {"model": "routeyard", "messages": [{"role": "user", "content": "slow weather"}]}
        accepted = await http.post("/v1/chat/completions", json=slow, headers=auth() | {"Prefer": "respond-async"})
        location = accepted.headers["location"]
        pending = await http.get(location, headers=auth())
        foreign = await http.get(location, headers=auth(BETA))
        unknown = await http.get("/v1/turns/no-such-turn", headers=auth())
        for _ in range(200):
            done = await http.get(location, headers=auth())
            if done.status_code != 202:
                break
            await asyncio.sleep(0.1)
        again = await http.get(location, headers=auth())
    assert accepted.status_code == 202 and accepted.json()["status"] == "pending"
    assert location == f"/v1/turns/{accepted.json()['id']}"
    assert pending.status_code == 202
    assert foreign.status_code == unknown.status_code == 404
    assert done.status_code == 200, done.text
    body = done.json()
    assert body["choices"][0]["message"]["content"] == "SlowAgent: slow weather\n\nWeatherAgent: slow weather"
    assert body["routeyard"]["event_id"] == accepted.json()["id"]
    assert again.json()["choices"] == body["choices"]
    assert len(recorder.tasks["SlowAgent"]) == 1
