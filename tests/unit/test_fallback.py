"""The engine fallback chain and abstention (scripted engines: a pure unit test)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest
from routeyard.router.catalog import catalog_from_dict
from routeyard.router.engines.base import EngineBase, EngineDead, EngineResult, RoutingRequest
from routeyard.router.engines.fallback import FallbackEngine
from routeyard.router.engines.rules import RulesEngine
from routeyard.router.plan import decide_routes
from routeyard.schemas import Message

CATALOG = catalog_from_dict(
    {
        "agents": [
            {"name": "WeatherAgent", "description": "Weather", "rules": {"keywords": ["weather"]}},
            {"name": "Helpdesk", "description": "Anything else", "default": True},
        ]
    }
)


def turn(text: str) -> RoutingRequest:
    return RoutingRequest(event_id=text, conversation=[Message(role="user", content=text)], agents=CATALOG.agents)


class Scripted(EngineBase):
    def __init__(self, name: str, answer=None, *, raises: BaseException | None = None, delay: float = 0) -> None:
        self.name, self.answer, self.raises, self.delay = name, answer, raises, delay
        self.asked: list[list[str]] = []
        self.entered = self.exited = False

    async def __aenter__(self):
        self.entered = True
        return self

    async def __aexit__(self, *exc) -> None:
        self.exited = True

    async def decide(self, requests: Sequence[RoutingRequest]) -> list[EngineResult]:
        self.asked.append([r.event_id for r in requests])
        await asyncio.sleep(self.delay)
        if self.raises is not None:
            raise self.raises
        return [self.answer(r) for r in requests]


def fails_on(word: str):
    def answer(request: RoutingRequest) -> EngineResult:
        text = request.conversation[-1].content
        if word in text:
            return EngineResult(error="answer cut off at max_tokens", raw_output='{"route": ["Wea')
        return EngineResult(routes=["WeatherAgent"], confidence=0.9, model="m")

    return answer


async def test_later_engine_decides_only_what_earlier_ones_failed() -> None:
    first = Scripted("vllm", fails_on("tricky"))
    chain = FallbackEngine([first, RulesEngine()])
    async with chain:
        results = await chain.decide([turn("weather?"), turn("tricky weather"), turn("hello")])
    assert first.entered and first.exited
    assert [(r.engine, r.routes) for r in results] == [
        ("vllm", ["WeatherAgent"]),
        ("rules", ["WeatherAgent"]),
        ("vllm", ["WeatherAgent"]),
    ]
    assert results[1].fallback_reason == "vllm: answer cut off at max_tokens"
    routing = decide_routes(results[1], CATALOG.agents, CATALOG)
    assert routing.routes == ["WeatherAgent"] and "earlier engines failed: vllm" in (routing.fallback_reason or "")


async def test_an_engine_that_raises_or_stalls_hands_the_whole_batch_on() -> None:
    broken = Scripted("openai", raises=ConnectionError("server unreachable"))
    slow = Scripted("vllm", fails_on("never"), delay=5)
    results = await FallbackEngine([broken, slow, RulesEngine()], timeout_s=0.2).decide([turn("weather?")])
    assert results[0].engine == "rules"
    assert results[0].fallback_reason == "openai: ConnectionError: server unreachable; vllm: no answer within 0.2s"


async def test_when_every_engine_fails_the_default_agent_takes_the_turn_with_the_whole_story() -> None:
    chain = FallbackEngine([Scripted("vllm", fails_on("")), Scripted("other", raises=ValueError("bad"))])
    (result,) = await chain.decide([turn("x")])
    assert result.failed and result.error == "vllm: answer cut off at max_tokens; other: ValueError: bad"
    routing = decide_routes(result, CATALOG.agents, CATALOG)
    assert routing.routes == ["Helpdesk"] and routing.default_used
    assert routing.fallback_reason == f"engine failed: {result.error}"


async def test_a_dead_engine_is_not_absorbed() -> None:
    chain = FallbackEngine([Scripted("vllm", raises=EngineDead("engine core died")), RulesEngine()])
    with pytest.raises(EngineDead):
        await chain.decide([turn("weather?")])


def test_low_confidence_abstains_to_the_default_agent() -> None:
    unsure = EngineResult(routes=["WeatherAgent"], confidence=0.31)
    routing = decide_routes(unsure, CATALOG.agents, CATALOG, min_confidence=0.5)
    assert routing.abstained and routing.routes == ["Helpdesk"] and routing.selected == ["WeatherAgent"]
    assert routing.fallback_reason == "confidence 0.310 below 0.5: abstained"
    sure = decide_routes(unsure, CATALOG.agents, CATALOG, min_confidence=0.3)
    assert not sure.abstained and sure.routes == ["WeatherAgent"]
    no_score = decide_routes(EngineResult(routes=["WeatherAgent"]), CATALOG.agents, CATALOG, min_confidence=0.99)
    assert no_score.routes == ["WeatherAgent"]  # engines without confidence (rules) never abstain
