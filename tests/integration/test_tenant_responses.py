"""Tenants and responses on each bus (memory, the real broker) with the real Valkey (issue 13,
defect 3): a client takes only
the response of its own tenant and conversation, whatever else carries its event id; with
``router.tenant_response_topics`` each tenant's responses go to its own topic and nowhere else."""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
import uuid
from collections.abc import Awaitable, Callable

import pytest
from routeyard.consumers.client import RouteyardClient
from routeyard.consumers.dev.embedded import EmbeddedValkey
from routeyard.consumers.kafka.admin import make_admin
from routeyard.consumers.kafka.bus import Bus, Outgoing
from routeyard.consumers.settings import Settings
from routeyard.schemas import AgentReply, ConversationEvent, ConversationResponse, Message, encode, response_decoder

from tests.integration.stack import (
    Recorder,
    bus_for,
    catalog,
    make_settings,
    memory,
    publisher,
    read_all,
    running,
    spec,
)
from tests.integration.test_forged_replies import Gated

CATALOG = catalog(spec("WeatherAgent", "weather"))


async def eventually(check: Callable[[], bool | Awaitable[bool]], what: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if await result if inspect.isawaitable(result) else result:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


async def created(settings: Settings, names: set[str]) -> set[str]:
    """Those of ``names`` that exist as topics (looked up without auto-creating any)."""
    bus = memory(settings)
    if bus is not None:
        return {name for name in names if bus.partitions(name)}
    admin = make_admin(settings.kafka)
    await admin.start()
    try:
        return names & {t["topic"] for t in await admin.describe_topics()}  # all topics: never auto-creates
    finally:
        await admin.close()


def turn(conversation_id: str, tenant: str) -> ConversationEvent:
    return ConversationEvent(
        event_id=uuid.uuid4().hex,
        conversation_id=conversation_id,
        tenant=tenant,
        messages=[Message(role="user", content=f"weather for {tenant}?")],
    )


def spoof(event: ConversationEvent, **fields: str) -> ConversationResponse:
    """A response with the victim's event id, as tenant B (or anyone) can publish by hand."""
    reply = AgentReply(
        task_id=f"{event.event_id}:0:WeatherAgent",
        event_id=event.event_id,
        conversation_id=fields.get("conversation_id", event.conversation_id),
        agent="WeatherAgent",
        content="SPOOFED: your account is locked",
    )
    base = {"event_id": event.event_id, "conversation_id": event.conversation_id, "tenant": event.tenant}
    return ConversationResponse(status="complete", routes=["WeatherAgent"], replies=[reply], **{**base, **fields})  # type: ignore[arg-type]


async def test_a_client_ignores_a_response_of_another_tenant_or_conversation_with_its_event_id(
    bus: Bus, valkey: EmbeddedValkey, prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    settings = make_settings(bus, valkey, prefix)
    weather = Gated("WeatherAgent")
    caplog.set_level(logging.WARNING, logger="routeyard.consumers.client")
    async with running(settings, CATALOG, [weather.agent()]):
        mine = turn("acme-conv", "acme")
        async with RouteyardClient(bus=bus_for(settings), prefix=settings.topic_prefix, tenant="acme") as client:
            asking = asyncio.ensure_future(client.ask_many([mine], timeout=30))
            await eventually(lambda: bool(weather.tasks), "the turn to reach WeatherAgent")
            spoofs = [spoof(mine, tenant="globex"), spoof(mine, conversation_id="other-conv")]
            async with publisher(settings) as producer:
                await producer.publish([Outgoing(settings.topics.responses, encode(s), key="x") for s in spoofs])
            ignored = lambda: sum("ignored a response" in r.getMessage() for r in caplog.records) == 2  # noqa: E731
            await eventually(lambda: ignored() or asking.done(), "the spoofed responses to be read")
            weather.gate.set()
            (response,) = await asking
    assert (response.tenant, response.conversation_id) == ("acme", "acme-conv")
    assert [r.content for r in response.replies] == ["WeatherAgent genuine answer"]
    warnings = [r.getMessage() for r in caplog.records if "ignored a response" in r.getMessage()]
    assert len(warnings) == 2 and all(mine.event_id in w and "SPOOFED" not in w for w in warnings)


async def test_per_tenant_response_topics_carry_only_their_tenants_responses(
    bus: Bus, valkey: EmbeddedValkey, prefix: str
) -> None:
    settings = make_settings(bus, valkey, prefix, tenants=["acme", "globex"], tenant_response_topics=True)
    acme_topic, globex_topic = f"{prefix}responses.acme", f"{prefix}responses.globex"
    events = [turn(f"conv-{i}", tenant) for i in range(3) for tenant in ("acme", "globex")]
    async with running(settings, CATALOG, [Recorder().agent("WeatherAgent")]) as client:
        wanted = {acme_topic, globex_topic}
        assert await created(settings, wanted) == wanted  # created with routeyard's topics
        await client.publish(events)

        async def all_answered() -> bool:
            found = await read_all(settings, acme_topic, settle=0.2) + await read_all(
                settings, globex_topic, settle=0.2
            )
            return len(found) >= len(events)

        await eventually(all_answered, "a response to every event on the tenants' topics")
        acme = [response_decoder.decode(v) for v in await read_all(settings, acme_topic)]
        globex = [response_decoder.decode(v) for v in await read_all(settings, globex_topic)]
        shared = [response_decoder.decode(v) for v in await read_all(settings, settings.topics.responses)]
        kwargs = {"bus": bus_for(settings), "prefix": settings.topic_prefix, "tenant_topic": True}
        async with (
            RouteyardClient(tenant="acme", **kwargs) as acme_client,  # type: ignore[arg-type]
            RouteyardClient(tenant="globex", **kwargs) as globex_client,  # type: ignore[arg-type]
        ):
            asked = await asyncio.gather(
                acme_client.ask("acme-live", "weather?", timeout=30),
                globex_client.ask("globex-live", "weather?", timeout=30),
            )
    assert sorted(r.event_id for r in acme) == sorted(e.event_id for e in events if e.tenant == "acme")
    assert {r.tenant for r in acme} == {"acme"} and {r.tenant for r in globex} == {"globex"}
    assert len(globex) == 3 and shared == []
    assert [(r.tenant, r.conversation_id, r.status) for r in asked] == [
        ("acme", "acme-live", "complete"),
        ("globex", "globex-live", "complete"),
    ]
    assert (acme_client.responses_topic, globex_client.responses_topic) == (acme_topic, globex_topic)


async def test_a_rejected_turn_is_answered_on_its_tenants_topic(bus: Bus, valkey: EmbeddedValkey, prefix: str) -> None:
    """With per-tenant topics, a refused turn's ``rejected`` answer reaches its sender's client on
    the tenant's own topic (the shared responses topic is not readable by tenants)."""
    from routeyard import TurnRejected

    settings = make_settings(bus, valkey, prefix, tenants=["acme"], tenant_response_topics=True)
    async with (
        running(settings, CATALOG, [Recorder().agent("WeatherAgent")]),
        RouteyardClient(
            bus=bus_for(settings), prefix=settings.topic_prefix, tenant="acme", tenant_topic=True
        ) as client,
    ):
        with pytest.raises(TurnRejected, match="unknown agents"):
            await client.ask("acme-bad", "weather?", agents=["Ghost"], timeout=20)
    shared = [response_decoder.decode(v) for v in await read_all(settings, settings.topics.responses)]
    assert shared == []
