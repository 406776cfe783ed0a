"""The gateway's HTTP surface (Starlette): OpenAI's chat completions and models, async turns,
health, metrics, and the chat page's static files.

    POST /v1/chat/completions     a turn; stream=true: SSE; ``Prefer: respond-async``: 202 + Location
    GET  /v1/turns/{event_id}     an async (or timed-out) turn: 200 with its answer and decision, 202
                                  while pending, 404 unknown
    GET  /v1/models               "routeyard" (the router decides) and every catalog agent
    GET  /healthz /readyz /metrics
    GET  /                        consumers/gateway/static/ (index.html), when that folder exists

Errors are ``{"error": {"message", "type", "code"}}``: 401 no or unknown key, 403 a key whose tenant
the router does not serve (router.tenants), 400 bad body or a turn larger than the router takes
(router.max_event_bytes; checked before publishing), 404 unknown model or turn, 413 body too
large, 429 too many in flight (Retry-After), 503 broker
unavailable, 504 no response in time (naming the event id; the turn is kept: GET /v1/turns/{id}
fetches it later).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest
from routeyard.consumers.gateway.access import Admission, Keys, NoKey
from routeyard.consumers.gateway.streaming import sse_turn
from routeyard.consumers.gateway.turns import ROUTER_MODEL, Refused, Turns, answer_text, headers
from routeyard.consumers.gateway.wire import BadRequest, completion, json_bytes, parse_request, summary
from routeyard.consumers.metrics import METRICS
from routeyard.schemas import ConversationEvent, decision_decoder, response_decoder
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

log = logging.getLogger(__name__)

STATIC = Path(__file__).parent / "static"
MAX_EVENT_ID = 256


class JSON(JSONResponse):
    """A JSON answer encoded by msgspec."""

    def render(self, content: Any) -> bytes:
        return json_bytes(content)


class Gateway:
    def __init__(self, turns: Turns, keys: Keys) -> None:
        self.turns, self.keys = turns, keys
        self.admission = Admission(turns.cfg.max_in_flight, turns.cfg.max_in_flight_per_tenant)
        self.ready = False

    def app(self) -> Starlette:
        routes: list[Any] = [
            Route("/v1/chat/completions", self.chat, methods=["POST"]),
            Route("/v1/turns/{event_id}", self.turn, methods=["GET"]),
            Route("/v1/models", self.models, methods=["GET"]),
            Route("/healthz", self.healthz, methods=["GET"]),
            Route("/readyz", self.readyz, methods=["GET"]),
            Route("/metrics", metrics, methods=["GET"]),
        ]
        if STATIC.is_dir():
            routes.append(Mount("/", StaticFiles(directory=STATIC, html=True)))
        return Starlette(routes=routes, exception_handlers={Refused: refused, Exception: crashed})

    def tenant(self, request: Request) -> str | None:
        try:
            return self.keys.tenant(request.headers.get("authorization"))
        except NoKey:
            message = "a valid API key is needed (Authorization: Bearer KEY)"
            raise Refused(401, message, "invalid_request_error", "invalid_api_key") from None

    async def chat(self, request: Request) -> Response:
        tenant = self.tenant(request)
        self.turns.admit(tenant)
        if not self.admission.enter(tenant):
            METRICS.gateway_requests.labels(kind="chat", status="429").inc()
            retry = str(self.turns.cfg.retry_after_s)
            raise Refused(
                429,
                "too many requests in flight; retry later",
                "rate_limit_exceeded",
                "too_many_requests",
                {"Retry-After": retry},
            )
        handed_over = False
        METRICS.gateway_in_flight.inc()

        def leave() -> None:
            METRICS.gateway_in_flight.dec()
            self.admission.leave(tenant)

        try:
            chat = parse(await self.body(request))
            event = self.turns.event(chat, tenant, request.headers.get("x-conversation-id"))
            value = self.turns.encoded(event)
            traceparent = request.headers.get("traceparent")
            if "respond-async" in request.headers.get("prefer", "").lower():
                return await self.accept(event, traceparent, value)
            waiter = self.turns.replies.expect(event, stream=chat.stream)
            try:
                await self.turns.publish(event, traceparent, value)
                if chat.stream:
                    stream = sse_turn(
                        self.turns,
                        event,
                        waiter,
                        chat.model,
                        functools.partial(self.finished, event.event_id, leave),
                    )
                    handed_over = True
                    return StreamingResponse(
                        stream, media_type="text/event-stream", headers=headers(event.event_id, event.conversation_id)
                    )
                return await self.answer(event, waiter, chat.model)
            finally:
                if not handed_over:
                    self.turns.replies.forget(event.event_id)
        finally:
            if not handed_over:
                leave()

    def finished(self, event_id: str, leave: Callable[[], None]) -> None:
        self.turns.replies.forget(event_id)
        leave()

    async def body(self, request: Request) -> bytes:
        limit = self.turns.cfg.max_body_bytes
        too_large = Refused(
            413, f"the request body is larger than {limit} bytes", "invalid_request_error", "request_too_large"
        )
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > limit:
            raise too_large
        body = bytearray()
        async for piece in request.stream():
            body += piece
            if len(body) > limit:
                raise too_large
        return bytes(body)

    async def answer(self, event: ConversationEvent, waiter: Any, model: str) -> Response:
        started = time.perf_counter()
        timeout = self.turns.cfg.turn_timeout_s
        try:
            response = await _wait(waiter.response, timeout)
        except TimeoutError:
            METRICS.gateway_requests.labels(kind="chat", status="504").inc()
            await self.turns.replies.keep(event.event_id)
            raise Refused(
                504,
                f"no response within {timeout:g} s for event {event.event_id} (GET /v1/turns/{event.event_id} later)",
                "timeout",
                "turn_timeout",
                headers(event.event_id, event.conversation_id),
            ) from None
        decision = await self.turns.decision(waiter, grace_s=0.05)
        body = completion(model, answer_text(response, self.turns.cfg), summary(response, decision))
        METRICS.gateway_requests.labels(kind="chat", status="200").inc()
        METRICS.gateway_seconds.labels(kind="chat").observe(time.perf_counter() - started)
        agents = [r.agent for r in response.replies]
        return JSON(body, headers=headers(event.event_id, event.conversation_id, agents))

    async def accept(self, event: ConversationEvent, traceparent: str | None, value: bytes) -> Response:
        await self.turns.store.pending(event.tenant, event.event_id)
        waiter = self.turns.replies.expect(event, keep=True)  # keeps its decision beside the record
        try:
            await self.turns.publish(event, traceparent, value)
        except Refused:
            self.turns.replies.drop(event.event_id, waiter)
            raise
        METRICS.gateway_requests.labels(kind="async", status="202").inc()
        found = headers(event.event_id, event.conversation_id) | {"Location": f"/v1/turns/{event.event_id}"}
        body = {
            "id": event.event_id,
            "object": "routeyard.turn",
            "status": "pending",
            "conversation_id": event.conversation_id,
        }
        return JSON(body, status_code=202, headers=found)

    async def turn(self, request: Request) -> Response:
        tenant = self.tenant(request)
        event_id = request.path_params["event_id"]
        unknown = Refused(
            404, f"no turn {event_id[:MAX_EVENT_ID]!r} of this tenant", "invalid_request_error", "turn_not_found"
        )
        if len(event_id) > MAX_EVENT_ID:
            raise unknown
        found = await self.turns.store.get(tenant, event_id)
        if found is None:
            raise unknown
        value, decided = found
        if not value:
            return JSON({"id": event_id, "object": "routeyard.turn", "status": "pending"}, status_code=202)
        response = response_decoder.decode(value)
        decision = decision_decoder.decode(decided) if decided else None
        body = completion(ROUTER_MODEL, answer_text(response, self.turns.cfg), summary(response, decision))
        agents = [r.agent for r in response.replies]
        return JSON(body, headers=headers(event_id, response.conversation_id, agents))

    async def models(self, request: Request) -> Response:
        self.tenant(request)
        names = [ROUTER_MODEL, *self.turns.agents]
        data = [{"id": name, "object": "model", "created": 0, "owned_by": "routeyard"} for name in names]
        return JSON({"object": "list", "data": data})

    async def healthz(self, request: Request) -> Response:
        failure = self.turns.replies.failed()
        body = {"ok": failure is None, "error": type(failure).__name__ if failure else None}
        return JSON(body, status_code=200 if failure is None else 503)

    async def readyz(self, request: Request) -> Response:
        ok = self.ready and self.turns.replies.failed() is None
        return JSON({"ok": ok, "waiting": self.turns.replies.waiting}, status_code=200 if ok else 503)


def parse(body: bytes) -> Any:
    try:
        return parse_request(body)
    except BadRequest as exc:
        METRICS.gateway_requests.labels(kind="chat", status="400").inc()
        raise Refused(400, str(exc), "invalid_request_error", "invalid_request") from None


async def _wait(future: Any, timeout: float) -> Any:
    """The future's result within ``timeout`` s. Awaited directly: under load, each callback between
    the reader's ``set_result`` and this task (``wait_for`` and ``shield`` add three) waits a turn of
    the whole event loop. A timeout cancels the future; ``Replies`` takes a late response anyway."""
    async with asyncio.timeout(timeout):
        return await future


async def metrics(request: Request) -> Response:
    return Response(generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)


async def refused(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, Refused)
    return JSON(exc.body(), status_code=exc.status, headers=exc.headers)


async def crashed(request: Request, exc: Exception) -> Response:
    log.error("gateway: %s on %s %s: %s", type(exc).__name__, request.method, request.url.path, exc)
    return JSON(
        {"error": {"message": "internal error", "type": "server_error", "code": type(exc).__name__}}, status_code=500
    )
