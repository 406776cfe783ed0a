"""OpenAI's chat-completions shapes, as the gateway reads and writes them.

Read: ``ChatRequest`` (msgspec, unknown fields ignored: clients send temperature, tools, ...).
Written: a ``chat.completion`` object, its ``chat.completion.chunk`` pieces for SSE, and errors
``{"error": {"message", "type", "code"}}``; each with the ``routeyard`` extension field the page
and the chat REPL read (design16.md).
"""

from __future__ import annotations

import time
from typing import Any, Literal

import msgspec
from routeyard.schemas import ConversationResponse, Message, RoutingDecision

__all__ = [
    "ChatRequest",
    "completion",
    "decision_info",
    "error_body",
    "json_bytes",
    "new_turn",
    "parse_request",
    "summary",
]

Role = Literal["system", "user", "assistant", "developer", "tool"]


class TextPart(msgspec.Struct, frozen=True):
    type: str
    text: str = ""


class ChatMessage(msgspec.Struct, frozen=True):
    role: Role
    content: str | list[TextPart] | None = None

    def text(self) -> str:
        if isinstance(self.content, list):
            return "".join(p.text for p in self.content if p.type == "text")
        return self.content or ""


class ChatRequest(msgspec.Struct, frozen=True):
    model: str
    messages: list[ChatMessage]
    stream: bool = False
    user: str | None = None
    metadata: dict[str, str] | None = None


_decoder = msgspec.json.Decoder(ChatRequest)
_encoder = msgspec.json.Encoder()


class BadRequest(ValueError):
    """The body is not a usable chat-completions request; the message is one line."""


def parse_request(body: bytes) -> ChatRequest:
    try:
        request = _decoder.decode(body)
    except (msgspec.DecodeError, RecursionError) as exc:
        raise BadRequest(f"invalid request body: {str(exc).splitlines()[0][:300]}") from None
    if not request.messages:
        raise BadRequest("messages must not be empty")
    if not any(m.role == "user" and m.text().strip() for m in new_turn(request.messages)):
        raise BadRequest("the last turn has no user message with text")
    return request


def new_turn(messages: list[ChatMessage]) -> list[ChatMessage]:
    """The messages after the last assistant message: routeyard keeps the conversation's history
    itself (by conversation id), so only the new turn is sent, however much history the client resends."""
    last = max((i for i, m in enumerate(messages) if m.role == "assistant"), default=-1)
    return messages[last + 1 :]


def turn_messages(request: ChatRequest) -> list[Message]:
    return [Message(role=m.role, content=m.text()) for m in new_turn(request.messages) if m.text()]


def error_body(message: str, kind: str, code: str) -> dict[str, Any]:
    return {"error": {"message": message, "type": kind, "code": code}}


def decision_info(decision: RoutingDecision | None) -> dict[str, Any] | None:
    if decision is None:
        return None
    return {
        "routes": decision.routes,
        "mode": decision.mode,
        "engine": decision.engine,
        "latency_ms": round(decision.latency_ms, 3),
        "confidence": decision.confidence,
        "scores": decision.scores,
        "reason": decision.reason,
    }


def summary(response: ConversationResponse, decision: RoutingDecision | None) -> dict[str, Any]:
    """The ``routeyard`` extension of a finished turn."""
    info = decision_info(decision)
    if info is not None:
        info.pop("routes")
        info.pop("mode")
    return {
        "event_id": response.event_id,
        "conversation_id": response.conversation_id,
        "status": response.status,
        "routes": response.routes,
        "mode": decision.mode if decision is not None else None,
        "replies": [
            {"agent": r.agent, "status": r.status, "content": r.content, "error": r.error} for r in response.replies
        ],
        "timed_out": response.timed_out,
        "reason": response.reason,
        "decision": info,
    }


def completion(model: str, text: str, extension: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": f"chatcmpl-{extension['event_id']}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0},
        "routeyard": extension,
    }


def chunk(
    event_id: str, model: str, delta: dict[str, Any], extension: dict[str, Any], finish: str | None = None
) -> bytes:
    """One SSE event: ``data: {chat.completion.chunk}\\n\\n``."""
    body = {
        "id": f"chatcmpl-{event_id}",
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        "routeyard": extension,
    }
    return b"data: " + _encoder.encode(body) + b"\n\n"


def sse(body: dict[str, Any]) -> bytes:
    return b"data: " + _encoder.encode(body) + b"\n\n"


DONE = b"data: [DONE]\n\n"


def json_bytes(body: Any) -> bytes:
    """``body`` as compact JSON (msgspec: several times quicker than Starlette's json.dumps)."""
    return _encoder.encode(body)
