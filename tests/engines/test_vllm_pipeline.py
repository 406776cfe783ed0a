"""The router worker with the in-process vLLM engine, on the real broker and Valkey.

The tiny model's weights are random, so what it routes to is noise; what is checked is what a
user relies on: every turn is answered, every decision comes from the engine (or its recorded
fallback) and names catalog agents only, and agents get tasks only for what was decided.
"""

from __future__ import annotations

import pytest

pytest.importorskip("vllm")

from routeyard.router.plano.parse import parse_routes
from routeyard.router.plano.vllm import VllmSettings
from routeyard.schemas import decision_decoder

from tests.integration.stack import Recorder, catalog, make_settings, read_all, running, spec

pytestmark = [pytest.mark.vllm, pytest.mark.integration]

NAMES = ["WeatherAgent", "RestaurantAgent", "MessagingAgent", "CalendarAgent"]
CATALOG = catalog(*[spec(name, name.removesuffix("Agent").lower()) for name in NAMES])
TURNS = [
    "What's the weather in Paris?",
    "Book a table for two tonight and text Anna the address",
    "Put the dinner in my calendar",
    "Thanks, that's all",
]


async def test_router_worker_routes_with_vllm(broker, valkey, prefix, tiny_qwen3) -> None:
    base = make_settings(broker, valkey, prefix, engine="vllm", fallback=["rules"], engine_timeout_s=120)
    vllm = VllmSettings(model=str(tiny_qwen3), dtype="bfloat16", max_model_len=4096, enforce_eager=True)
    settings = base.model_copy(update={"vllm": vllm})
    agents = Recorder()
    async with running(settings, CATALOG, [agents.agent(name) for name in NAMES]) as client:
        events = [client.event(f"conv-{i % 2}", text) for i, text in enumerate(TURNS)]
        responses = await client.ask_many(events, timeout=240)
    assert {r.event_id for r in responses} == {e.event_id for e in events}
    assert {r.status for r in responses} <= {"complete", "no_route"}
    decisions = {
        d.event_id: d for d in map(decision_decoder.decode, await read_all(settings, settings.topics.decisions))
    }
    assert set(decisions) == {e.event_id for e in events}
    for decision in decisions.values():
        assert set(decision.routes) <= set(NAMES) and decision.dropped == []
        if decision.engine == "vllm":
            assert decision.model == str(tiny_qwen3)
            assert decision.raw_output is not None and parse_routes(decision.raw_output) == decision.selected
            assert decision.confidence is not None and 0 < decision.confidence <= 1
        else:  # the model's answer was cut off: rules decided, and the decision says why
            assert decision.engine == "rules" and "vllm:" in (decision.fallback_reason or "")
    assert any(d.engine == "vllm" for d in decisions.values())
    tasks = sorted((t.event_id, t.agent) for name in agents.tasks for t in agents.tasks[name])
    assert tasks == sorted((d.event_id, a) for d in decisions.values() for a in d.routes)
