"""OpenAIGenerator over httpx.MockTransport: the request body, answers, retries and bounds.

No server: a scripted handler plays the OpenAI-compatible endpoint, and sleeps are recorded
instead of waited, so backoff and Retry-After are checked exactly.
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import math
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

httpx = pytest.importorskip("httpx")

from routeyard.router.catalog import catalog_from_dict  # noqa: E402
from routeyard.router.engines.base import RoutingRequest  # noqa: E402
from routeyard.router.plano.engine import PlanoEngine  # noqa: E402
from routeyard.router.plano.openai import OpenAIGenerator, OpenAISettings  # noqa: E402
from routeyard.router.plano.prompt import PromptBuilder  # noqa: E402
from routeyard.router.plano.route_schema import route_json_schema  # noqa: E402
from routeyard.schemas import Message  # noqa: E402

CATALOG = catalog_from_dict(
    {
        "agents": [
            {"name": "WeatherAgent", "description": "Weather forecasts"},
            {"name": "CodeAgent", "description": "Writes code"},
            {"name": "Helpdesk", "description": "Anything else", "default": True},
        ]
    }
)
NAMES = list(CATALOG.names)

Handler = Callable[[httpx.Request], Awaitable[httpx.Response]]


def completion(content: str = '{"route": ["CodeAgent"]}', finish: str = "stop", logprobs: list[float] | None = None):
    choice: dict[str, object] = {"index": 0, "message": {"role": "assistant", "content": content}}
    choice["finish_reason"] = finish
    if logprobs is not None:
        choice["logprobs"] = {"content": [{"token": "x", "logprob": lp, "top_logprobs": []} for lp in logprobs]}
    return httpx.Response(200, json={"id": "c1", "object": "chat.completion", "choices": [choice]})


class Endpoint:
    """A scripted ``/v1/chat/completions``: answers from ``script`` in turn, then ``default``."""

    def __init__(self, *script: httpx.Response | Exception, default: httpx.Response | None = None) -> None:
        self.script = list(script)
        self.default = default or completion()
        self.requests: list[httpx.Request] = []

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        answer = self.script.pop(0) if self.script else self.default
        if isinstance(answer, Exception):
            raise answer
        return answer

    def bodies(self) -> list[dict[str, object]]:
        return [json.loads(r.content) for r in self.requests]


def settings(**overrides: object) -> OpenAISettings:
    values: dict[str, object] = {"base_url": "http://plano.test/v1", "model": "plano-4b", "constraint": "json_schema"}
    return OpenAISettings(**{**values, **overrides})


@pytest.fixture
def sleeps() -> list[float]:
    return []


async def started(handler: Handler, sleeps: list[float], **overrides: object) -> OpenAIGenerator:
    generator = OpenAIGenerator(settings(**overrides), transport=httpx.MockTransport(handler))

    async def record(seconds: float) -> None:
        sleeps.append(seconds)

    generator._sleep = record
    await generator.start()
    return generator


@pytest.fixture
async def make(sleeps: list[float]) -> AsyncIterator[Callable[..., Awaitable[OpenAIGenerator]]]:
    made: list[OpenAIGenerator] = []

    async def factory(handler: Handler, **overrides: object) -> OpenAIGenerator:
        made.append(await started(handler, sleeps, **overrides))
        return made[-1]

    yield factory
    for generator in made:
        await generator.stop()


def request(*texts: str) -> RoutingRequest:
    roles = ["user", "assistant"] * len(texts)
    conversation = [Message(role=role, content=text) for role, text in zip(roles, texts, strict=False)]
    return RoutingRequest(event_id=texts[-1], conversation=conversation, agents=CATALOG.agents)


async def test_one_request_per_prompt_holding_plano_prompt_as_single_user_message(make) -> None:
    endpoint = Endpoint()
    generator = await make(endpoint)
    requests = [request("fix my code"), request("hi", "hello, how can I help?", "rain in Oslo?")]
    results = await PlanoEngine(generator).decide(requests)
    assert [r.routes for r in results] == [["CodeAgent"], ["CodeAgent"]]
    assert [r.url.path for r in endpoint.requests] == ["/v1/chat/completions"] * 2
    prompts = {PromptBuilder().build(r.agents, r.conversation) for r in requests}
    sent = endpoint.bodies()
    assert {b["messages"][0]["content"] for b in sent} == prompts  # type: ignore[index]
    for body in sent:
        assert body["messages"] == [{"role": "user", "content": body["messages"][0]["content"]}]  # type: ignore[index]
        assert body["model"] == "plano-4b" and body["temperature"] == 0.01 and body["max_tokens"] == 48
        assert body["logprobs"] is True
        assert body["response_format"] == {
            "type": "json_schema",
            "json_schema": {"name": "route", "schema": route_json_schema(NAMES), "strict": True},
        }
        assert "structured_outputs" not in body and "chat_template_kwargs" not in body


async def test_plano_grammar_is_sent_as_structured_outputs_grammar(make) -> None:
    pytest.importorskip("xgrammar")
    from routeyard.router.plano.route_schema import plano_grammar

    endpoint = Endpoint()
    generator = await make(endpoint, constraint="plano_grammar", max_routes=2)
    await generator.generate(["route me"], [NAMES])
    (body,) = endpoint.bodies()
    assert body["structured_outputs"] == {"grammar": plano_grammar(tuple(NAMES), 2)}
    assert "response_format" not in body


def test_plano_grammar_without_xgrammar_fails_at_construction(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("importlib.util.find_spec", lambda name: None)
    with pytest.raises(ValueError, match="xgrammar"):
        OpenAIGenerator(settings(constraint="plano_grammar"))


async def test_no_constraint_no_logprobs_and_template_kwargs(make) -> None:
    endpoint = Endpoint()
    generator = await make(endpoint, constraint="none", logprobs=False, chat_template_kwargs={"enable_thinking": False})
    await generator.generate(["route me"], [NAMES])
    (body,) = endpoint.bodies()
    assert set(body) == {"model", "messages", "temperature", "max_tokens", "chat_template_kwargs"}
    assert body["chat_template_kwargs"] == {"enable_thinking": False}


async def test_api_key_goes_in_the_bearer_header_only_when_set(make) -> None:
    with_key, without = Endpoint(), Endpoint()
    await (await make(with_key, api_key="sk-test")).generate(["p"], [NAMES])
    await (await make(without)).generate(["p"], [NAMES])
    assert with_key.requests[0].headers["authorization"] == "Bearer sk-test"
    assert "authorization" not in without.requests[0].headers
    assert "sk-test" not in repr(settings(api_key="sk-test"))


async def test_confidence_is_exp_of_mean_logprob_and_length_is_cut_off(make) -> None:
    endpoint = Endpoint(
        completion(logprobs=[-0.1, -0.3, 0.0]),
        completion('{"route": ["Co', finish="length", logprobs=[-0.2]),
        completion(),
    )
    generator = await make(endpoint)
    good, cut, bare = await PlanoEngine(generator).decide([request("a"), request("b"), request("c")])
    assert good.routes == ["CodeAgent"] and good.confidence == pytest.approx(math.exp(-0.4 / 3))
    assert cut.error == "answer cut off at max_tokens" and cut.raw_output == '{"route": ["Co'
    assert not bare.failed and bare.confidence is None


async def test_5xx_is_retried_with_capped_exponential_backoff(make, sleeps: list[float]) -> None:
    endpoint = Endpoint(*[httpx.Response(503, text="busy") for _ in range(4)])
    generator = await make(endpoint, retries=4, backoff_s=0.2, backoff_max_s=0.5)
    (result,) = await generator.generate(["p"], [NAMES])
    assert result.error is None and result.text == '{"route": ["CodeAgent"]}'
    assert len(endpoint.requests) == 5
    ceilings = [0.2, 0.4, 0.5, 0.5]
    assert all(c / 2 <= s <= c for s, c in zip(sleeps, ceilings, strict=True)), sleeps


async def test_a_request_failing_after_retries_fails_alone(make, sleeps: list[float]) -> None:
    async def handler(request: httpx.Request) -> httpx.Response:
        if b"doomed" in request.content:
            return httpx.Response(500, json={"error": {"message": "engine overloaded", "code": 500}})
        return completion()

    generator = await make(handler, retries=2)
    results = await PlanoEngine(generator).decide([request("fine"), request("doomed"), request("fine too")])
    assert [r.failed for r in results] == [False, True, False]
    assert results[1].error == "HTTP 500: engine overloaded (3 attempts)"
    assert len(sleeps) == 2


async def test_429_honours_retry_after_seconds_and_dates(make, sleeps: list[float]) -> None:
    date = email.utils.formatdate(time.time() + 20, usegmt=True)
    endpoint = Endpoint(
        httpx.Response(429, headers={"Retry-After": "2"}), httpx.Response(429, headers={"Retry-After": date})
    )
    generator = await make(endpoint)
    (result,) = await generator.generate(["p"], [NAMES])
    assert result.error is None and len(endpoint.requests) == 3
    assert sleeps[0] == 2.0 and 18.0 <= sleeps[1] <= 20.0


async def test_retry_after_beyond_the_limit_fails_at_once(make, sleeps: list[float]) -> None:
    endpoint = Endpoint(httpx.Response(429, headers={"Retry-After": "120"}, json={"error": {"message": "slow down"}}))
    generator = await make(endpoint, retry_after_max_s=30)
    (result,) = await generator.generate(["p"], [NAMES])
    assert result.error == "HTTP 429: slow down; the server asked to retry after 120s"
    assert len(endpoint.requests) == 1 and sleeps == []


@pytest.mark.parametrize("status", [400, 401, 404, 422])
async def test_other_4xx_is_not_retried(make, sleeps: list[float], status: int) -> None:
    message = "This model's maximum context length is 4096 tokens."
    endpoint = Endpoint(httpx.Response(status, json={"error": {"message": message, "code": status}}))
    generator = await make(endpoint)
    (result,) = await generator.generate(["p"], [NAMES])
    assert result.error == f"HTTP {status}: {message}" and not result.finished
    assert len(endpoint.requests) == 1 and sleeps == []


async def test_a_malformed_answer_is_an_error_not_retried(make) -> None:
    endpoint = Endpoint(httpx.Response(200, text="<html>proxy</html>"), httpx.Response(200, json={"choices": []}))
    generator = await make(endpoint)
    results = await generator.generate(["a", "b"], [NAMES, NAMES])
    assert all((r.error or "").startswith("malformed response") for r in results), results
    assert len(endpoint.requests) == 2


async def test_connection_errors_are_retried_then_reported(make, sleeps: list[float]) -> None:
    endpoint = Endpoint(*[httpx.ConnectError("connection refused") for _ in range(4)])
    generator = await make(endpoint, retries=3)
    (result,) = await generator.generate(["p"], [NAMES])
    assert result.error == "ConnectError: connection refused (4 attempts)"
    assert len(endpoint.requests) == 4 and len(sleeps) == 3


async def test_a_slow_answer_times_out_into_an_error(make) -> None:
    calls = 0

    async def slow(request: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        await asyncio.sleep(5)
        return completion()

    generator = await make(slow, timeout_s=0.05, retries=1)
    started_at = time.perf_counter()
    (result,) = await generator.generate(["p"], [NAMES])
    assert result.error == "timed out after 0.05s (2 attempts)" and calls == 2
    assert time.perf_counter() - started_at < 2


async def test_requests_in_flight_never_exceed_max_concurrency(make) -> None:
    in_flight = peak = 0

    async def handler(request: httpx.Request) -> httpx.Response:
        nonlocal in_flight, peak
        in_flight += 1
        peak = max(peak, in_flight)
        await asyncio.sleep(0.01)
        in_flight -= 1
        return completion()

    generator = await make(handler, max_concurrency=3)
    results = await generator.generate([f"p{i}" for i in range(20)], [NAMES] * 20)
    assert len(results) == 20 and all(r.error is None for r in results)
    assert peak == 3


async def test_misuse_raises(make) -> None:
    idle = OpenAIGenerator(settings())
    with pytest.raises(RuntimeError, match="not started"):
        await idle.generate(["p"], [NAMES])
    generator = await make(Endpoint())
    with pytest.raises(ValueError, match="2 prompts but 1 agent lists"):
        await generator.generate(["a", "b"], [NAMES])
    await generator.stop()
    await generator.stop()  # idempotent
    with pytest.raises(RuntimeError):
        await generator.generate(["p"], [NAMES])


def test_settings_are_frozen_and_validated() -> None:
    with pytest.raises(ValueError):
        settings(max_concurrency=0)
    with pytest.raises(ValueError):
        settings(constraint="regex")
    with pytest.raises(ValueError):
        settings(timeuot_s=3)
    frozen = settings()
    with pytest.raises(ValueError):
        frozen.timeout_s = 1  # type: ignore[misc]
    assert (frozen.timeout_s, frozen.max_concurrency, frozen.retries, frozen.max_tokens) == (30.0, 16, 3, 48)


async def test_an_unreachable_server_gives_errors_after_retries(sleeps: list[float]) -> None:
    import socket

    with socket.socket() as sock:  # a loopback port with nothing listening
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    generator = OpenAIGenerator(settings(base_url=f"http://127.0.0.1:{port}/v1", retries=2, backoff_s=0.001))
    async with generator:
        results = await generator.generate(["a", "b"], [NAMES, NAMES])
    assert all((r.error or "").startswith("ConnectError") and r.error.endswith("(3 attempts)") for r in results)
