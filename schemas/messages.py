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
   for humans and for audits. Version 3 added ``RoutingDecision.reason``; version 4 added
   ``ConversationEvent.stream``, ``AgentTask.stream_topic``, ``AgentReply.retriable`` and the
   ``AgentChunk`` message. Version 5 (issue 17: filter chains, agent variants, a live catalog) adds
   the fields marked (v5).

Every field carries a description (``Doc``), so the exported JSON Schema documents itself for
people writing agents and producers in other languages.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Literal

import msgspec

SCHEMA_VERSION = 5
Version = Annotated[int, msgspec.Meta(ge=0, le=1_000_000)]
"""``v``: a small non-negative number. A record claiming version 2**70 is not from any writer:
it fails to decode (and is dead-lettered with the reason) instead of being routed."""


def Doc(text: str) -> msgspec.Meta:  # capitalised: it reads as a type annotation: Annotated[str, Doc("...")]
    """A field's description, as it appears in the exported JSON Schema."""
    return msgspec.Meta(description=text)


V_DOC = "The schema version the writer used (readers decode any version; it is there for audits)."
TENANT_DOC = "The tenant the conversation belongs to (null: no tenant); tenants never share a context."
EVENT_DOC = "The id of the ConversationEvent this record is about."
CONVERSATION_DOC = "The conversation's id; records about it are keyed by it, so they stay in order."

Role = Literal["user", "assistant", "system", "developer", "tool"]
Mode = Literal["parallel", "sequential"]
ReplyStatus = Literal["ok", "error"]
ResponseStatus = Literal["complete", "partial", "no_route", "failed", "rejected", "blocked"]
TaskKind = Literal["agent", "input_filter", "output_filter"]
Verdict = Literal["passed", "changed", "blocked"]

TOKEN_DOC = "echo the task's token in the reply; replies without the right token are refused"
Token = Annotated[str, msgspec.Meta(description=TOKEN_DOC)]
"""A task attempt's unguessable token (an HMAC of its task id under a secret kept only in the
correlation); the reply must echo it, so only whoever received the task can answer it."""


def utcnow() -> datetime:
    return datetime.now(UTC)


class Message(msgspec.Struct, frozen=True, kw_only=True):
    """One chat message."""

    role: Annotated[Role, Doc("Who wrote it: user, assistant (an agent), system, developer or tool.")]
    content: Annotated[str, Doc("The message text.")]
    name: Annotated[str | None, Doc("The agent that wrote an assistant message, if any.")] = None
    awaiting_input: Annotated[
        bool,
        Doc(
            "(v5) An assistant message whose agent waits for the user's answer (its reply said awaiting_input): "
            "a next turn that answers it goes back to that agent."
        ),
    ] = False


class ConversationEvent(msgspec.Struct, frozen=True, kw_only=True):
    """What a service publishes to the conversations topic: one new turn of a conversation.

    Key the record by ``conversation_id`` so one conversation stays in order.
    ``event_id`` makes the event idempotent: publishing it twice routes it once.
    """

    event_id: Annotated[
        str, Doc("Unique per turn: publishing the same event twice routes it once; the response carries it.")
    ]
    conversation_id: Annotated[str, Doc("The conversation's id; key the record by it.")]
    messages: Annotated[
        list[Message],
        Doc(
            "Only the new turn (usually one user message), not the history: the router keeps each "
            "conversation's context (earlier turns and the agents' replies) and appends these messages "
            "to it. It needs a user message with text (else the turn is refused and dead-lettered); the last "
            "one is what gets routed."
        ),
    ]
    tenant: Annotated[str | None, Doc(TENANT_DOC)] = None
    agents: Annotated[
        list[str] | None, Doc("Restrict routing to these catalog agents for this turn (null: the whole catalog).")
    ] = None
    reply_topic: Annotated[str | None, Doc("Where the response goes (null: the responses topic).")] = None
    mode: Annotated[Mode | None, Doc("Multi-intent mode for this turn (null: the router's configured mode).")] = None
    created_at: Annotated[
        datetime, Doc("When the sender created the turn (UTC); the response's end-to-end time starts here.")
    ] = msgspec.field(default_factory=utcnow)
    metadata: Annotated[dict[str, str], Doc("Free-form strings passed on to every agent's task unchanged.")] = (
        msgspec.field(default_factory=dict)
    )
    v: Annotated[Version, Doc(V_DOC)] = SCHEMA_VERSION
    stream: Annotated[
        bool,
        Doc(
            "(v4) The sender wants the agents' replies as they are written: agents that can stream publish "
            "AgentChunk records to the streams topic (best effort; the response stays the full record)."
        ),
    ] = False


class RoutingDecision(msgspec.Struct, frozen=True, kw_only=True):
    """What the router decided for one event; published to the decisions topic (audit, replay)."""

    event_id: Annotated[str, Doc(EVENT_DOC)]
    conversation_id: Annotated[str, Doc(CONVERSATION_DOC)]
    routes: Annotated[list[str], Doc("Agents that will handle the turn, in order (empty: no route).")]
    mode: Annotated[Mode, Doc("parallel: all routes at once; sequential: one after another, each seeing the last.")]
    engine: Annotated[str, Doc("The engine that decided: rules, semantic, vllm, openai.")]
    tenant: Annotated[str | None, Doc(TENANT_DOC)] = None
    selected: Annotated[list[str], Doc("What the engine chose, before the default agent was applied.")] = msgspec.field(
        default_factory=list
    )
    dropped: Annotated[list[str], Doc("Names the engine returned that are not in the catalog (dropped).")] = (
        msgspec.field(default_factory=list)
    )
    raw_output: Annotated[
        str | None, Doc("The engine's answer as it gave it (a model's generated text; JSON for the others).")
    ] = None
    latency_ms: Annotated[float, Doc("How long deciding took, in milliseconds.")] = 0.0
    fallback_reason: Annotated[
        str | None, Doc("Why the routes differ from the engine's choice (engine failed, abstained, circuit open).")
    ] = None
    default_used: Annotated[bool, Doc("The catalog's default agent took the turn.")] = False
    abstained: Annotated[
        bool, Doc("The engine chose agents but with confidence under the threshold; the default agent took it.")
    ] = False
    catalog_version: Annotated[str, Doc("A hash of the agent catalog the decision was made with.")] = ""
    model: Annotated[str | None, Doc("The model the engine used, if it has one.")] = None
    confidence: Annotated[float | None, Doc("The engine's confidence in its choice, 0-1 (null: not reported).")] = None
    scores: Annotated[dict[str, float] | None, Doc("Each agent's score, where the engine scores agents.")] = None
    worker: Annotated[str, Doc("Which router worker decided (host:pid/instance).")] = ""
    circuit_open: Annotated[
        list[str],
        Doc(
            "Agents the engine chose whose circuit breaker was open: their turns went to their fallback "
            "agent or the default agent, or were dropped (fallback_reason says which)."
        ),
    ] = msgspec.field(default_factory=list)
    decided_at: Annotated[datetime, Doc("When the decision was made (UTC).")] = msgspec.field(default_factory=utcnow)
    v: Annotated[Version, Doc(V_DOC)] = SCHEMA_VERSION
    reason: Annotated[
        str | None,
        Doc(
            "(v3) Why the engine decided so, in its own terms at decision time: the threshold or rule that "
            "decided (null: written before v3, or an engine that gives none)."
        ),
    ] = None
    variants: Annotated[
        dict[str, str], Doc("(v5) Agent -> the variant its task went to (agents with variants only).")
    ] = msgspec.field(default_factory=dict)
    variant_notes: Annotated[
        dict[str, str],
        Doc("(v5) Agent -> why its variant is not the conversation's pinned one (e.g. rolled back, and why)."),
    ] = msgspec.field(default_factory=dict)
    shadows: Annotated[dict[str, list[str]], Doc("(v5) Agent -> its shadow variants that got a copy of the task.")] = (
        msgspec.field(default_factory=dict)
    )
    catalog_source: Annotated[
        str,
        Doc(
            "(v5) Where the catalog came from: file, or topic (then catalog_version is N:hash, N the version "
            "'routeyard catalog publish' gave it)."
        ),
    ] = ""
    registered: Annotated[
        list[str], Doc("(v5) Routes whose agent came from the agent registry, not from the catalog.")
    ] = msgspec.field(default_factory=list)
    continuation: Annotated[
        str | None,
        Doc(
            "(v5) The agent the turn went back to because its previous message asked the user something and "
            "the turn answers it (null: the engine's choice stood; selected keeps what the engine chose)."
        ),
    ] = None


class PriorReply(msgspec.Struct, frozen=True, kw_only=True):
    """An earlier agent's reply, handed to the next agent in sequential mode."""

    agent: Annotated[str, Doc("The agent that replied.")]
    status: Annotated[ReplyStatus, Doc("ok, or error.")]
    content: Annotated[str, Doc("Its reply text.")]


class AgentTask(msgspec.Struct, frozen=True, kw_only=True):
    """What an agent receives on its topic. Reply with an ``AgentReply`` on ``reply_topic``."""

    task_id: Annotated[str, Doc("This task's id; copy it into the reply.")]
    event_id: Annotated[str, Doc(EVENT_DOC + " Copy it into the reply.")]
    conversation_id: Annotated[str, Doc(CONVERSATION_DOC + " Copy it into the reply.")]
    agent: Annotated[str, Doc("The agent the task is for (the catalog name); copy it into the reply.")]
    messages: Annotated[
        list[Message],
        Doc(
            "The conversation so far as the router keeps it (earlier turns and agents' replies, bounded by the "
            "router's context limits), ending with the turn to handle."
        ),
    ]
    reply_topic: Annotated[str, Doc("Where to publish the AgentReply.")]
    deadline: Annotated[datetime, Doc("When the router stops waiting (UTC): a later reply is not used.")]
    tenant: Annotated[str | None, Doc(TENANT_DOC + " Copy it into the reply.")] = None
    prior_replies: Annotated[
        list[PriorReply], Doc("Sequential mode: the replies of the agents before this one, in order.")
    ] = msgspec.field(default_factory=list)
    step: Annotated[int, Doc("The agent's position in the turn's routes, from 0.")] = 0
    attempt: Annotated[int, Doc("1 for the first attempt; more for retries after an error or a timeout.")] = 1
    metadata: Annotated[dict[str, str], Doc("The event's metadata, unchanged.")] = msgspec.field(default_factory=dict)
    token: Token = ""
    v: Annotated[Version, Doc(V_DOC)] = SCHEMA_VERSION
    stream_topic: Annotated[
        str | None,
        Doc(
            "(v4) Where to publish AgentChunk records while writing the reply, keyed by conversation_id "
            "(null: the sender did not ask for a stream; don't stream)."
        ),
    ] = None
    variant: Annotated[
        str | None, Doc("(v5) The agent's variant this task went to (null: the agent has no variants).")
    ] = None
    shadow: Annotated[
        bool, Doc("(v5) A shadow copy: the reply goes to the shadows topic and never reaches the caller.")
    ] = False
    kind: Annotated[
        TaskKind,
        Doc(
            "(v5) agent: a task for an agent; input_filter / output_filter: a task for a filter of the turn's "
            "chain (answer with verdict, and messages or replies when changed)."
        ),
    ] = "agent"
    filter_notes: Annotated[
        dict[str, str],
        Doc("(v5) Filter tasks only: the notes earlier filters of this turn left (never sent to agents)."),
    ] = msgspec.field(default_factory=dict)


class AgentReply(msgspec.Struct, frozen=True, kw_only=True):
    """An agent's answer to one task. ``task_id``, ``event_id``, ``conversation_id``, ``tenant``,
    ``agent`` and ``token`` are copied from the task; a reply whose token or agent does not match
    its task is refused (dead-lettered, never recorded)."""

    task_id: Annotated[str, Doc("The task's task_id.")]
    event_id: Annotated[str, Doc("The task's event_id.")]
    conversation_id: Annotated[str, Doc("The task's conversation_id; key the record by it.")]
    agent: Annotated[str, Doc("The task's agent.")]
    status: Annotated[ReplyStatus, Doc("ok: content is the answer; error: the agent failed (error says why).")] = "ok"
    content: Annotated[str, Doc("The answer text.")] = ""
    error: Annotated[str | None, Doc("With status error: what went wrong, in one line.")] = None
    tenant: Annotated[str | None, Doc("The task's tenant.")] = None
    finished_at: Annotated[datetime, Doc("When the agent finished (UTC).")] = msgspec.field(default_factory=utcnow)
    token: Token = ""
    retriable: Annotated[
        bool,
        Doc(
            "(v4) With status error: false when another attempt cannot help (an HTTP agent answered 4xx, the "
            "request was refused): the router does not retry it, whatever the agent's retries."
        ),
    ] = True
    v: Annotated[Version, Doc(V_DOC)] = SCHEMA_VERSION
    verdict: Annotated[
        Verdict | None,
        Doc(
            "(v5) A filter's verdict: passed (nothing changed), changed (messages or replies hold the new "
            "text), blocked (the turn stops; content holds the reason). Null from agents."
        ),
    ] = None
    messages: Annotated[list[Message] | None, Doc("(v5) An input filter's changed messages (null: unchanged).")] = None
    replies: Annotated[list[PriorReply] | None, Doc("(v5) An output filter's changed replies (null: unchanged).")] = (
        None
    )
    notes: Annotated[
        dict[str, str], Doc("(v5) A filter's notes, kept for the later filters of the turn (never sent to agents).")
    ] = msgspec.field(default_factory=dict)
    awaiting_input: Annotated[
        bool,
        Doc(
            "(v5) The reply asks the user something and the agent waits for the answer: the conversation's next "
            "turn, if it reads as an answer, goes back to this agent whatever the engine would choose."
        ),
    ] = False


class AgentChunk(msgspec.Struct, frozen=True, kw_only=True):
    """(v4) The next piece of an agent's reply, published to the task's ``stream_topic`` while it writes.

    Best effort: a reader may lose chunks; the final ``AgentReply`` and ``ConversationResponse`` stay the
    durable record (the reply's content is the concatenation of the chunks' text). Key it by
    ``conversation_id`` so a task's chunks stay in order.
    """

    task_id: Annotated[str, Doc("The task's task_id (one attempt of one agent's part of the turn).")]
    event_id: Annotated[str, Doc(EVENT_DOC)]
    conversation_id: Annotated[str, Doc(CONVERSATION_DOC)]
    agent: Annotated[str, Doc("The agent writing the reply (the task's agent).")]
    seq: Annotated[
        int, msgspec.Meta(ge=0), Doc("The chunk's position in its task attempt's stream: 0, 1, 2, ... with no gaps.")
    ]
    text: Annotated[str, Doc("The next piece of the reply (not the text so far); append it to the earlier ones.")]
    attempt: Annotated[
        int, Doc("The task's attempt (1 for the first); chunks of another attempt are a new stream.")
    ] = 1
    tenant: Annotated[str | None, Doc(TENANT_DOC)] = None
    sent_at: Annotated[datetime, Doc("When the agent published the chunk (UTC).")] = msgspec.field(
        default_factory=utcnow
    )
    v: Annotated[Version, Doc(V_DOC)] = SCHEMA_VERSION


class ConversationResponse(msgspec.Struct, frozen=True, kw_only=True):
    """The one response for an event: every agent's reply, correlated.

    status: ``complete`` every selected agent answered ok; ``partial`` some did, others
    errored or timed out; ``failed`` none did; ``no_route`` no agent was selected;
    ``rejected`` (v2) the router refused the turn (``reason`` says why; it was dead-lettered).
    """

    event_id: Annotated[str, Doc(EVENT_DOC)]
    conversation_id: Annotated[str, Doc(CONVERSATION_DOC)]
    status: Annotated[
        ResponseStatus,
        Doc(
            "complete: every routed agent answered ok; partial: some did; failed: none did; no_route: no agent "
            "was chosen; rejected (v2): the router refused the turn (reason says why); blocked (v5): a filter "
            "stopped the turn (reason says why)."
        ),
    ]
    tenant: Annotated[str | None, Doc(TENANT_DOC)] = None
    routes: Annotated[list[str], Doc("The agents the turn was routed to, in order.")] = msgspec.field(
        default_factory=list
    )
    replies: Annotated[list[AgentReply], Doc("Every agent's reply, in route order.")] = msgspec.field(
        default_factory=list
    )
    timed_out: Annotated[list[str], Doc("Agents that did not reply before their deadline.")] = msgspec.field(
        default_factory=list
    )
    skipped: Annotated[list[str], Doc("Sequential mode: agents never run because the chain stopped before them.")] = (
        msgspec.field(default_factory=list)
    )
    created_at: Annotated[datetime | None, Doc("The event's created_at (UTC), for end-to-end time.")] = None
    responded_at: Annotated[datetime, Doc("When the response was published (UTC).")] = msgspec.field(
        default_factory=utcnow
    )
    v: Annotated[Version, Doc(V_DOC)] = SCHEMA_VERSION
    reason: Annotated[
        str | None,
        Doc("With rejected (v2): why, in one line; with blocked or a failed filter (v5): the filter's reason."),
    ] = None
    variants: Annotated[dict[str, str], Doc("(v5) Agent -> the variant that answered (agents with variants).")] = (
        msgspec.field(default_factory=dict)
    )
    filters: Annotated[
        dict[str, str], Doc('(v5) Each filter that ran on the turn: its name -> "passed", "changed" or "blocked".')
    ] = msgspec.field(default_factory=dict)

    @property
    def content(self) -> str:
        """The last successful reply's text (Plano's behaviour: the final agent answers)."""
        ok = [r.content for r in self.replies if r.status == "ok"]
        return ok[-1] if ok else ""


class DeadLetter(msgspec.Struct, frozen=True, kw_only=True):
    """A record that could not be handled, with why and where it came from."""

    original: Annotated[
        bytes,
        Doc(
            "The record's value as read (base64 in JSON): all of it, or its first bytes when truncated "
            "(a dead letter must fit under the broker's record limit)."
        ),
    ]
    error: Annotated[str, Doc("Why it could not be handled.")]
    stage: Annotated[str, Doc("Which step failed: decode, validate, route, correlate, agent, ...")]
    source_topic: Annotated[str, Doc("The topic the record was read from.")]
    source_partition: Annotated[int, Doc("Its partition.")]
    source_offset: Annotated[int, Doc("Its offset.")]
    key: Annotated[bytes | None, Doc("The record's key (base64 in JSON); the dead letter is keyed by it too.")] = None
    error_type: Annotated[str, Doc("The exception's class name, if an exception.")] = ""
    failed_at: Annotated[datetime, Doc("When it was dead-lettered (UTC).")] = msgspec.field(default_factory=utcnow)
    original_size: Annotated[
        int, Doc("The original's full size in bytes (0 in letters written before this field).")
    ] = 0
    original_sha256: Annotated[
        str, Doc('The hex SHA-256 digest of the whole original ("" in letters written before this field).')
    ] = ""
    truncated: Annotated[
        bool, Doc("original (or key) keeps only a prefix: the letter cannot be re-driven byte for byte.")
    ] = False
    v: Annotated[Version, Doc(V_DOC)] = SCHEMA_VERSION


WIRE_MESSAGES: dict[str, type[msgspec.Struct]] = {
    "ConversationEvent": ConversationEvent,
    "RoutingDecision": RoutingDecision,
    "AgentTask": AgentTask,
    "AgentReply": AgentReply,
    "AgentChunk": AgentChunk,
    "ConversationResponse": ConversationResponse,
    "DeadLetter": DeadLetter,
}
