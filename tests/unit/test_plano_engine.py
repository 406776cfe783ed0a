"""PlanoEngine over a scripted generator (a pure unit test: the real backends come with vLLM)."""

from __future__ import annotations

from collections.abc import Sequence

from routeyard.router.catalog import catalog_from_dict
from routeyard.router.engines.base import RoutingRequest
from routeyard.router.plan import decide_routes
from routeyard.router.plano.engine import Generation, PlanoEngine
from routeyard.router.plano.prompt import PromptBuilder
from routeyard.schemas import Message

CATALOG = catalog_from_dict(
    {
        "agents": [
            {"name": "WeatherAgent", "description": "Weather forecasts"},
            {"name": "CodeAgent", "description": "Writes code"},
            {"name": "Helpdesk", "description": "Anything else", "default": True},
        ]
    }
)


class Scripted:
    model = "scripted"

    def __init__(self, answers: list[Generation], hit_rate: float | None = None) -> None:
        self.answers = answers
        self.calls: list[tuple[list[str], list[list[str]]]] = []
        self.hit_rate = hit_rate

    def prefix_cache_hit_rate(self) -> float | None:
        return self.hit_rate

    async def generate(self, prompts: Sequence[str], agents: Sequence[Sequence[str]]) -> list[Generation]:
        self.calls.append((list(prompts), [list(a) for a in agents]))
        return self.answers[: len(prompts)]


def request(text: str, agents=CATALOG.agents) -> RoutingRequest:
    return RoutingRequest(event_id=text, conversation=[Message(role="user", content=text)], agents=agents)


async def test_one_generator_call_per_batch_with_plano_prompts() -> None:
    generator = Scripted([Generation(text='{"route": ["WeatherAgent"]}'), Generation(text='{"route": []}')])
    engine = PlanoEngine(generator)
    results = await engine.decide([request("weather?"), request("thanks")])
    assert len(generator.calls) == 1
    prompts, names = generator.calls[0]
    assert prompts[0] == PromptBuilder().build(CATALOG.agents, [Message(role="user", content="weather?")])
    assert names == [["WeatherAgent", "CodeAgent", "Helpdesk"]] * 2
    assert [r.routes for r in results] == [["WeatherAgent"], []]
    assert results[0].raw_output == '{"route": ["WeatherAgent"]}' and results[0].model == "scripted"


async def test_cut_off_malformed_and_failed_answers_are_failed_decisions() -> None:
    generator = Scripted(
        [
            Generation(text='{"route": ["Weath', finished=False),
            Generation(text="I think WeatherAgent"),
            Generation(text="", error="timed out after 5s"),
        ]
    )
    results = await PlanoEngine(generator).decide([request("a"), request("b"), request("c")])
    assert [r.failed for r in results] == [True, True, True]
    assert "max_tokens" in (results[0].error or "")
    assert results[2].error == "timed out after 5s"
    # the router then falls back to the default agent and records why
    routing = decide_routes(results[0], CATALOG.agents, CATALOG)
    assert routing.routes == ["Helpdesk"] and routing.default_used
    assert routing.fallback_reason and "max_tokens" in routing.fallback_reason


async def test_names_outside_the_catalog_are_dropped_not_routed() -> None:
    generator = Scripted([Generation(text='{"route": ["CodeAgent", "RootShellAgent", "CodeAgent"]}')])
    (result,) = await PlanoEngine(generator).decide([request("fix my code")])
    routing = decide_routes(result, CATALOG.agents, CATALOG)
    assert routing.routes == ["CodeAgent"] and routing.dropped == ["RootShellAgent"]


async def test_restricted_turn_gets_a_prompt_with_only_its_agents() -> None:
    generator = Scripted([Generation(text='{"route": []}')])
    only_code = CATALOG.restrict(["CodeAgent"])
    await PlanoEngine(generator, dialect="plano").decide([request("x", agents=only_code)])
    prompt = generator.calls[0][0][0]
    assert '"name": "CodeAgent"' in prompt and "WeatherAgent" not in prompt
    assert prompt.startswith("\n") and '"parameters"' in prompt  # Plano's gateway dialect


def test_prefix_cache_hit_rate_is_the_generators_through_the_fallback_chain() -> None:
    from routeyard.router.engines.fallback import FallbackEngine
    from routeyard.router.engines.rules import RulesEngine
    from routeyard.router.plano.openai import OpenAIGenerator, OpenAISettings

    plano = PlanoEngine(Scripted([], hit_rate=0.75))
    assert plano.prefix_cache_hit_rate() == 0.75
    assert FallbackEngine([plano, RulesEngine()]).prefix_cache_hit_rate() == 0.75
    assert FallbackEngine([RulesEngine(), plano]).prefix_cache_hit_rate() is None  # the first engine's
    assert PlanoEngine(OpenAIGenerator(OpenAISettings())).prefix_cache_hit_rate() is None
