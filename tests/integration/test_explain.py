"""``routeyard explain EVENT_ID`` on traffic a real pipeline routed: the decision with its engine,
catalog version, raw output, scores and latency, and how the turn ended; a poison event's dead
letter; an unknown id."""

from __future__ import annotations

import asyncio
from uuid import uuid4

import pytest
from routeyard.consumers.cli.main import main
from routeyard.consumers.dev.embedded import EmbeddedBroker, EmbeddedValkey
from routeyard.consumers.tools.explain import explain_markdown, find_event

from tests.integration.stack import Recorder, catalog, make_settings, running, spec

pytestmark = pytest.mark.integration

CATALOG = catalog(spec("WeatherAgent", "weather"), spec("MessagingAgent", "text"))


async def test_explain_a_routed_turn_and_a_dead_letter(
    broker: EmbeddedBroker, valkey: EmbeddedValkey, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = make_settings(broker, valkey, f"t{uuid4().hex[:8]}.")
    agents = Recorder()
    async with running(settings, CATALOG, [agents.agent("WeatherAgent"), agents.agent("MessagingAgent")]) as client:
        event = client.event("c-explain", "What's the weather in Oslo? And text Bob", event_id="ev-explain-1")
        (response,) = await client.ask_many([event], timeout=30)
        assert response.status == "complete"
        from aiokafka import AIOKafkaProducer

        producer = AIOKafkaProducer(bootstrap_servers=settings.kafka.bootstrap)
        await producer.start()
        try:  # decodes, but has no user message: dead-lettered
            poison = b'{"event_id": "ev-poison-1", "conversation_id": "c-explain", "messages": []}'
            await producer.send_and_wait(settings.topics.conversations, poison, key=b"c-explain")
        finally:
            await producer.stop()
        await asyncio.sleep(1.0)

    found = await find_event(settings.kafka, settings.topics, "ev-explain-1")
    assert found.event is not None and found.event.conversation_id == "c-explain"
    (decision,) = found.decisions
    assert decision.routes == ["WeatherAgent", "MessagingAgent"] and decision.engine == "rules"
    assert [r.status for r in found.responses] == ["complete"]
    text = explain_markdown(found)
    assert "routes: WeatherAgent, MessagingAgent (parallel)" in text
    assert f"catalog {CATALOG.version}" in text and "raw output:" in text and "## response: complete" in text

    narrowed = await find_event(settings.kafka, settings.topics, "ev-explain-1", conversation_id="c-explain")
    assert narrowed.decisions == found.decisions

    poisoned = await find_event(settings.kafka, settings.topics, "ev-poison-1")
    assert not poisoned.decisions and len(poisoned.dead_letters) == 1
    assert "no user message" in explain_markdown(poisoned)

    argv = ["--bootstrap", settings.kafka.bootstrap, "--prefix", settings.topic_prefix, "explain"]
    assert await asyncio.to_thread(main, [*argv, "ev-explain-1"]) == 0
    assert "routes: WeatherAgent, MessagingAgent" in capsys.readouterr().out
    assert await asyncio.to_thread(main, [*argv, "no-such-event"]) == 1
    assert "not found" in capsys.readouterr().out
