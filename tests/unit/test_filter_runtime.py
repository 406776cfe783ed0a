"""The filter runtime's pieces without a bus: a filter's answer as reply fields, the HTTP filter
client against a mock transport (Plano's contract), and ``explain``'s filter lines."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from routeyard.consumers.agents.agent import ReplyError
from routeyard.consumers.errors import BadReply
from routeyard.consumers.filters.filter import FilterResult, reply_fields
from routeyard.consumers.filters.http import HttpFilter
from routeyard.consumers.tools.explain import Explanation, explain_markdown
from routeyard.router.filters import FilterSpec
from routeyard.schemas import AgentTask, ConversationResponse, Message, PriorReply

TASK = AgentTask(
    task_id="ev1:0:Guard",
    event_id="ev1",
    conversation_id="c1",
    agent="Guard",
    messages=[Message(role="user", content="hello")],
    reply_topic="ry.replies",
    deadline=datetime(2030, 1, 1, tzinfo=UTC),
    kind="input_filter",
)


def test_a_block_reason_is_one_bounded_line() -> None:
    content, fields = reply_fields("Guard", TASK, FilterResult.blocked("no\n\nshell  " + "x" * 900))
    assert content.startswith("no shell x") and len(content) == 500
    assert fields == {"verdict": "blocked", "notes": {}}


def test_an_input_filter_may_change_only_messages_with_real_roles() -> None:
    with pytest.raises(BadReply, match="changes messages"):
        reply_fields("Guard", TASK, FilterResult.changed(replies=[PriorReply(agent="A", status="ok", content="x")]))
    bad = [Message(role="wizard", content="x")]  # type: ignore[arg-type]
    with pytest.raises(BadReply, match="not valid"):
        reply_fields("Guard", TASK, FilterResult.changed(messages=bad))
    _, fields = reply_fields("Guard", TASK, FilterResult.changed(messages=[Message(role="user", content="y")]))
    assert fields["messages"] == [Message(role="user", content="y")] and fields["verdict"] == "changed"


def _run(respond: Any, *, limit: int = 10_000) -> FilterResult:
    spec = FilterSpec.model_validate({"name": "Guard", "kind": "http", "url": "http://filter.test/f"})

    async def go() -> FilterResult:
        async with httpx.AsyncClient(transport=httpx.MockTransport(respond)) as client:
            return await HttpFilter(spec, client, max_bytes=limit, token="t0k")(TASK)

    return asyncio.run(go())


def test_a_200_with_the_same_messages_passes_and_a_changed_one_changes() -> None:
    seen: list[httpx.Request] = []

    def same(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"messages": [{"role": "user", "content": "hello"}]})

    assert _run(same).verdict == "passed"
    assert seen[0].headers["x-request-id"] == "ev1:0:Guard" and seen[0].headers["authorization"] == "Bearer t0k"
    changed = _run(lambda r: httpx.Response(200, json=[{"role": "user", "content": "HELLO"}]))
    assert (changed.verdict, changed.messages) == ("changed", [Message(role="user", content="HELLO")])
    assert _run(lambda r: httpx.Response(200)).verdict == "passed"


@pytest.mark.parametrize(
    ("response", "reason"),
    [
        (httpx.Response(400, text="too rude\nmore"), "too rude"),
        (httpx.Response(403, json={"error": {"message": "pii found"}}), "pii found"),
        (httpx.Response(422, json={"detail": "bad input"}), "bad input"),
        (httpx.Response(451), "HTTP 451 from filter.test"),
    ],
)
def test_a_4xx_blocks_with_the_filters_reason(response: httpx.Response, reason: str) -> None:
    result = _run(lambda r: response)
    assert (result.verdict, result.reason) == ("blocked", reason)


@pytest.mark.parametrize(
    ("respond", "error"),
    [
        (lambda r: httpx.Response(503, text="busy"), "HTTP 503 from filter.test: busy"),
        (lambda r: httpx.Response(429), "HTTP 429 from filter.test"),
        (lambda r: httpx.Response(200, text="<html>"), "malformed answer from filter.test"),
        (lambda r: httpx.Response(200, json={"messages": [{"role": "x", "content": 1}]}), "malformed answer"),
        (lambda r: httpx.Response(200, text="[" * 20_000), "exceeds 10000 bytes"),
    ],
)
def test_5xx_429_and_garbage_are_retriable_errors(respond: Any, error: str) -> None:
    with pytest.raises(ReplyError, match=error.replace("(", r"\(")) as caught:
        _run(respond)
    assert caught.value.retriable


def test_an_unreachable_filter_is_a_retriable_error() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    with pytest.raises(ReplyError, match=r"cannot reach filter\.test: ConnectError"):
        _run(refuse)


def test_explain_shows_each_filters_verdict_and_a_blocks_reason_never_content() -> None:
    response = ConversationResponse(
        event_id="e1",
        conversation_id="c1",
        status="blocked",
        reason="Guard: shell commands are not allowed",
        filters={"Redactor": "changed", "Guard": "blocked"},
    )
    lines = explain_markdown(Explanation("e1", responses=[response])).splitlines()
    assert "## response: blocked" in lines
    assert "- filter Redactor: changed" in lines and "- filter Guard: blocked" in lines
    assert "reason: Guard: shell commands are not allowed" in lines


def test_the_gateway_shows_a_blocked_turns_reason() -> None:
    from routeyard.consumers.gateway.turns import answer_text
    from routeyard.consumers.settings import GatewaySettings

    response = ConversationResponse(event_id="e1", conversation_id="c1", status="blocked", reason="Guard: no")
    assert answer_text(response, GatewaySettings()) == "Blocked: Guard: no"
