"""A small OpenAI-compatible agent server, as a Plano agent is: Starlette + uvicorn on a random
loopback port, in the test's event loop. Each path is one behaviour (answers are
``<model>: <last user message>`` plus ``[after <name>: <text>]`` per earlier assistant reply)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route


@dataclass
class Seen:
    """One request the server got."""

    path: str
    body: dict[str, Any]
    authorization: str | None


@dataclass
class AgentServer:
    url: str = ""
    closing: asyncio.Event = field(default_factory=asyncio.Event)
    seen: list[Seen] = field(default_factory=list)

    def calls(self, path: str) -> list[Seen]:
        return [s for s in self.seen if s.path == path]

    def endpoint(self, path: str) -> str:
        return f"{self.url}{path}"


def answer(body: dict[str, Any]) -> str:
    messages = body["messages"]
    last = next(m["content"] for m in reversed(messages) if m["role"] == "user")
    after = "".join(f" [after {m.get('name')}: {m['content']}]" for m in messages if m["role"] == "assistant")
    return f"{body['model']}: {last}{after}"


def completion(text: str) -> dict[str, Any]:
    message = {"role": "assistant", "content": text}
    return {"id": "c1", "object": "chat.completion", "choices": [{"index": 0, "message": message}]}


def chunk(text: str | None, finish: str | None = None) -> bytes:
    delta = {"content": text} if text is not None else {}
    choice = {"index": 0, "delta": delta, "finish_reason": finish}
    return f"data: {json.dumps({'object': 'chat.completion.chunk', 'choices': [choice]})}\n\n".encode()


async def sse(text: str) -> AsyncIterator[bytes]:
    yield b": keep-alive comment\n\n"
    for i, word in enumerate(text.split(" ")):
        yield chunk(word if i == 0 else " " + word)
        await asyncio.sleep(0.01)
    yield chunk(None, "stop")
    yield b"data: [DONE]\n\n"


def _app(server: AgentServer) -> Starlette:
    async def handle(request: Request) -> Response:
        body = await request.json()
        path = request.url.path
        server.seen.append(Seen(path, body, request.headers.get("authorization")))
        if path == "/missing":
            return PlainTextResponse("no such agent here\nsecond line", status_code=404)
        if path == "/flaky" and len(server.calls(path)) == 1:
            return PlainTextResponse("overloaded", status_code=500)
        if path == "/hang":
            await server.closing.wait()  # until the server stops
        if path == "/garbage":
            return PlainTextResponse("<html>not json</html>")
        if path == "/long-line":
            return StreamingResponse(iter([b"data: " + b"x" * 100_000 + b"\n\n"]), media_type="text/event-stream")
        if body.get("stream"):
            return StreamingResponse(sse(answer(body)), media_type="text/event-stream")
        return JSONResponse(completion(answer(body)))

    paths = ["/ok", "/missing", "/flaky", "/hang", "/garbage", "/long-line"]
    return Starlette(routes=[Route(p, handle, methods=["POST"]) for p in paths])


@contextlib.asynccontextmanager
async def agent_server() -> AsyncIterator[AgentServer]:
    """The server on a free loopback port until the block ends."""
    server = AgentServer()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    server.url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    config = uvicorn.Config(_app(server), log_level="warning", lifespan="off", timeout_graceful_shutdown=1)
    running = uvicorn.Server(config)
    task = asyncio.create_task(running.serve(sockets=[sock]))
    while not running.started:
        if task.done():
            task.result()
        await asyncio.sleep(0.01)
    try:
        yield server
    finally:
        server.closing.set()
        running.should_exit = True
        await asyncio.wait_for(task, 10)
        sock.close()
