"""Plano-Orchestrator behind an OpenAI-compatible server: ``/v1/chat/completions`` as the
``TextGenerator`` of ``PlanoEngine``.

The HTTP client is created and closed in one async context manager::

    settings = OpenAISettings(base_url="http://127.0.0.1:8000/v1", model="katanemo/Plano-Orchestrator-4B")
    async with OpenAIGenerator(settings) as generator:
        results = await PlanoEngine(generator).decide(requests)

Plano's pattern: one request per prompt, a single user message holding the filled-in prompt (no
system message), temperature 0.01; at most ``max_concurrency`` requests in flight. An answer
stopped by ``max_tokens`` (``finish_reason == "length"``) is not finished (a failed decision).
``confidence`` is exp(mean log-probability) of the answer's tokens, as in ``routeyard.router.plano.vllm``.

Constraints (``OpenAISettings.constraint``):

- ``"plano_grammar"`` (the default; vLLM with xgrammar): ``"structured_outputs": {"grammar": ...}``,
  the route schema compiled here by xgrammar with ``json.dumps`` spacing (``routeyard.router.plano.vllm``):
  the model writes ``{"route": ["A", "B"]}`` as the prompt shows it.
- ``"json_schema"``: the standard ``"response_format": {"type": "json_schema", ...}``. vLLM servers
  need ``--structured-outputs-config '{"backend": "xgrammar", "disable_any_whitespace": true}'``
  (the per-request switch is ignored; a weak model otherwise loops on whitespace).
- ``"none"``: no constraint.

Errors: ``RuntimeError`` when not started, ``ValueError`` for bad settings or arguments. One
request's failure never raises: it gives a ``Generation`` with ``error`` set (a failed decision)::

    retried, exponential backoff with jitter, Retry-After honoured:
        HTTP 429, HTTP 5xx, connection errors, timeouts (``timeout_s`` per attempt)
    not retried: other HTTP 4xx, a malformed response, a Retry-After beyond ``retry_after_max_s``
"""

from __future__ import annotations

import asyncio
import email.utils
import importlib.util
import logging
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from types import TracebackType
from typing import Any, Self

import httpx
import msgspec
from routeyard.router.plano.engine import Generation
from routeyard.router.plano.route_schema import mean_confidence, plano_grammar, route_json_schema
from routeyard.router.settings import OpenAIConstraint, OpenAISettings

__all__ = ["OpenAIGenerator", "OpenAISettings"]

logger = logging.getLogger(__name__)

Constraint = OpenAIConstraint


class _TokenLogprob(msgspec.Struct):
    logprob: float


class _Logprobs(msgspec.Struct):
    content: list[_TokenLogprob] | None = None


class _Message(msgspec.Struct):
    content: str | None = None


class _Choice(msgspec.Struct):
    message: _Message
    finish_reason: str | None = None
    logprobs: _Logprobs | None = None


class _Completion(msgspec.Struct):
    choices: list[_Choice]


class _ErrorDetail(msgspec.Struct):
    message: str = ""


class _ErrorBody(msgspec.Struct):
    error: _ErrorDetail | str | None = None


_ENCODE = msgspec.json.Encoder().encode
_DECODE_COMPLETION = msgspec.json.Decoder(_Completion).decode
_DECODE_ERROR = msgspec.json.Decoder(_ErrorBody).decode


class _Retriable(Exception):
    """One attempt failed in a way worth another try; ``retry_after``: what the server asked for."""

    def __init__(self, reason: str, retry_after: float | None = None) -> None:
        super().__init__(reason)
        self.retry_after = retry_after


def _failed(reason: str) -> Generation:
    return Generation(text="", finished=False, error=reason)


def _http_error(response: httpx.Response) -> str:
    """``HTTP 400: <the server's message>``."""
    try:
        body = _DECODE_ERROR(response.content)
        detail = body.error.message if isinstance(body.error, _ErrorDetail) else body.error
    except (msgspec.DecodeError, msgspec.ValidationError):
        detail = None
    text = detail or response.text[:200] or response.reason_phrase
    return f"HTTP {response.status_code}: {text}"


def _retry_after(value: str | None) -> float | None:
    """Seconds a ``Retry-After`` header asks to wait (delta-seconds or an HTTP date)."""
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _generation(response: httpx.Response) -> Generation:
    """The answer in a response; raises ``_Retriable`` for 429 and 5xx."""
    if response.status_code == 429 or response.status_code >= 500:
        raise _Retriable(_http_error(response), _retry_after(response.headers.get("retry-after")))
    if not response.is_success:
        return _failed(_http_error(response))
    try:
        completion = _DECODE_COMPLETION(response.content)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        return _failed(f"malformed response: {exc}")
    if not completion.choices:
        return _failed("malformed response: no choices")
    choice = completion.choices[0]
    return Generation(
        text=choice.message.content or "",
        finished=choice.finish_reason != "length",
        confidence=_choice_confidence(choice),
    )


def _choice_confidence(choice: _Choice) -> float | None:
    tokens = choice.logprobs.content if choice.logprobs is not None else None
    if not tokens:
        return None
    return mean_confidence(sum(t.logprob for t in tokens), len(tokens))


class OpenAIGenerator:
    """``TextGenerator`` over an OpenAI-compatible server. Use as an async context manager.

    ``transport`` replaces httpx's network transport (a ``httpx.MockTransport`` in tests).
    """

    def __init__(self, settings: OpenAISettings, *, transport: httpx.AsyncBaseTransport | None = None) -> None:
        if settings.constraint == "plano_grammar" and importlib.util.find_spec("xgrammar") is None:
            raise ValueError("constraint 'plano_grammar' needs xgrammar installed; or use constraint 'json_schema'")
        self.settings = settings
        self.model = settings.model
        self._transport = transport
        self._client: httpx.AsyncClient | None = None
        self._slots = asyncio.Semaphore(settings.max_concurrency)
        self._random = random.Random()
        self._sleep: Callable[[float], Awaitable[None]] = asyncio.sleep

    def prefix_cache_hit_rate(self) -> float | None:
        """None: the server's cache is its own (vLLM publishes it on its /metrics)."""
        return None

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    async def start(self) -> None:
        """Create the HTTP client (no request is made). Idempotent."""
        if self._client is not None:
            return
        settings = self.settings
        headers = {"Content-Type": "application/json"}
        if settings.api_key is not None:
            headers["Authorization"] = f"Bearer {settings.api_key.get_secret_value()}"
        slots = settings.max_concurrency
        limits = httpx.Limits(max_connections=slots, max_keepalive_connections=slots)
        self._client = httpx.AsyncClient(
            base_url=settings.base_url,
            headers=headers,
            timeout=settings.timeout_s,
            limits=limits,
            transport=self._transport,
        )

    async def stop(self) -> None:
        """Close the HTTP client. Idempotent."""
        client, self._client = self._client, None
        if client is not None:
            await client.aclose()

    async def generate(self, prompts: Sequence[str], agents: Sequence[Sequence[str]]) -> list[Generation]:
        """One generation per prompt, one request each, run concurrently (bounded)."""
        if self._client is None:
            raise RuntimeError("OpenAIGenerator is not started: use 'async with OpenAIGenerator(...)'")
        if len(prompts) != len(agents):
            raise ValueError(f"{len(prompts)} prompts but {len(agents)} agent lists")
        bodies = [self.request_body(p, a) for p, a in zip(prompts, agents, strict=True)]
        async with asyncio.TaskGroup() as group:
            tasks = [group.create_task(self._one(self._client, body)) for body in bodies]
        return [task.result() for task in tasks]

    def request_body(self, prompt: str, agents: Sequence[str]) -> dict[str, Any]:
        """The JSON body of the chat-completions request for one prompt."""
        settings = self.settings
        body: dict[str, Any] = {
            "model": settings.model,
            "messages": [{"role": "user", "content": prompt}],
            "temperature": settings.temperature,
            "max_tokens": settings.max_tokens,
        }
        if settings.logprobs:
            body["logprobs"] = True
        if settings.chat_template_kwargs is not None:
            body["chat_template_kwargs"] = settings.chat_template_kwargs
        return {**body, **self._constraint(tuple(agents))}

    def _constraint(self, names: tuple[str, ...]) -> dict[str, Any]:
        settings = self.settings
        if settings.constraint == "plano_grammar":
            return {"structured_outputs": {"grammar": plano_grammar(names, settings.max_routes)}}
        if settings.constraint == "json_schema":
            schema = {"name": "route", "schema": route_json_schema(names, settings.max_routes), "strict": True}
            return {"response_format": {"type": "json_schema", "json_schema": schema}}
        return {}

    async def _one(self, client: httpx.AsyncClient, body: dict[str, Any]) -> Generation:
        """One prompt's request with retries; a failure comes back as ``Generation.error``."""
        content = _ENCODE(body)
        attempts = self.settings.retries + 1
        for attempt in range(1, attempts + 1):
            try:
                return await self._attempt(client, content)
            except _Retriable as exc:
                failure = exc
            delay = self._delay(attempt, failure.retry_after)
            if delay is None:
                return _failed(f"{failure}; the server asked to retry after {failure.retry_after:g}s")
            if attempt == attempts:
                break
            logger.debug("chat completion attempt %d failed (%s); retrying in %.2fs", attempt, failure, delay)
            await self._sleep(delay)
        logger.warning("chat completion failed after %d attempts: %s", attempts, failure)
        return _failed(f"{failure} ({attempts} attempts)")

    async def _attempt(self, client: httpx.AsyncClient, content: bytes) -> Generation:
        timeout = self.settings.timeout_s
        async with self._slots:
            try:
                async with asyncio.timeout(timeout):
                    response = await client.post("/chat/completions", content=content)
            except (TimeoutError, httpx.TimeoutException) as exc:
                raise _Retriable(f"timed out after {timeout:g}s") from exc
            except httpx.TransportError as exc:
                raise _Retriable(f"{type(exc).__name__}: {exc}".rstrip(": ")) from exc
            except httpx.HTTPError as exc:
                return _failed(f"{type(exc).__name__}: {exc}".rstrip(": "))
        return _generation(response)

    def _delay(self, attempt: int, retry_after: float | None) -> float | None:
        """Seconds before the next attempt; None when the server asked for more than we wait."""
        settings = self.settings
        if retry_after is not None:
            return retry_after if retry_after <= settings.retry_after_max_s else None
        ceiling = min(settings.backoff_max_s, settings.backoff_s * 2.0 ** (attempt - 1))
        return ceiling * (0.5 + self._random.random() / 2)
