"""``routeyard explain EVENT_ID`` on traffic a real pipeline routed, on each bus (memory, the real
broker) with the real Valkey: the decision with its engine, catalog version, why (the rule that
decided, recorded by the engine), scores and latency, and how the turn ended; a poison event's dead
letter. The CLI (a routed turn, an unknown id) runs on the real broker only: it builds its own
aiokafka consumer from ``--bootstrap``."""

from __future__ import annotations

import asyncio

import pytest
from routeyard.consumers.cli.main import main
from routeyard.consumers.dev.embedded import EmbeddedBroker, EmbeddedValkey
from routeyard.consumers.kafka.bus import Bus
from routeyard.consumers.tools.explain import explain_markdown, find_event

from tests.integration.stack import Recorder, bus_for, catalog, make_settings, running, send, settled, spec

CATALOG = catalog(spec("WeatherAgent", "weather"), spec("MessagingAgent", "text"))


async def test_explain_a_routed_turn_and_a_dead_letter(bus: Bus, valkey: EmbeddedValkey, prefix: str) -> None:
    settings = make_settings(bus, valkey, prefix)
    agents = Recorder()
    async with running(settings, CATALOG, [agents.agent("WeatherAgent"), agents.agent("MessagingAgent")]) as client:
        event = client.event("c-explain", "What's the weather in Oslo? And text Bob", event_id="ev-explain-1")
        (response,) = await client.ask_many([event], timeout=30)
        assert response.status == "complete"
        # decodes, but has no user message: dead-lettered
        poison = b'{"event_id": "ev-poison-1", "conversation_id": "c-explain", "messages": []}'
        await send(settings, settings.topics.conversations, [poison], ["c-explain"])
        await settled(settings, 1.0)

    found = await find_event(bus_for(settings), settings.topics, "ev-explain-1")
    assert found.event is not None and found.event.conversation_id == "c-explain"
    (decision,) = found.decisions
    assert decision.routes == ["WeatherAgent", "MessagingAgent"] and decision.engine == "rules"
    assert [r.status for r in found.responses] == ["complete"]
    text = explain_markdown(found)
    assert "routes: WeatherAgent, MessagingAgent (parallel)" in text
    assert f"catalog {CATALOG.version}" in text and "## response: complete" in text
    # why, as the rules engine recorded it when it decided; no "raw output" (no model wrote one)
    assert "why: WeatherAgent: keyword 'weather'; MessagingAgent: keyword 'text'" in text.splitlines()
    assert decision.reason == "WeatherAgent: keyword 'weather'; MessagingAgent: keyword 'text'"
    assert "raw output" not in text

    narrowed = await find_event(bus_for(settings), settings.topics, "ev-explain-1", conversation_id="c-explain")
    assert narrowed.decisions == found.decisions

    poisoned = await find_event(bus_for(settings), settings.topics, "ev-poison-1")
    assert not poisoned.decisions and len(poisoned.dead_letters) == 1
    assert "no user message" in explain_markdown(poisoned)


@pytest.mark.integration  # the CLI: the real broker only (see the module docstring)
async def test_cli_explains_a_routed_turn_and_not_an_unknown_id(
    broker: EmbeddedBroker, valkey: EmbeddedValkey, prefix: str, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = make_settings(broker, valkey, prefix)
    async with running(settings, CATALOG, [Recorder().agent("WeatherAgent"), Recorder().agent("MessagingAgent")]) as c:
        event = c.event("c-explain", "What's the weather in Oslo? And text Bob", event_id="ev-explain-1")
        assert (await c.ask_many([event], timeout=30))[0].status == "complete"

    argv = ["--bootstrap", settings.kafka.bootstrap, "--prefix", settings.topic_prefix, "explain"]
    assert await asyncio.to_thread(main, [*argv, "ev-explain-1"]) == 0
    out = capsys.readouterr().out
    assert "routes: WeatherAgent, MessagingAgent" in out
    assert "why: WeatherAgent: keyword 'weather'; MessagingAgent: keyword 'text'" in out
    assert await asyncio.to_thread(main, [*argv, "no-such-event"]) == 1
    assert "not found" in capsys.readouterr().out
