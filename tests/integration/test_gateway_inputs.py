"""Hostile and odd inputs at the gateway, as an attacker or a sloppy client sends them: each gets a 4xx
with a one-line OpenAI-style message (or a routed answer where the input is fair), never a 500, a
traceback or a hang. Complements test_gateway_errors.py (the issue's list: no key, unknown model,
empty messages, oversized body, too many requests), adding an unknown tenant, deep JSON, a 10k-message
array, bytes that are not UTF-8, a chunked body over the limit, and X-Conversation-Id headers that are
huge or carry control characters (sent on a raw socket, as no polite client would).
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import pytest
from routeyard.consumers.kafka.bus import Bus

from tests.integration.gateway_stack import KEYS, gateway, with_gateway
from tests.integration.stack import Recorder, catalog, make_settings, running, spec

CATALOG = catalog(spec("WeatherAgent", "weather"))
ACME, BETA = (k for k, t in KEYS.items())
TURN = {"model": "routeyard", "messages": [{"role": "user", "content": "weather in Oslo"}]}
CHAT = "/v1/chat/completions"
LATIN1 = '{"model": "routeyard", "messages": [{"role": "user", "content": "caf\xe9"}]}'.encode("latin-1")


def auth(key: str = ACME) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def one_line(response: httpx.Response, status: int) -> str:
    """The response is ``status`` with an OpenAI error body whose message is one line; the message."""
    assert response.status_code == status, (response.status_code, response.text[:500])
    body: dict[str, Any] = response.json()
    message: str = body["error"]["message"]
    assert message and "\n" not in message and "Traceback" not in message, message
    assert len(message) < 300, message
    return message


@pytest.fixture
def settings(bus: Bus, valkey, prefix: str):  # type: ignore[no-untyped-def]
    # the router admits tenant acme only: beta has a key but is no tenant of this deployment
    routed = make_settings(bus, valkey, prefix, tenants="acme")
    return with_gateway(routed, max_body_bytes=1024 * 1024, turn_timeout_s=10.0)


async def test_a_key_of_an_unknown_tenant_is_refused_before_publishing(settings, bus: Bus) -> None:
    recorder = Recorder()
    pipeline = running(settings, CATALOG, [recorder.agent("WeatherAgent")])
    async with pipeline, gateway(settings, CATALOG) as url, httpx.AsyncClient(base_url=url, timeout=30) as http:
        known = await http.post(CHAT, json=TURN, headers=auth())
        unknown = await asyncio.wait_for(http.post(CHAT, json=TURN, headers=auth(BETA)), 20)
        later = await http.post(CHAT, json=TURN | {"stream": True}, headers=auth(BETA) | {"Prefer": "respond-async"})
    assert known.status_code == 200, known.text
    # beta has a key but the router admits acme only: 403 at the door, one line, no trip through the router
    assert "'beta'" in one_line(unknown, 403) and "router.tenants" in one_line(unknown, 403)
    one_line(later, 403)
    assert len(recorder.tasks.get("WeatherAgent", [])) == 1
    assert await _published(bus, settings.topics.conversations) == 1  # only acme's turn reached the bus


async def _published(bus: Bus, topic: str) -> int:
    """Records on ``topic`` (every partition, from its start)."""
    consumer = bus.consumer(None)
    await consumer.start()
    try:
        partitions = await consumer.partitions_for(topic)
        consumer.assign(partitions)
        await consumer.seek_to_end(partitions)
        return sum([await consumer.position(tp) for tp in partitions])
    finally:
        await consumer.stop()


async def test_hostile_bodies_get_4xx_with_one_line(settings) -> None:
    many = {"model": "routeyard", "messages": [{"role": "user", "content": "hi"}] * 10_000}
    recorder = Recorder()
    pipeline = running(settings, CATALOG, [recorder.agent("WeatherAgent")])
    async with pipeline, gateway(settings, CATALOG) as url, httpx.AsyncClient(base_url=url, timeout=15) as http:
        deep = await http.post(CHAT, content=b'{"messages":' + b"[" * 50_000 + b"]" * 50_000 + b"}", headers=auth())
        deep_object = await http.post(CHAT, content=b'{"a":' * 20_000 + b"1" + b"}" * 20_000, headers=auth())
        too_many = await http.post(CHAT, content=json.dumps(many).encode(), headers=auth())
        latin1 = await http.post(CHAT, content=LATIN1, headers=auth())
        not_object = await http.post(CHAT, content=b"[]", headers=auth())
        null = await http.post(CHAT, content=b"null", headers=auth())
        chunked = await http.post(CHAT, content=_chunks(2 * 1024 * 1024), headers=auth())
        streamed_unknown = await http.post(CHAT, json=TURN | {"model": "nope", "stream": True}, headers=auth())
        basic = await http.post(CHAT, json=TURN, headers={"Authorization": f"Basic {ACME}"})
    one_line(deep, 400)  # refused as the wrong type at the first level, before any recursion
    one_line(deep_object, 400)
    # 10k messages fit the body limit (1 MiB here) but not the router's event limit: 400 naming it,
    # before anything is published
    assert "262144 bytes" in one_line(too_many, 400) and "router.max_event_bytes" in one_line(too_many, 400)
    assert "UTF-8" in one_line(latin1, 400) or "utf-8" in one_line(latin1, 400).lower()
    one_line(not_object, 400)
    one_line(null, 400)
    assert one_line(chunked, 413)
    assert streamed_unknown.headers["content-type"].startswith("application/json")
    assert "nope" in one_line(streamed_unknown, 404)
    one_line(basic, 401)


async def _chunks(total: int) -> Any:
    """A body of ``total`` bytes sent chunked: no Content-Length for the gateway to refuse up front."""
    piece = b" " * 65536
    for _ in range(total // len(piece)):
        yield piece


async def test_hostile_conversation_ids_get_4xx_with_one_line(settings) -> None:
    recorder = Recorder()
    async with running(settings, CATALOG, [recorder.agent("WeatherAgent")]), gateway(settings, CATALOG) as url:
        host, port = url.removeprefix("http://").split(":")
        huge = await _raw(host, int(port), b"X-Conversation-Id: " + b"c" * 100_000)
        control = await _raw(host, int(port), b"X-Conversation-Id: conv\x01\x1b[2Jid")
        tab = await _raw(host, int(port), b"X-Conversation-Id: conv\tid")
        high = await _raw(host, int(port), b"X-Conversation-Id: conv\xff\xfeid")
        spaces = await _raw(host, int(port), b"X-Conversation-Id:    ")
        async with httpx.AsyncClient(base_url=url, timeout=15) as http:
            long_id = await http.post(CHAT, json=TURN, headers=auth() | {"X-Conversation-Id": "a" * 300})
    assert "conversation id" in _error(huge), huge
    # a C0 control byte: the HTTP parser refuses the request before the app, in one plain line
    assert control == (400, "Invalid HTTP request received."), control
    # a tab and bytes over 0x7f pass the parser (HTAB, obs-text): the app refuses them itself
    assert "conversation id" in _error(tab) and "conversation id" in _error(high), (tab, high)
    assert spaces[0] in (200, 400), spaces  # blank: minted (200) or refused clearly (400), never 500
    assert "conversation id" in one_line(long_id, 400)


def _error(answer: tuple[int, str]) -> str:
    status, body = answer
    assert status == 400, answer
    message: str = json.loads(body)["error"]["message"]
    assert "\n" not in message, message
    return message


async def _raw(host: str, port: int, header: bytes) -> tuple[int, str]:
    """POST a turn with ``header`` as written, on a raw socket; (status, body) within 15 s."""
    body = json.dumps(TURN).encode()
    head = b"POST /v1/chat/completions HTTP/1.1\r\nHost: gw\r\nContent-Type: application/json\r\n"
    head += f"Authorization: Bearer {ACME}\r\nContent-Length: {len(body)}\r\nConnection: close\r\n".encode()
    reader, writer = await asyncio.open_connection(host, port)
    try:
        writer.write(head + header + b"\r\n\r\n" + body)
        await writer.drain()
        answer = await asyncio.wait_for(reader.read(), 15)
    finally:
        writer.close()
    status_line, _, rest = answer.partition(b"\r\n")
    return int(status_line.split()[1]), rest.partition(b"\r\n\r\n")[2].decode(errors="replace")


async def test_a_body_the_broker_could_not_take_is_a_400_not_a_503(bus: Bus, valkey, prefix: str) -> None:
    # the router would take 4 MB events and the gateway 2 MB bodies, but the broker takes 1 MiB records:
    # the gateway checks the encoded event, so a 1.5 MB turn is refused as a bad request, not as an outage
    routed = make_settings(bus, valkey, prefix, tenants="acme", max_event_bytes=4_000_000)
    settings = with_gateway(routed, max_body_bytes=2_000_000, turn_timeout_s=10.0)
    big = {"model": "routeyard", "messages": [{"role": "user", "content": "x" * 1_500_000}]}
    async with gateway(settings, CATALOG) as url, httpx.AsyncClient(base_url=url, timeout=15) as http:
        answer = await http.post(CHAT, json=big, headers=auth())
    assert "1048576 bytes" in one_line(answer, 400)
    assert await _published(bus, settings.topics.conversations) == 0
