"""A scripted gateway for the page's browser test: the static folder at ``/`` and a
``POST /v1/chat/completions`` that streams exactly as design16.md specifies (first chunk with the
decision, content chunks labelled by agent, a last chunk with the whole response, ``[DONE]``).

It pins the protocol the page consumes, independent of the real gateway: the real gateway is tested
against the same page in test_page.py.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import routeyard.consumers
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

STATIC = Path(routeyard.consumers.__file__).parent / "gateway" / "static"
KEY = "stub-key"
HOSTILE = "<img src=x onerror=\"document.title='pwned'\">"
# (agent, piece) in the order they are sent: parallel agents interleave.
CHUNKS = [
    ("TranslateAgent", "Bonjour, "),
    ("SummaryAgent", "In short: "),
    ("TranslateAgent", "le monde. "),
    ("SummaryAgent", "a greeting. "),
    ("TranslateAgent", HOSTILE),
]
REPLIES = {
    "TranslateAgent": "Bonjour, le monde. " + HOSTILE,
    # The durable record wins over the chunks: the page must show this, not the streamed text.
    "SummaryAgent": "In short: a greeting. (final)",
}
DECISION = {
    "routes": ["TranslateAgent", "SummaryAgent"],
    "mode": "parallel",
    "engine": "rules",
    "latency_ms": 1.7,
    "confidence": None,
    "scores": {"TranslateAgent": 1.0, "SummaryAgent": 0.9},
    "reason": "keywords: translate, summarise",
}


@dataclass
class Stub:
    """What the stub received: each request's headers and JSON body."""

    requests: list[tuple[dict[str, str], dict[str, Any]]] = field(default_factory=list)

    def app(self) -> Starlette:
        routes = [
            Route("/v1/chat/completions", self.completions, methods=["POST"]),
            Mount("/", StaticFiles(directory=STATIC, html=True)),
        ]
        return Starlette(routes=routes)

    async def completions(self, request: Request) -> Response:
        body = await request.json()
        self.requests.append((dict(request.headers), body))
        if request.headers.get("authorization") != f"Bearer {KEY}":
            error = {"message": "missing or invalid API key", "type": "invalid_request_error"}
            return JSONResponse({"error": error}, status_code=401)
        conversation = request.headers.get("x-conversation-id") or f"conv-stub-{len(self.requests)}"
        event_id = f"ev-{len(self.requests)}"
        headers = {"X-Conversation-Id": conversation, "X-Routeyard-Event-Id": event_id}
        return StreamingResponse(_events(conversation, event_id), media_type="text/event-stream", headers=headers)


def _chunk(delta: dict[str, Any], routeyard: dict[str, Any], finish: str | None = None) -> str:
    choice = {"index": 0, "delta": delta, "finish_reason": finish}
    chunk = {"id": "chatcmpl-stub", "object": "chat.completion.chunk", "created": 0, "model": "routeyard"}
    return "data: " + json.dumps({**chunk, "choices": [choice], "routeyard": routeyard}) + "\n\n"


async def _events(conversation: str, event_id: str) -> AsyncIterator[str]:
    head = {"event_id": event_id, "conversation_id": conversation, "decision": DECISION}
    yield _chunk({"role": "assistant"}, head)
    for agent, text in CHUNKS:
        await asyncio.sleep(0.05)
        yield _chunk({"content": text}, {"agent": agent})
    replies = [{"agent": a, "status": "ok", "content": c, "error": None} for a, c in REPLIES.items()]
    decision = {k: v for k, v in DECISION.items() if k not in ("routes", "mode")}
    whole = {"event_id": event_id, "conversation_id": conversation, "status": "ok", "routes": DECISION["routes"]}
    whole |= {"mode": "parallel", "replies": replies, "timed_out": [], "decision": decision}
    yield _chunk({}, whole, finish="stop")
    yield "data: [DONE]\n\n"


@contextmanager
def serving(app: Starlette) -> Iterator[str]:
    """Run app on a random loopback port in a thread; its base URL while the block runs."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        while not server.started:
            if not thread.is_alive():
                raise RuntimeError("the stub server did not start")
            threading.Event().wait(0.02)
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()
