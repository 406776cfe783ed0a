"""Filters by URL: a catalog filter of kind ``http`` speaks Plano's filter contract.

Each input filter task becomes ``POST <url>`` with the chat-completions body of the turn::

    {"model": "<filter name>", "messages": [...],
     "metadata": {"routeyard_task_id": ..., "routeyard_event_id": ..., "routeyard_attempt": ...}}

(also ``X-Request-Id: <task id>``: the stable id to deduplicate on). The answer:

- 200 with ``{"messages": [...]}`` (or the bare list): the messages go on to the agents; the
  verdict is ``changed`` if they differ from those sent, else ``passed``. A 200 with no body (or
  no messages) passes the turn unchanged.
- 4xx (but 408 and 429): the turn is blocked; the reason is the body's ``error.message``,
  ``message``, ``reason`` or ``detail``, or its first line.
- 5xx, 3xx, 408, 429, connection errors, timeouts and malformed or oversized bodies: an error
  reply, retried per the filter's ``retries``; then the turn fails with the reason.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import urlsplit

import httpx
import msgspec
from routeyard.consumers.agents.agent import ReplyError
from routeyard.consumers.agents.http import CONNECT_TIMEOUT_S, FIRST_LINE_CHARS, bearer_tokens
from routeyard.consumers.filters.filter import Filter, FilterResult
from routeyard.router.filters import FilterSpec
from routeyard.schemas import AgentTask, Message

__all__ = ["HttpFilter", "filter_tokens", "http_filters"]

_RETRIABLE_4XX = (408, 429)


class _Answer(msgspec.Struct):
    messages: list[Message] | None = None
    error: Any = None
    message: str | None = None
    reason: str | None = None
    detail: Any = None


class HttpFilter:
    """The handler of one filter by URL: ``await handler(task)`` -> its FilterResult."""

    def __init__(self, spec: FilterSpec, client: httpx.AsyncClient, *, max_bytes: int, token: str | None) -> None:
        if spec.url is None:
            raise ValueError(f"filter {spec.name} has no url")
        self.spec = spec
        self._url = spec.url
        self._client = client
        self._host = urlsplit(spec.url).hostname or spec.url
        self._limit = max_bytes
        self._headers = {"Accept-Encoding": "identity"}
        if token:
            self._headers["Authorization"] = f"Bearer {token}"
        self._timeout = httpx.Timeout(spec.timeout_s, connect=min(spec.timeout_s, CONNECT_TIMEOUT_S))

    async def __call__(self, task: AgentTask) -> FilterResult:
        headers = {**self._headers, "X-Request-Id": task.task_id}
        try:
            async with self._client.stream(
                "POST", self._url, json=self._body(task), headers=headers, timeout=self._timeout
            ) as response:
                body = await self._read(response)
        except httpx.TimeoutException:
            raise ReplyError(f"no answer from {self._host} within {self.spec.timeout_s:g}s") from None
        except httpx.HTTPError as exc:
            raise ReplyError(f"cannot reach {self._host}: {type(exc).__name__}") from None
        return self._result(task, response.status_code, body)

    def _body(self, task: AgentTask) -> dict[str, Any]:
        messages = [
            {"role": m.role, "content": m.content, **({"name": m.name} if m.name else {})} for m in task.messages
        ]
        metadata = {
            "routeyard_task_id": task.task_id,
            "routeyard_event_id": task.event_id,
            "routeyard_conversation_id": task.conversation_id,
            "routeyard_attempt": str(task.attempt),
        }
        return {"model": self.spec.name, "messages": messages, "metadata": metadata}

    async def _read(self, response: httpx.Response) -> bytes:
        body = bytearray()
        async for data in response.aiter_bytes():
            body += data
            if len(body) > self._limit:
                raise ReplyError(f"answer from {self._host} exceeds {self._limit} bytes")
        return bytes(body)

    def _result(self, task: AgentTask, status: int, body: bytes) -> FilterResult:
        if 400 <= status < 500 and status not in _RETRIABLE_4XX:
            return FilterResult.blocked(_reason(body) or f"HTTP {status} from {self._host}")
        if not 200 <= status < 300:
            line = _first_line(body)
            raise ReplyError(f"HTTP {status} from {self._host}" + (f": {line}" if line else ""))
        messages = self._messages(body)
        if messages is None or messages == task.messages:
            return FilterResult.passed()
        return FilterResult.changed(messages=messages)

    def _messages(self, body: bytes) -> list[Message] | None:
        if not body.strip():
            return None
        try:
            data = msgspec.json.decode(body)
            if isinstance(data, list):
                return msgspec.convert(data, list[Message])
            return msgspec.convert(data, _Answer).messages
        except Exception:  # any decoding failure (a RecursionError of deep JSON too) is the body's fault
            raise ReplyError(f"malformed answer from {self._host}: not a chat-completions body") from None


def _reason(body: bytes) -> str:
    """A 4xx body's reason: a JSON error's message, or the first line of the text."""
    try:
        answer = msgspec.json.decode(body, type=_Answer)
    except Exception:  # not JSON (or not an object): the text itself
        return _first_line(body)
    error = answer.error
    for value in (error.get("message") if isinstance(error, dict) else error, answer.message, answer.reason):
        if isinstance(value, str) and value.strip():
            return _one_line(value)
    return _one_line(answer.detail) if isinstance(answer.detail, str) else _first_line(body)


def _first_line(body: bytes) -> str:
    text = body[:4096].decode("utf-8", errors="replace")
    return _one_line(next((s for s in text.splitlines() if s.strip()), ""))


def _one_line(text: str) -> str:
    line = " ".join(text.split())
    return line[:FIRST_LINE_CHARS] + ("..." if len(line) > FIRST_LINE_CHARS else "")


def filter_tokens(specs: Sequence[FilterSpec], env: Mapping[str, str] | None = None) -> dict[str, str | None]:
    """Each filter's bearer token from its ``api_key_env``; CatalogError naming every one unset."""
    return bearer_tokens(specs, env, kind="filters")


def http_filters(
    specs: Sequence[FilterSpec], client: httpx.AsyncClient, *, max_bytes: int, env: Mapping[str, str] | None = None
) -> list[Filter]:
    """One runtime Filter per filter by URL (tokens read now: an unset one fails at boot)."""
    tokens = filter_tokens(specs, env)
    return [
        Filter(name=s.name, handler=HttpFilter(s, client, max_bytes=max_bytes, token=tokens[s.name])) for s in specs
    ]
