"""Agents by URL: a catalog agent with ``url:`` is an HTTP service that speaks Plano's agent contract.

Each task becomes ``POST <url>`` with an OpenAI chat-completions body::

    {"model": "<agent name>", "stream": true,
     "messages": [the task's conversation; in sequential mode the earlier agents' ok replies
                  as assistant messages], "metadata": {"routeyard_event_id": ..., ...}}

and the answer is ``choices[0].message.content``, or with ``stream`` (and a ``text/event-stream``
answer) the concatenated ``delta.content`` of the ``chat.completion.chunk`` events up to
``data: [DONE]``, each delta published as an ``AgentChunk`` when the sender asked for a stream.
The handler runs inside the agent runtime (``agent.py``): answered marks, tokens, deadlines,
chunks and the reply size limit are the runtime's.

Failures are error replies (``ReplyError``): 4xx (but 408 and 429) is final, ``HTTP 404 from
<host>: <first line of the body>``, never retried; 5xx, 3xx, connection errors, timeouts and
malformed or oversized bodies are retried per the agent's ``retries``, as a raising Python agent
is. A hostile agent cannot make the bridge hold more than about ``agent.max_reply_bytes`` of
content or MAX_LINE_BYTES of one event-stream line per task.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncGenerator, AsyncIterator, Mapping, Sequence
from typing import Any, Protocol
from urllib.parse import urlsplit

import httpx
import msgspec
from routeyard.consumers.agents.agent import Agent, Handler, ReplyError, agent
from routeyard.router.catalog import AgentSpec, Catalog, CatalogError
from routeyard.schemas import AgentTask

__all__ = ["HttpAgent", "bearer_tokens", "http_agents", "http_client", "request_body", "url_agents"]

MAX_LINE_BYTES = 64 * 1024
"""One event-stream line (a ``data:`` chunk) may not be longer."""
ERROR_BODY_BYTES = 4096
"""Read this much of an error answer, for its first line."""
FIRST_LINE_CHARS = 200
CONNECT_TIMEOUT_S = 10.0
_ROLES = {"user": "user", "assistant": "assistant", "system": "system", "developer": "system"}
_RETRIABLE_4XX = (408, 429)


class _Text(msgspec.Struct):
    content: str | None = None


class _Error(msgspec.Struct):
    message: str | None = None


class _Choice(msgspec.Struct):
    message: _Text | None = None
    delta: _Text | None = None
    finish_reason: str | None = None


class _Completion(msgspec.Struct):
    """A chat.completion or chat.completion.chunk, as much of it as the bridge reads."""

    choices: list[_Choice] = msgspec.field(default_factory=list)
    error: _Error | None = None


_completion = msgspec.json.Decoder(_Completion)


def url_agents(catalog: Catalog) -> list[AgentSpec]:
    """The catalog's agents by URL."""
    return [spec for spec in catalog.agents if spec.url is not None]


def request_body(spec: AgentSpec, task: AgentTask) -> dict[str, Any]:
    """The chat-completions request for ``task`` (never its token: only the runtime replies)."""
    messages = [_message(_ROLES[m.role], m.content, m.name) for m in task.messages if m.role in _ROLES]
    messages += [_message("assistant", p.content, p.agent) for p in task.prior_replies if p.status == "ok"]
    ids = {"event_id": task.event_id, "conversation_id": task.conversation_id, "task_id": task.task_id}
    metadata = {**task.metadata, **{f"routeyard_{k}": v for k, v in ids.items()}}
    metadata["routeyard_attempt"] = str(task.attempt)
    if task.tenant is not None:
        metadata["routeyard_tenant"] = task.tenant
    return {"model": spec.name, "messages": messages, "stream": spec.stream, "metadata": metadata}


def _message(role: str, content: str, name: str | None) -> dict[str, str]:
    return {"role": role, "content": content, **({"name": name} if name and role == "assistant" else {})}


class HttpAgent:
    """The handler of one agent by URL: ``await handler(task)`` -> the reply text."""

    def __init__(self, spec: AgentSpec, client: httpx.AsyncClient, *, max_reply_bytes: int, token: str | None) -> None:
        if spec.url is None:
            raise ValueError(f"agent {spec.name} has no url")
        self.spec = spec
        self._url = spec.url
        self._client = client
        self._host = urlsplit(spec.url).hostname or spec.url
        self._limit = max_reply_bytes
        self._headers = {"Accept-Encoding": "identity"}  # no compression: a small body cannot inflate to gigabytes
        if token:
            self._headers["Authorization"] = f"Bearer {token}"
        self._timeout = httpx.Timeout(spec.timeout_s, connect=min(spec.timeout_s, CONNECT_TIMEOUT_S))

    async def __call__(self, task: AgentTask) -> str:
        parts: list[str] = []
        async for piece in self.deltas(task):
            parts.append(piece)
        return "".join(parts)

    async def deltas(self, task: AgentTask) -> AsyncGenerator[str, None]:
        """The answer's pieces as the agent writes them (one piece when it does not stream)."""
        body = request_body(self.spec, task)
        try:
            async with self._client.stream(
                "POST", self._url, json=body, headers=self._headers, timeout=self._timeout
            ) as response:
                await self._check_status(response)
                if response.headers.get("content-type", "").startswith("text/event-stream"):
                    async for piece in self._events(response):
                        yield piece
                else:
                    yield await self._whole(response)
        except httpx.TimeoutException:
            raise ReplyError(f"no answer from {self._host} within {self.spec.timeout_s:g}s") from None
        except httpx.HTTPError as exc:
            raise ReplyError(f"cannot reach {self._host}: {type(exc).__name__}") from None

    async def _check_status(self, response: httpx.Response) -> None:
        status = response.status_code
        if 200 <= status < 300:
            return
        line = await self._first_line(response)
        final = 400 <= status < 500 and status not in _RETRIABLE_4XX
        raise ReplyError(f"HTTP {status} from {self._host}" + (f": {line}" if line else ""), retriable=not final)

    async def _first_line(self, response: httpx.Response) -> str:
        head = bytearray()
        async for data in response.aiter_bytes():
            head += data
            if len(head) >= ERROR_BODY_BYTES:
                break
        text = bytes(head[:ERROR_BODY_BYTES]).decode("utf-8", errors="replace")
        line = next((s.strip() for s in text.splitlines() if s.strip()), "")
        return line[:FIRST_LINE_CHARS] + ("..." if len(line) > FIRST_LINE_CHARS else "")

    async def _whole(self, response: httpx.Response) -> str:
        """``choices[0].message.content`` of a chat.completion (its body read up to a bound)."""
        body = bytearray()
        async for data in response.aiter_bytes():
            body += data
            if len(body) > 2 * self._limit + ERROR_BODY_BYTES:  # room for JSON escapes and the envelope
                raise ReplyError(f"reply from {self._host} exceeds agent.max_reply_bytes ({self._limit})")
        completion = self._decoded(bytes(body))
        message = completion.choices[0].message if completion.choices else None
        if message is None:
            raise ReplyError(f"malformed reply from {self._host}: no choices[0].message")
        content = message.content or ""
        if len(content.encode()) > self._limit:
            raise ReplyError(f"reply from {self._host} exceeds agent.max_reply_bytes ({self._limit})")
        return content

    async def _events(self, response: httpx.Response) -> AsyncIterator[str]:
        """``delta.content`` of each chat.completion.chunk event, up to ``[DONE]``."""
        size, finished = 0, False
        async for data in _events(_lines(response, self._host, self._limit)):
            if data == "[DONE]":
                return
            chunk = self._decoded(data.encode())
            for choice in chunk.choices[:1]:
                finished = finished or choice.finish_reason is not None
                piece = choice.delta.content if choice.delta is not None else None
                if piece:
                    size += len(piece.encode())
                    if size > self._limit:
                        raise ReplyError(f"reply from {self._host} exceeds agent.max_reply_bytes ({self._limit})")
                    yield piece
        if not finished:
            raise ReplyError(f"event stream from {self._host} ended before [DONE]")

    def _decoded(self, data: bytes) -> _Completion:
        try:
            completion = _completion.decode(data)
        except Exception:  # any decoding failure (a RecursionError of deep JSON too) is the body's fault
            raise ReplyError(f"malformed reply from {self._host}: not an OpenAI chat completion") from None
        if completion.error is not None:
            raise ReplyError(f"error from {self._host}: {completion.error.message or 'no message'}")
        return completion


async def _lines(response: httpx.Response, host: str, limit: int) -> AsyncIterator[str]:
    """The body's lines, each at most MAX_LINE_BYTES, the whole at most a bound from ``limit``."""
    total_limit = 32 * limit + MAX_LINE_BYTES  # a chunk's envelope is far larger than its text
    buffer, seen = b"", 0
    async for data in response.aiter_bytes():
        seen += len(data)
        if seen > total_limit:
            raise ReplyError(f"event stream from {host} exceeds {total_limit} bytes")
        *lines, buffer = (buffer + data).split(b"\n")
        for line in lines:
            if len(line) > MAX_LINE_BYTES:
                break
            yield line.rstrip(b"\r").decode("utf-8", errors="replace")
        if max(map(len, [buffer, *lines])) > MAX_LINE_BYTES:
            raise ReplyError(f"an event-stream line from {host} exceeds {MAX_LINE_BYTES} bytes")
    if buffer:
        yield buffer.rstrip(b"\r").decode("utf-8", errors="replace")


async def _events(lines: AsyncIterator[str]) -> AsyncIterator[str]:
    """Server-sent events' ``data`` (its lines joined by newlines); other fields and comments skipped."""
    data: list[str] = []
    async for line in lines:
        if not line:
            if data:
                yield "\n".join(data)
            data = []
        elif line.startswith("data:"):
            value = line[5:]
            data.append(value[1:] if value.startswith(" ") else value)
    if data:
        yield "\n".join(data)


class _Keyed(Protocol):
    @property
    def name(self) -> str: ...
    @property
    def api_key_env(self) -> str | None: ...


def bearer_tokens(
    specs: Sequence[_Keyed], env: Mapping[str, str] | None = None, *, kind: str = ""
) -> dict[str, str | None]:
    """Each agent's (or filter's: ``kind``) bearer token from its ``api_key_env``; CatalogError
    naming every one unset."""
    env = os.environ if env is None else env
    missing = [f"{s.name} ({s.api_key_env})" for s in specs if s.api_key_env and not env.get(s.api_key_env)]
    if missing:
        where = f" {kind}" if kind else ""
        raise CatalogError(f"api_key_env not set in the environment for{where}: {', '.join(missing)}")
    return {s.name: env[s.api_key_env] if s.api_key_env else None for s in specs}


def http_agents(
    specs: Sequence[AgentSpec], client: httpx.AsyncClient, *, max_reply_bytes: int, env: Mapping[str, str] | None = None
) -> list[Agent]:
    """One runtime Agent per agent by URL (its tokens read now: an unset one fails at boot). A
    streaming one's handler is ``deltas``, an async generator: the runtime publishes each piece as
    an AgentChunk when the task has a ``stream_topic``."""
    tokens = bearer_tokens(specs, env)
    agents = []
    for spec in specs:
        bridge = HttpAgent(spec, client, max_reply_bytes=max_reply_bytes, token=tokens[spec.name])
        handler: Handler = bridge.deltas if spec.stream else bridge
        agents.append(agent(spec.name, spec.description, topic=spec.topic)(handler))
    return agents


@contextlib.asynccontextmanager
async def http_client(connections: int) -> AsyncIterator[httpx.AsyncClient]:
    """The process's one HTTP client: at most ``connections`` at once, no redirects followed."""
    limits = httpx.Limits(max_connections=connections, max_keepalive_connections=min(connections, 100))
    async with httpx.AsyncClient(limits=limits, follow_redirects=False) as client:
        yield client
