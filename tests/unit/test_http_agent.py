"""Agents by URL, without a bus: the catalog's url fields, the request an agent gets, how its
answers and failures are read (httpx's MockTransport as the agent), the non-retriable error
reply in the correlation, and the worker command's start-up checks."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from routeyard.consumers.agents.agent import ReplyError
from routeyard.consumers.agents.http import MAX_LINE_BYTES, HttpAgent, bearer_tokens, request_body
from routeyard.consumers.cli.main import main
from routeyard.router.catalog import AgentSpec, CatalogError, catalog_from_dict
from routeyard.router.correlation import on_reply
from routeyard.schemas import AgentReply, AgentTask, Message, PriorReply, encode, reply_decoder

from tests.unit.test_correlation_retries import NOW, W, _reply, _start, _task_id

URL = "https://agents.example/v1/chat/completions"
DEEP = '{"choices": [{"message": {"content": "x"}}], "extra": ' + "[" * 50_000 + "]" * 50_000 + "}"
"""An answer whose unread field nests too deep to decode (a RecursionError, not a crash)."""


def _spec(**extra: Any) -> AgentSpec:
    return AgentSpec.model_validate({"name": "Weather", "description": "weather", "url": URL, **extra})


def _task(**extra: Any) -> AgentTask:
    return AgentTask(
        task_id="e1:0:Weather",
        event_id="e1",
        conversation_id="c1",
        agent="Weather",
        messages=[
            Message(role="system", content="be brief"),
            Message(role="user", content="hi"),
            Message(role="assistant", content="hello", name="Chat"),
            Message(role="developer", content="rules"),
            Message(role="tool", content="tool output"),
            Message(role="user", content="weather?"),
        ],
        reply_topic="ry.replies",
        deadline=datetime.now(UTC) + timedelta(seconds=30),
        token="secret-token",
        **extra,
    )


# -- the catalog ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("ftp://agents.example/x", "must be an absolute http:// or https:// URL"),
        ("/v1/chat/completions", "must be an absolute http:// or https:// URL"),
        ("https://user:pw@agents.example/x", "must not hold credentials"),
        ("https://agents.example:99999/x", "is not a valid URL"),
        ("https://agents.example/a b", "one line of at most 2000 characters"),
        ("https://agents.example/" + "a" * 2000, "one line of at most 2000 characters"),
    ],
)
def test_a_url_that_is_not_plain_http_fails_at_load(url: str, problem: str) -> None:
    with pytest.raises(CatalogError, match=problem):
        catalog_from_dict({"agents": [{"name": "A", "description": "a", "url": url}]})


def test_api_key_env_is_a_variable_name_and_needs_a_url() -> None:
    with pytest.raises(CatalogError, match="not an environment variable name"):
        catalog_from_dict({"agents": [{"name": "A", "description": "a", "url": URL, "api_key_env": "sk-123"}]})
    with pytest.raises(CatalogError, match="api_key_env is for HTTP agents"):
        catalog_from_dict({"agents": [{"name": "A", "description": "a", "api_key_env": "KEY"}]})


def test_url_fields_count_in_the_version_only_when_set() -> None:
    plain = {"name": "A", "description": "a", "timeout": 30.0, "default": False, "examples": [], "topic": None}
    plain["rules"] = {"keywords": [], "patterns": []}
    old = hashlib.sha256(json.dumps({"agents": [plain], "default": None}, sort_keys=True).encode()).hexdigest()[:12]
    assert catalog_from_dict({"agents": [{"name": "A", "description": "a"}]}).version == old
    with_url = catalog_from_dict({"agents": [{"name": "A", "description": "a", "url": URL}]})
    assert with_url.version != old


# -- the request ------------------------------------------------------------------------------


def test_the_request_carries_the_conversation_as_openai_messages_and_never_the_token() -> None:
    task = _task(
        prior_replies=[
            PriorReply(agent="First", status="ok", content="sunny"),
            PriorReply(agent="Bad", status="error", content="x"),
        ],
        attempt=2,
        metadata={"source": "web"},
    )
    body = request_body(_spec(stream=False), task)
    assert body["model"] == "Weather" and body["stream"] is False
    assert body["messages"] == [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "hello", "name": "Chat"},
        {"role": "system", "content": "rules"},
        {"role": "user", "content": "weather?"},
        {"role": "assistant", "content": "sunny", "name": "First"},
    ]
    assert body["metadata"] == {
        "source": "web",
        "routeyard_event_id": "e1",
        "routeyard_conversation_id": "c1",
        "routeyard_task_id": "e1:0:Weather",
        "routeyard_attempt": "2",
    }
    assert "secret-token" not in json.dumps(body)


# -- answers and failures ---------------------------------------------------------------------


def _agent(respond: Callable[[httpx.Request], httpx.Response], limit: int = 1024, **extra: Any) -> HttpAgent:
    client = httpx.AsyncClient(transport=httpx.MockTransport(respond))
    return HttpAgent(_spec(**extra), client, max_reply_bytes=limit, token=None)


def _sse(body: bytes) -> Callable[[httpx.Request], httpx.Response]:
    return lambda _: httpx.Response(200, content=body, headers={"content-type": "text/event-stream"})


def _chunk(text: str | None, finish: str | None = None, sep: bytes = b"\n") -> bytes:
    choice = {"delta": {"content": text} if text is not None else {}, "finish_reason": finish}
    return b"data: " + json.dumps({"choices": [choice]}).encode() + sep + sep


async def _failure(agent: HttpAgent) -> ReplyError:
    with pytest.raises(ReplyError) as caught:
        await agent(_task())
    return caught.value


async def test_streamed_deltas_are_concatenated_across_crlf_comments_and_split_reads() -> None:
    body = b": hi\r\n\r\n" + _chunk("Sun", sep=b"\r\n") + b"event: x\n" + _chunk("ny") + _chunk(None, "stop")
    body += b"data: [DONE]\n\n"
    agent = _agent(_sse(body))
    assert [p async for p in agent.deltas(_task())] == ["Sun", "ny"]
    assert await agent(_task()) == "Sunny"


async def test_a_stream_that_stops_before_done_is_an_error_to_retry() -> None:
    error = await _failure(_agent(_sse(_chunk("Sun"))))
    assert (str(error), error.retriable) == ("event stream from agents.example ended before [DONE]", True)


async def test_an_oversized_line_or_reply_is_refused_without_reading_on() -> None:
    long_line = _agent(_sse(b"data: " + b"x" * (MAX_LINE_BYTES + 1)))
    assert str(await _failure(long_line)) == f"an event-stream line from agents.example exceeds {MAX_LINE_BYTES} bytes"
    big = _agent(_sse(_chunk("x" * 600) + _chunk("y" * 600) + b"data: [DONE]\n\n"), limit=1024)
    assert str(await _failure(big)) == "reply from agents.example exceeds agent.max_reply_bytes (1024)"
    whole = _agent(lambda _: httpx.Response(200, json={"choices": [{"message": {"content": "x" * 5000}}]}))
    assert str(await _failure(whole)) == "reply from agents.example exceeds agent.max_reply_bytes (1024)"


@pytest.mark.parametrize(
    ("status", "retriable"), [(400, False), (401, False), (404, False), (408, True), (429, True), (503, True)]
)
async def test_4xx_is_final_but_408_429_and_5xx_are_retried(status: int, retriable: bool) -> None:
    body = "\n\n  " + "why " * 100 + "\nsecond line"
    error = await _failure(_agent(lambda _: httpx.Response(status, text=body)))
    assert str(error) == f"HTTP {status} from agents.example: " + ("why " * 50)[:200] + "..."
    assert error.retriable is retriable


@pytest.mark.parametrize(
    ("response", "message"),
    [
        (httpx.Response(200, text="<html>"), "malformed reply from agents.example: not an OpenAI chat completion"),
        (httpx.Response(200, json={"choices": []}), "malformed reply from agents.example: no choices[0].message"),
        (httpx.Response(200, json={"error": {"message": "quota"}}), "error from agents.example: quota"),
        (httpx.Response(200, text=DEEP), "malformed reply from agents.example: not an OpenAI chat completion"),
        (httpx.Response(302, headers={"location": "http://elsewhere"}), "HTTP 302 from agents.example"),
    ],
)
async def test_malformed_answers_are_errors_to_retry(response: httpx.Response, message: str) -> None:
    error = await _failure(_agent(lambda _: response, limit=256 * 1024))
    assert (str(error), error.retriable) == (message, True)


async def test_connection_errors_and_timeouts_are_errors_to_retry() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    def slow(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("slow", request=request)

    assert str(await _failure(_agent(refuse))) == "cannot reach agents.example: ConnectError"
    assert str(await _failure(_agent(slow, timeout="2s"))) == "no answer from agents.example within 2s"


async def test_the_bearer_token_comes_from_the_environment() -> None:
    seen: list[tuple[str | None, str | None]] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append((request.headers.get("authorization"), request.headers.get("accept-encoding")))
        return httpx.Response(200, json={"choices": [{"message": {"content": "ok"}}]})

    spec = _spec(api_key_env="WEATHER_KEY")
    tokens = bearer_tokens([spec], {"WEATHER_KEY": "t-1"})
    agent = HttpAgent(
        spec, httpx.AsyncClient(transport=httpx.MockTransport(answer)), max_reply_bytes=1024, token=tokens["Weather"]
    )
    assert await agent(_task()) == "ok" and seen == [("Bearer t-1", "identity")]
    with pytest.raises(CatalogError, match=r"not set in the environment for: Weather \(WEATHER_KEY\)"):
        bearer_tokens([spec], {})


# -- the wire and the correlation -------------------------------------------------------------


def test_a_non_retriable_error_reply_is_final_despite_retries_left() -> None:
    first = _start(W)  # retries=2
    final = _reply(_task_id(0, "Weather"), status="error")
    transition, _ = on_reply(first.state, AgentReply(**{**_fields(final), "retriable": False}), NOW + 1)
    assert [(o.kind, o.retry) for o in transition.outcomes] == [("error", False)]
    assert transition.state.slots[0].status == "error"
    assert transition.response is not None and transition.response.status == "failed"


def test_retriable_defaults_to_true_for_replies_written_before_it() -> None:
    old = json.loads(encode(_reply("t", status="error")))
    del old["retriable"]
    assert reply_decoder.decode(json.dumps(old)).retriable is True


def _fields(reply: AgentReply) -> dict[str, Any]:
    return {f: getattr(reply, f) for f in reply.__struct_fields__}


# -- the command ------------------------------------------------------------------------------


def test_the_worker_refuses_a_catalog_without_url_agents(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "agents.yaml"
    path.write_text("agents:\n  - {name: A, description: a}\n")
    assert main(["worker", "http-agents", "--catalog", str(path)]) == 2
    assert capsys.readouterr().err == f"routeyard: {path}: no agent has a url: nothing for http-agents to run\n"


def test_the_worker_names_every_unset_token_variable(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("NO_SUCH_KEY_16", raising=False)
    path = tmp_path / "agents.yaml"
    path.write_text(f"agents:\n  - {{name: A, description: a, url: '{URL}', api_key_env: NO_SUCH_KEY_16}}\n")
    assert main(["worker", "http-agents", "--catalog", str(path)]) == 2
    assert capsys.readouterr().err == "routeyard: api_key_env not set in the environment for: A (NO_SUCH_KEY_16)\n"
