"""Agent variants on each bus (in memory, and the real broker) with the real Valkey: sticky
assignment across a weight change, automatic rollback of a failing canary, and shadows that
never reach the caller."""

from __future__ import annotations

import asyncio
import math
from dataclasses import dataclass, field
from typing import Any

import pytest
from prometheus_client import REGISTRY
from routeyard.consumers.agents.agent import Agent, agent
from routeyard.consumers.cli.main import main
from routeyard.consumers.dev.embedded import EmbeddedBroker, EmbeddedValkey
from routeyard.consumers.kafka.bus import Bus
from routeyard.consumers.settings import Settings
from routeyard.consumers.tools.variants import read_topics, report, report_text
from routeyard.schemas import AgentTask, RoutingDecision, decision_decoder, reply_decoder, response_decoder

from tests.integration.stack import bus_for, catalog, make_settings, memory, read_all, running, spec


@pytest.fixture
def settings(bus: Bus, valkey: EmbeddedValkey, prefix: str) -> Settings:
    base = make_settings(bus, valkey, prefix)
    return base.model_copy(
        update={
            "variants": base.variants.model_copy(update={"min_count": 3, "threshold": 0.2, "window_s": 60}),
            "circuit": base.circuit.model_copy(update={"threshold": 50}),
        }
    )


@dataclass
class Variants:
    """Runtimes of WeatherAgent's variants, each on its own topic, remembering their tasks."""

    settings: Settings
    tasks: list[tuple[str, AgentTask]] = field(default_factory=list)

    def runtime(self, variant: str, *, fail: bool = False) -> Agent:
        async def handle(task: AgentTask) -> str:
            self.tasks.append((variant, task))
            if fail:
                raise RuntimeError(f"{variant} is broken")
            return f"{variant}: {task.messages[-1].content}"

        topic = f"{self.settings.topics.agent('WeatherAgent')}.{variant}"
        return agent(f"WeatherAgent.{variant}", "WeatherAgent's variant", topic=topic)(handle)


def weather(*variants: dict[str, Any]) -> Any:
    return catalog({**spec("WeatherAgent", "weather", timeout="5s"), "variants": list(variants)})


async def decisions(settings: Settings) -> dict[str, RoutingDecision]:
    return {d.event_id: d for d in map(decision_decoder.decode, await read_all(settings, settings.topics.decisions))}


async def test_a_conversation_keeps_its_variant_when_the_weights_change(settings: Settings) -> None:
    runs = Variants(settings)
    agents = [runs.runtime("stable"), runs.runtime("v2")]
    first_weights = weather({"name": "stable", "weight": 50}, {"name": "v2", "weight": 50})
    async with running(settings, first_weights, agents) as client:
        events = [client.event(f"s{i}", "weather today?") for i in range(40)]
        first = await client.ask_many(events, timeout=60)
    later_weights = weather({"name": "stable", "weight": 90}, {"name": "v2", "weight": 10})
    async with running(settings, later_weights, agents) as client:
        second = await client.ask_many([client.event(f"s{i}", "and tomorrow?") for i in range(40)], timeout=60)
    before = {r.conversation_id: r.variants["WeatherAgent"] for r in first}
    after = {r.conversation_id: r.variants["WeatherAgent"] for r in second}
    assert after == before
    assert set(before.values()) == {"stable", "v2"}  # both got conversations
    for r in [*first, *second]:  # the variant that answered is the one named
        assert r.status == "complete" and r.replies[0].content.startswith(r.variants["WeatherAgent"] + ":")
    decided = await decisions(settings)
    assert all(decided[r.event_id].variants == r.variants for r in [*first, *second])
    assert {(v, t.variant) for v, t in runs.tasks} == {("stable", "stable"), ("v2", "v2")}
    assert all(t.agent == "WeatherAgent" for _, t in runs.tasks)  # the engines' one agent


async def test_a_90_10_canary_splits_within_three_sigma_end_to_end(settings: Settings) -> None:
    """1,000 conversations on the memory bus, 300 on the real broker (its round trips are slower)."""
    runs = Variants(settings)
    n = 1000 if memory(settings) is not None else 300
    canary = weather({"name": "stable", "weight": 90}, {"name": "v2", "weight": 10})
    async with running(settings, canary, [runs.runtime("stable"), runs.runtime("v2")]) as client:
        answered = await client.ask_many([client.event(f"c{i}", "weather?") for i in range(n)], timeout=120)
    to_canary = sum(r.variants == {"WeatherAgent": "v2"} for r in answered)
    sigma = math.sqrt(n * 0.1 * 0.9)
    print(f"canary split end to end over {n} conversations: v2 {to_canary} (expected {n / 10:.0f} +- {3 * sigma:.0f})")
    assert abs(to_canary - n / 10) <= 3 * sigma
    assert all(r.status == "complete" for r in answered)
    assert sum(v == "v2" for v, _ in runs.tasks) == to_canary


async def test_a_pin_to_a_removed_variant_is_replaced_and_recorded(settings: Settings) -> None:
    runs = Variants(settings)
    agents = [runs.runtime("stable"), runs.runtime("v2"), runs.runtime("v4")]
    async with running(settings, weather({"name": "stable", "weight": 50}, {"name": "v2", "weight": 50}), agents) as c:
        first = await c.ask_many([c.event(f"p{i}", "weather?") for i in range(16)], timeout=60)
    async with running(settings, weather({"name": "stable", "weight": 50}, {"name": "v4", "weight": 50}), agents) as c:
        second = await c.ask_many([c.event(f"p{i}", "again?") for i in range(16)], timeout=60)
    was = {r.conversation_id: r.variants["WeatherAgent"] for r in first}
    decided = await decisions(settings)
    for r in second:
        note = decided[r.event_id].variant_notes.get("WeatherAgent")
        if was[r.conversation_id] == "v2":
            assert r.variants["WeatherAgent"] in ("stable", "v4") and r.status == "complete"
            assert note == f"pinned variant v2 is no longer served; moved to {r.variants['WeatherAgent']}"
        else:
            assert r.variants["WeatherAgent"] == "stable" and note is None
    assert "v2" in was.values()


async def test_a_failing_canary_is_rolled_back_and_the_stable_variant_takes_its_conversations(
    settings: Settings,
) -> None:
    runs = Variants(settings)
    agents = [runs.runtime("stable"), runs.runtime("v2", fail=True)]
    variants = weather({"name": "stable", "weight": 50}, {"name": "v2", "weight": 50})
    responses = []
    async with running(settings, variants, agents) as client:
        for i in range(24):
            responses.append(await client.ask(f"r{i}", "weather?", timeout=30))
        failed = [r for r in responses if r.variants["WeatherAgent"] == "v2"]
        again = [await client.ask(r.conversation_id, "weather again?", timeout=30) for r in failed]
    assert 3 <= len(failed) < 12, [r.variants for r in responses]  # rolled back after min_count failures
    assert all(r.status == "failed" for r in failed)
    decided = await decisions(settings)
    first_failure = min(r.responded_at for r in failed)
    moved = [decided[r.event_id] for r in responses if decided[r.event_id].variant_notes]
    assert moved and all(d.variants == {"WeatherAgent": "stable"} for d in moved)
    assert all(d.variant_notes["WeatherAgent"].startswith("rolled back: v2 error rate") for d in moved)
    last_v2 = max(decided[r.event_id].decided_at for r in failed)
    assert all(
        decided[r.event_id].variants["WeatherAgent"] == "stable"
        for r in responses
        if decided[r.event_id].decided_at > last_v2
    )
    for r in again:  # pinned to the canary: moved to the stable variant, and answered
        assert r.status == "complete" and r.variants == {"WeatherAgent": "stable"}
        assert decided[r.event_id].variant_notes["WeatherAgent"].endswith("; moved to stable")
    took = (min(d.decided_at for d in moved) - first_failure).total_seconds()
    print(f"rollback: {len(failed)} canary conversations failed; first failure -> first diverted: {took:.3f} s")


async def test_a_shadow_variant_reply_is_recorded_and_never_reaches_the_caller(settings: Settings) -> None:
    runs = Variants(settings)
    agents = [runs.runtime("stable"), runs.runtime("v3")]
    variants = weather({"name": "stable", "weight": 100}, {"name": "v3", "shadow": True})
    async with running(settings, variants, agents) as client:
        answered = [await client.ask(f"h{i}", f"weather in town {i}?", timeout=30) for i in range(3)]
    for r in answered:
        assert [x.content for x in r.replies] == [f"stable: weather in town {r.conversation_id[1:]}?"]
    shadows = [reply_decoder.decode(v) for v in await read_all(settings, settings.topics.shadows)]
    assert sorted(s.content for s in shadows) == [f"v3: weather in town {i}?" for i in range(3)]
    published = [response_decoder.decode(v) for v in await read_all(settings, settings.topics.responses)]
    assert not any("v3:" in x.content for r in published for x in r.replies)
    decided = await decisions(settings)
    assert all(decided[r.event_id].shadows == {"WeatherAgent": ["v3"]} for r in answered)
    assert sorted(t.shadow for v, t in runs.tasks if v == "v3") == [True] * 3
    text = report_text("WeatherAgent", report("WeatherAgent", *await read_topics(bus_for(settings), settings.topics)))
    print(text)
    assert "  stable: 3 turns, ok 100.0%, error 0.0%, timeout 0.0%, p50 " in text
    assert "  v3 (shadow): 3 turns, ok 100.0%" in text and "agrees 3/3 (100%)" in text  # Jaccard 4/6


@pytest.mark.integration
async def test_cli_reports_a_failing_canary(
    broker: EmbeddedBroker, valkey: EmbeddedValkey, prefix: str, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = make_settings(broker, valkey, prefix)
    runs = Variants(settings)
    canary = weather({"name": "stable", "weight": 50}, {"name": "v2", "weight": 50})
    async with running(settings, canary, [runs.runtime("stable"), runs.runtime("v2", fail=True)]) as client:
        answered = await client.ask_many([client.event(f"q{i}", "weather?") for i in range(12)], timeout=60)
    on_canary = sum(r.variants == {"WeatherAgent": "v2"} for r in answered)
    argv = ["--bootstrap", settings.kafka.bootstrap, "--prefix", settings.topic_prefix, "variants", "report"]
    assert await asyncio.to_thread(main, [*argv, "WeatherAgent"]) == 0
    out = capsys.readouterr().out
    print(out)
    assert f"  stable: {12 - on_canary} turns, ok 100.0%, error 0.0%, timeout 0.0%, p50 " in out
    assert f"  v2: {on_canary} turns, ok 0.0%, error 100.0%, timeout 0.0%, p50 " in out
    assert await asyncio.to_thread(main, [*argv, "NoSuchAgent"]) == 1
    assert "no turns of NoSuchAgent with variants found" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exited:
        main([*argv, "WeatherAgent", "--since", "yesterday"])
    assert exited.value.code == 2 and "not an ISO 8601 time: 'yesterday'" in capsys.readouterr().err


async def test_a_canary_whose_breaker_opens_is_rolled_back_and_says_so(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    """The window needs 100 outcomes here: the canary's own breaker (threshold 2) rolls it back,
    and the agent's breaker stays closed (a canary's failures are its own)."""
    settings = settings.model_copy(
        update={
            "variants": settings.variants.model_copy(update={"min_count": 100}),
            "circuit": settings.circuit.model_copy(update={"threshold": 2}),
        }
    )
    runs = Variants(settings)
    variants = weather({"name": "stable", "weight": 50}, {"name": "v2", "weight": 50})
    before = assignments("v2")
    async with running(settings, variants, [runs.runtime("stable"), runs.runtime("v2", fail=True)]) as client:
        answered = [await client.ask(f"b{i}", "weather?", timeout=30) for i in range(16)]
    on_canary = [r for r in answered if r.variants == {"WeatherAgent": "v2"}]
    # the breaker counts once the response is out: one more turn may reach the canary meanwhile
    assert 2 <= len(on_canary) <= 3 and all(r.status == "failed" for r in on_canary)
    assert all(r.status == "complete" for r in answered if r not in on_canary)  # the agent stayed up
    decided = await decisions(settings)
    notes = [decided[r.event_id].variant_notes.get("WeatherAgent") for r in answered]
    assert "rolled back: v2 circuit open; sent to stable" in notes
    assert assignments("v2") - before == len(on_canary)
    assert REGISTRY.get_sample_value("routeyard_variant_rolled_back", {"agent": "WeatherAgent", "variant": "v2"}) == 1
    assert any(
        r.levelname == "WARNING" and "variant v2 of agent WeatherAgent rolled back: v2 circuit open" in r.getMessage()
        for r in caplog.records
    )


def assignments(variant: str) -> float:
    labels = {"agent": "WeatherAgent", "variant": variant}
    return REGISTRY.get_sample_value("routeyard_variant_assignments_total", labels) or 0.0
