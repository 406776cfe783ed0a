"""The wire contract: every message routeyard puts on or takes off a topic.

All messages are frozen msgspec Structs encoded as JSON. Every struct carries ``v``, the
schema version it was written with.

Schema-evolution rules (tested by ``tests/unit/test_schema_evolution.py`` against frozen
payloads of every earlier version):

1. A field is never removed and its type never changes.
2. A new field always has a default, so payloads written before it existed still decode.
3. Unknown fields are ignored on decode, so old readers accept payloads from newer writers.
4. Enumerated string values (``status``, ``mode``) are closed: a new kind of outcome comes as
   a new field with a default, never as a new value of an existing one. A reader therefore never
   meets a value it cannot decode; a record that carries one anyway is rejected (dead-lettered)
   rather than guessed at.
   One deliberate exception, requested by users: version 2 added ``rejected`` to
   ``ConversationResponse.status`` (with the new field ``reason``), so that a turn the router
   refuses answers its sender at once. A version-1 reader fails to decode such a response; it
   would otherwise never have got one (it waited out its timeout), so nothing it did before breaks.
5. ``v`` is bumped when a field is added; readers never branch on it to decode, it is there
   for humans and for audits.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Literal

import msgspec

SCHEMA_VERSION = 2
Version = Annotated[int, msgspec.Meta(ge=0, le=1_000_000)]
"""``v``: a small non-negative number. A record claiming version 2**70 is not from any writer:
it fails to decode (and is dead-lettered with the reason) instead of being routed."""

Role = Literal["user", "assistant", "system", "developer", "tool"]
Mode = Literal["parallel", "sequential"]
ReplyStatus = Literal["ok", "error"]
ResponseStatus = Literal["complete", "partial", "no_route", "failed", "rejected"]

TOKEN_DOC = "echo the task's token in the reply; replies without the right token are refused"
Token = Annotated[str, msgspec.Meta(description=TOKEN_DOC)]
"""A task attempt's unguessable token (an HMAC of its task id under a secret kept only in the
correlation); the reply must echo it, so only whoever received the task can answer it."""


def utcnow() -> datetime:
    return datetime.now(UTC)


class Message(msgspec.Struct, frozen=True, kw_only=True):
    """One chat message. ``name`` is the agent that wrote an assistant message, if any."""

    role: Role
    content: str
    name: str | None = None


class ConversationEvent(msgspec.Struct, frozen=True, kw_only=True):
    """What a service publishes to the conversations topic: one new turn of a conversation.

    Key the record by ``conversation_id`` so one conversation stays in order.
    ``event_id`` makes the event idempotent: publishing it twice routes it once.
    """

    event_id: str
    conversation_id: str
    messages: list[Message]
    tenant: str | None = None
    agents: list[str] | None = None
    """Restrict routing to these catalog agents for this turn (None: the whole catalog)."""
    reply_topic: str | None = None
    """Where the response goes (None: the responses topic)."""
    mode: Mode | None = None
    """Multi-intent mode for this turn (None: the router's configured mode)."""
    created_at: datetime = msgspec.field(default_factory=utcnow)
    metadata: dict[str, str] = msgspec.field(default_factory=dict)
    v: Version = SCHEMA_VERSION


class RoutingDecision(msgspec.Struct, frozen=True, kw_only=True):
    """What the router decided for one event; published to the decisions topic (audit, replay)."""

    event_id: str
    conversation_id: str
    routes: list[str]
    """Agents that will handle the turn, in order (empty: no route)."""
    mode: Mode
    engine: str
    tenant: str | None = None
    selected: list[str] = msgspec.field(default_factory=list)
    """What the engine chose, before the default agent was applied."""
    dropped: list[str] = msgspec.field(default_factory=list)
    """Names the engine returned that are not in the catalog (dropped)."""
    raw_output: str | None = None
    latency_ms: float = 0.0
    fallback_reason: str | None = None
    default_used: bool = False
    abstained: bool = False
    """The engine chose agents but with confidence under the threshold; the default agent took it."""
    catalog_version: str = ""
    model: str | None = None
    confidence: float | None = None
    scores: dict[str, float] | None = None
    worker: str = ""
    """Which router worker decided (host:pid/instance)."""
    circuit_open: list[str] = msgspec.field(default_factory=list)
    """Agents the engine chose whose circuit breaker was open: their turns went to their
    ``fallback`` agent or the default agent, or were dropped (``fallback_reason`` says which)."""
    decided_at: datetime = msgspec.field(default_factory=utcnow)
    v: Version = SCHEMA_VERSION


class PriorReply(msgspec.Struct, frozen=True, kw_only=True):
    """An earlier agent's reply, handed to the next agent in sequential mode."""

    agent: str
    status: ReplyStatus
    content: str


class AgentTask(msgspec.Struct, frozen=True, kw_only=True):
    """What an agent receives on its topic. Reply with an ``AgentReply`` on ``reply_topic``."""

    task_id: str
    event_id: str
    conversation_id: str
    agent: str
    messages: list[Message]
    """The conversation so far, ending with the turn to handle."""
    reply_topic: str
    deadline: datetime
    tenant: str | None = None
    prior_replies: list[PriorReply] = msgspec.field(default_factory=list)
    step: int = 0
    attempt: int = 1
    metadata: dict[str, str] = msgspec.field(default_factory=dict)
    token: Token = ""
    """echo the task's token in the reply; replies without the right token are refused"""
    v: Version = SCHEMA_VERSION


class AgentReply(msgspec.Struct, frozen=True, kw_only=True):
    """An agent's answer to one task. ``task_id``, ``event_id``, ``conversation_id``, ``tenant``,
    ``agent`` and ``token`` are copied from the task; a reply whose token or agent does not match
    its task is refused (dead-lettered, never recorded)."""

    task_id: str
    event_id: str
    conversation_id: str
    agent: str
    status: ReplyStatus = "ok"
    content: str = ""
    error: str | None = None
    tenant: str | None = None
    finished_at: datetime = msgspec.field(default_factory=utcnow)
    token: Token = ""
    """echo the task's token in the reply; replies without the right token are refused"""
    v: Version = SCHEMA_VERSION


class ConversationResponse(msgspec.Struct, frozen=True, kw_only=True):
    """The one response for an event: every agent's reply, correlated.

    status: ``complete`` every selected agent answered ok; ``partial`` some did, others
    errored or timed out; ``failed`` none did; ``no_route`` no agent was selected;
    ``rejected`` (v2) the router refused the turn (``reason`` says why; it was dead-lettered).
    """

    event_id: str
    conversation_id: str
    status: ResponseStatus
    tenant: str | None = None
    routes: list[str] = msgspec.field(default_factory=list)
    replies: list[AgentReply] = msgspec.field(default_factory=list)
    timed_out: list[str] = msgspec.field(default_factory=list)
    skipped: list[str] = msgspec.field(default_factory=list)
    """Sequential mode: agents never run because the chain stopped before them."""
    created_at: datetime | None = None
    responded_at: datetime = msgspec.field(default_factory=utcnow)
    v: Version = SCHEMA_VERSION
    reason: str | None = None
    """With ``rejected`` (v2): why, in one line."""

    @property
    def content(self) -> str:
        """The last successful reply's text (Plano's behaviour: the final agent answers)."""
        ok = [r.content for r in self.replies if r.status == "ok"]
        return ok[-1] if ok else ""


class DeadLetter(msgspec.Struct, frozen=True, kw_only=True):
    """A record that could not be handled, with why and where it came from."""

    original: bytes
    """The record's value as read (base64 in JSON): all of it, or its first bytes when
    ``truncated`` (a dead letter must fit under the broker's record limit)."""
    error: str
    stage: str
    """Which step failed: decode, validate, route, correlate, agent, ..."""
    source_topic: str
    source_partition: int
    source_offset: int
    key: bytes | None = None
    error_type: str = ""
    failed_at: datetime = msgspec.field(default_factory=utcnow)
    original_size: int = 0
    """The original's full size in bytes (0 in letters written before this field)."""
    original_sha256: str = ""
    """The hex SHA-256 digest of the whole original ("" in letters written before this field)."""
    truncated: bool = False
    """``original`` (or ``key``) keeps only a prefix: the letter cannot be re-driven byte for byte."""
    v: Version = SCHEMA_VERSION


WIRE_MESSAGES: dict[str, type[msgspec.Struct]] = {
    "ConversationEvent": ConversationEvent,
    "RoutingDecision": RoutingDecision,
    "AgentTask": AgentTask,
    "AgentReply": AgentReply,
    "ConversationResponse": ConversationResponse,
    "DeadLetter": DeadLetter,
}
