"""Tenants and responses on the real broker and Valkey (issue 13, defect 3): a client takes only
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
from routeyard.consumers.dev.embedded import EmbeddedBroker, EmbeddedValkey
from routeyard.consumers.kafka.admin import make_admin
from routeyard.consumers.kafka.bus import Outgoing, make_producer, publish
from routeyard.consumers.settings import Settings
from routeyard.schemas import AgentReply, ConversationEvent, ConversationResponse, Message, encode, response_decoder

from tests.integration.stack import Recorder, catalog, make_settings, read_all, running, spec
from tests.integration.test_forged_replies import Gated

pytestmark = pytest.mark.integration

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


async def topic_names(settings: Settings) -> set[str]:
    admin = make_admin(settings.kafka)
    await admin.start()
    try:
        return {t["topic"] for t in await admin.describe_topics()}  # all topics: never auto-creates
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
    broker: EmbeddedBroker, valkey: EmbeddedValkey, prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    settings = make_settings(broker, valkey, prefix)
    weather = Gated("WeatherAgent")
    caplog.set_level(logging.WARNING, logger="routeyard.consumers.client")
    async with running(settings, CATALOG, [weather.agent()]):
        mine = turn("acme-conv", "acme")
        async with RouteyardClient(settings.kafka, prefix=settings.topic_prefix, tenant="acme") as client:
            asking = asyncio.ensure_future(client.ask_many([mine], timeout=30))
            await eventually(lambda: bool(weather.tasks), "the turn to reach WeatherAgent")
            spoofs = [spoof(mine, tenant="globex"), spoof(mine, conversation_id="other-conv")]
            producer = make_producer(settings.kafka)
            await producer.start()
            try:
                await publish(producer, [Outgoing(settings.topics.responses, encode(s), key="x") for s in spoofs])
            finally:
                await producer.stop()
            ignored = lambda: sum("ignored a response" in r.getMessage() for r in caplog.records) == 2  # noqa: E731
            await eventually(lambda: ignored() or asking.done(), "the spoofed responses to be read")
            weather.gate.set()
            (response,) = await asking
    assert (response.tenant, response.conversation_id) == ("acme", "acme-conv")
    assert [r.content for r in response.replies] == ["WeatherAgent genuine answer"]
    warnings = [r.getMessage() for r in caplog.records if "ignored a response" in r.getMessage()]
    assert len(warnings) == 2 and all(mine.event_id in w and "SPOOFED" not in w for w in warnings)


async def test_per_tenant_response_topics_carry_only_their_tenants_responses(
    broker: EmbeddedBroker, valkey: EmbeddedValkey, prefix: str
) -> None:
    settings = make_settings(broker, valkey, prefix, tenants=["acme", "globex"], tenant_response_topics=True)
    acme_topic, globex_topic = f"{prefix}responses.acme", f"{prefix}responses.globex"
    events = [turn(f"conv-{i}", tenant) for i in range(3) for tenant in ("acme", "globex")]
    async with running(settings, CATALOG, [Recorder().agent("WeatherAgent")]) as client:
        assert {acme_topic, globex_topic} <= await topic_names(settings)  # created with routeyard's topics
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
        kwargs = {"prefix": settings.topic_prefix, "tenant_topic": True}
        async with (
            RouteyardClient(settings.kafka, tenant="acme", **kwargs) as acme_client,  # type: ignore[arg-type]
            RouteyardClient(settings.kafka, tenant="globex", **kwargs) as globex_client,  # type: ignore[arg-type]
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


async def test_a_rejected_turn_is_answered_on_its_tenants_topic(
    broker: EmbeddedBroker, valkey: EmbeddedValkey, prefix: str
) -> None:
    """With per-tenant topics, a refused turn's ``rejected`` answer reaches its sender's client on
    the tenant's own topic (the shared responses topic is not readable by tenants)."""
    from routeyard import TurnRejected

    settings = make_settings(broker, valkey, prefix, tenants=["acme"], tenant_response_topics=True)
    async with (
        running(settings, CATALOG, [Recorder().agent("WeatherAgent")]),
        RouteyardClient(settings.kafka, prefix=settings.topic_prefix, tenant="acme", tenant_topic=True) as client,
    ):
        with pytest.raises(TurnRejected, match="unknown agents"):
            await client.ask("acme-bad", "weather?", agents=["Ghost"], timeout=20)
    shared = [response_decoder.decode(v) for v in await read_all(settings, settings.topics.responses)]
    assert shared == []
