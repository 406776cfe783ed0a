"""From an HTTP request to a turn on the bus, and from its response to what the client reads.

``Turns`` holds what every request needs (settings, catalog names, the producer, the reply
reader, the async-turn store); ``Refused`` is an HTTP error in OpenAI's error shape.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from routeyard.consumers import tracing
from routeyard.consumers.gateway.replies import Replies, Waiter
from routeyard.consumers.gateway.wire import ChatRequest, error_body, turn_messages
from routeyard.consumers.kafka.bus import Outgoing, Producer
from routeyard.consumers.kafka.records import MAX_REQUEST_SIZE, fits
from routeyard.consumers.settings import GatewaySettings
from routeyard.consumers.stores.turns import TurnStore
from routeyard.schemas import ConversationEvent, ConversationResponse, RoutingDecision, Topics, encode

__all__ = ["ROUTER_MODEL", "Refused", "RouterLimits", "Turns", "answer_text"]

ROUTER_MODEL = "routeyard"
"""``model: "routeyard"``: the router decides; any other model must name a catalog agent."""
_CONVERSATION = re.compile(r"[\x20-\x7e]{1,256}")
"""Printable ASCII: the id goes back in a response header."""
PUBLISH_TIMEOUT_S = 10.0
HEADERS_ROOM = 1024
"""Bytes left for the record's trace headers when checking that the broker takes the event."""


@dataclass(frozen=True)
class RouterLimits:
    """What the router refuses of any event (router.tenants, router.max_event_bytes): the gateway
    refuses it first, with an HTTP error, instead of publishing a turn that comes back rejected."""

    tenants: frozenset[str] | None = None
    max_event_bytes: int = MAX_REQUEST_SIZE


class Refused(Exception):
    """An HTTP error answer: ``{"error": {"message", "type", "code"}}`` with ``status``."""

    def __init__(self, status: int, message: str, kind: str, code: str, headers: Mapping[str, str] | None = None):
        super().__init__(message)
        self.status, self.kind, self.code = status, kind, code
        self.headers = dict(headers or {})

    def body(self) -> dict[str, Any]:
        return error_body(str(self), self.kind, self.code)


class Turns:
    def __init__(
        self,
        cfg: GatewaySettings,
        topics: Topics,
        agents: list[str],
        producer: Producer,
        replies: Replies,
        store: TurnStore,
        limits: RouterLimits | None = None,
    ) -> None:
        self.cfg, self.topics, self.agents = cfg, topics, agents
        self.producer, self.replies, self.store = producer, replies, store
        self.limits = limits or RouterLimits()

    def admit(self, tenant: str | None) -> None:
        """403 for a key whose tenant the router does not serve (router.tenants): refused here,
        before anything is published."""
        allowed = self.limits.tenants
        if allowed is not None and (tenant or "") not in allowed:
            who = f"tenant {tenant!r} is" if tenant else "requests without a tenant are"
            message = f"{who} not served by this router (router.tenants)"
            raise Refused(403, message, "permission_error", "unknown_tenant")

    def event(self, chat: ChatRequest, tenant: str | None, conversation_header: str | None) -> ConversationEvent:
        """The turn ``chat`` asks for (404 for an unknown model, 400 for a bad conversation id)."""
        if chat.model != ROUTER_MODEL and chat.model not in self.agents:
            raise Refused(
                404,
                f"unknown model {chat.model[:100]!r}: use 'routeyard' or an agent from GET /v1/models",
                "invalid_request_error",
                "model_not_found",
            )
        metadata = chat.metadata or {}
        conversation = conversation_header or chat.user or metadata.get("conversation_id") or uuid.uuid4().hex
        if not _CONVERSATION.fullmatch(conversation):
            raise Refused(
                400,
                "the conversation id must be 1-256 printable ASCII characters",
                "invalid_request_error",
                "invalid_conversation_id",
            )
        return ConversationEvent(
            event_id=uuid.uuid4().hex,
            conversation_id=conversation,
            messages=turn_messages(chat),
            tenant=tenant,
            agents=None if chat.model == ROUTER_MODEL else [chat.model],
            reply_topic=self.replies.topic,
            metadata=metadata,
            stream=chat.stream,
        )

    def encoded(self, event: ConversationEvent) -> bytes:
        """The event's bytes; 400 when the router would refuse them as too large (router.max_event_bytes)
        or the broker could not take them (so a body near the gateway's own limit never reaches it)."""
        value = encode(event)
        limit = self.limits.max_event_bytes
        record = Outgoing(self.topics.conversations, value, event.conversation_id)
        if len(value) > limit or not fits(record, MAX_REQUEST_SIZE - HEADERS_ROOM):
            limit = min(limit, MAX_REQUEST_SIZE)
            raise Refused(
                400,
                f"the turn is {len(value)} bytes as an event, more than the router takes ({limit} bytes,"
                " router.max_event_bytes): send fewer or shorter messages",
                "invalid_request_error",
                "turn_too_large",
            )
        return value

    async def publish(self, event: ConversationEvent, traceparent: str | None, value: bytes | None = None) -> None:
        """Publish the turn (``value``: its bytes from ``encoded``), continuing the caller's trace
        (``traceparent``); 503 if the broker does not take it in time."""
        parent = {"traceparent": traceparent} if traceparent and tracing.valid("traceparent", traceparent) else None
        span = tracing.started("routeyard.gateway", parent, conversation=event.conversation_id)
        outgoing = Outgoing(
            topic=self.topics.conversations,
            value=value if value is not None else self.encoded(event),
            key=event.conversation_id,
            headers=tracing.headers(span.context()),
        )
        try:
            async with asyncio.timeout(PUBLISH_TIMEOUT_S):
                await self.producer.publish([outgoing])
        except Exception as exc:
            raise Refused(
                503, f"the broker did not take the turn: {type(exc).__name__}", "server_error", "unavailable"
            ) from None
        finally:
            span.end()

    async def decision(self, waiter: Waiter, grace_s: float = 0.2) -> RoutingDecision | None:
        """The turn's decision, waiting a moment for it when the response came first."""
        if not waiter.decided.is_set() and grace_s > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(waiter.decided.wait(), grace_s)
        return waiter.decision


def answer_text(response: ConversationResponse, cfg: GatewaySettings) -> str:
    """What the client shows: the agents' answers, or the configured text for a turn without one."""
    if response.status in ("complete", "partial"):
        return "\n\n".join(r.content for r in response.replies if r.status == "ok" and r.content)
    if response.status == "no_route":
        return cfg.no_route_text
    if response.status == "rejected":
        return cfg.rejected_text.replace("{reason}", response.reason or "no reason given")
    if response.status == "blocked":  # a filter stopped the turn (issue 17): its reason, as Plano shows it
        return f"Blocked: {response.reason or 'a filter stopped the turn'}"
    return cfg.failed_text


def headers(event_id: str, conversation_id: str, agents: list[str] | None = None) -> dict[str, str]:
    found = {"X-Routeyard-Event-Id": event_id, "X-Conversation-Id": conversation_id}
    if agents is not None:
        found["X-Routeyard-Agents"] = ",".join(agents)
    return found
