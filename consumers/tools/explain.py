"""``routeyard explain EVENT_ID``: why a turn went where it went, from what the topics recorded.

It reads the decisions topic (and the conversations, responses and dead-letter topics) without a
consumer group and prints, for the event: the turn, the decision - engine, model, catalog
version, why the engine decided so (the threshold or rule that decided, as the engine recorded it
at decision time), what the engine chose and what was applied (default agent, abstention, dropped
names, fallback reason), a model's raw output, confidence and each agent's score, time to decide,
the worker - and how it ended (the response with each filter's verdict - passed, changed or
blocked, never the content - and a block's reason, or the dead letter and its reason).

``--conversation ID`` reads only the partition that conversation's records are on (records are
keyed by conversation id), which is what makes it quick on a large topic.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field

from routeyard.consumers.kafka.aio import as_bus
from routeyard.consumers.kafka.bus import Bus, Consumer, Partition, Record, partition_of
from routeyard.consumers.settings import KafkaSettings
from routeyard.consumers.tools.replay import drain
from routeyard.schemas import (
    ConversationEvent,
    ConversationResponse,
    DeadLetter,
    DecodeError,
    RoutingDecision,
    Topics,
    dead_letter_decoder,
    decision_decoder,
    event_decoder,
    response_decoder,
)

__all__ = ["Explanation", "explain_markdown", "find_event"]

NO_RAW_OUTPUT = frozenset({"rules", "semantic"})
"""Engines whose ``raw_output`` is only their routes as JSON (no model wrote it): not shown."""


@dataclass
class Explanation:
    event_id: str
    event: ConversationEvent | None = None
    decisions: list[RoutingDecision] = field(default_factory=list)
    """Every decision recorded for the event (more than one only if it was decided again)."""
    responses: list[ConversationResponse] = field(default_factory=list)
    dead_letters: list[DeadLetter] = field(default_factory=list)
    read: int = 0

    @property
    def found(self) -> bool:
        return bool(self.event or self.decisions or self.responses or self.dead_letters)


async def find_event(
    kafka: KafkaSettings | Bus, topics: Topics, event_id: str, conversation_id: str | None = None
) -> Explanation:
    names = [topics.conversations, topics.decisions, topics.responses, topics.dead_letters]
    consumer = as_bus(kafka).consumer(None)
    await consumer.start()
    try:
        records = await _read(consumer, names, conversation_id)
    finally:
        await consumer.stop()
    found = Explanation(event_id, read=len(records))
    for record in records:
        _take(found, record, topics)
    return found


async def _read(consumer: Consumer, names: Sequence[str], conversation_id: str | None) -> list[Record]:
    partitions: list[Partition] = []
    for topic in names:
        available = await consumer.partitions_for(topic)  # never creates the topic
        if conversation_id is not None and available and topic != names[-1]:  # dead letters: any partition
            available = [available[partition_of(conversation_id.encode(), len(available))]]
        partitions += available
    if not partitions:
        return []
    consumer.assign(partitions)
    await consumer.seek_to_beginning(partitions)
    return await drain(consumer, partitions, 0.5)


def _take(found: Explanation, record: Record, topics: Topics) -> None:
    if record.value is None:
        return
    needle = found.event_id.encode()
    if record.topic != topics.dead_letters and needle not in record.value:
        return  # cheap filter: the id is in the bytes of every record about the event
    try:
        if record.topic == topics.dead_letters:
            letter = dead_letter_decoder.decode(record.value)
            if needle in letter.original and _event_id(letter.original) in (found.event_id, None):
                found.dead_letters.append(letter)
            return
        decoded = _decode(record.value, record.topic, topics)
    except DecodeError:
        return
    if getattr(decoded, "event_id", None) != found.event_id:
        return
    if isinstance(decoded, ConversationEvent):
        found.event = found.event or decoded
    elif isinstance(decoded, RoutingDecision):
        found.decisions.append(decoded)
    elif isinstance(decoded, ConversationResponse):
        found.responses.append(decoded)


def _decode(value: bytes, topic: str, topics: Topics) -> ConversationEvent | RoutingDecision | ConversationResponse:
    if topic == topics.conversations:
        return event_decoder.decode(value)
    if topic == topics.decisions:
        return decision_decoder.decode(value)
    return response_decoder.decode(value)


def _event_id(original: bytes) -> str | None:
    """The event id of a dead-lettered record, when it has one (it may not even be JSON)."""
    try:
        data = json.loads(original)
    except ValueError:
        return None
    value = data.get("event_id") if isinstance(data, dict) else None
    return value if isinstance(value, str) else None


def explain_markdown(found: Explanation) -> str:
    if not found.found:
        return f"event {found.event_id}: not found ({found.read} records read)"
    lines = [f"# event {found.event_id}"]
    if found.event is not None:
        event = found.event
        user = next((m.content for m in reversed(event.messages) if m.role == "user"), "")
        lines += [
            f"conversation {event.conversation_id}, tenant {event.tenant or '-'}, "
            f"created {event.created_at:%Y-%m-%d %H:%M:%S.%f}",
            f"turn: {user!r}",
        ]
        if event.agents is not None:
            lines.append(f"restricted to: {', '.join(event.agents)}")
    for n, decision in enumerate(found.decisions):
        lines += ["", "## decision" + (f" (again, #{n + 1})" if n else ""), *_decision_lines(decision)]
    if not found.decisions:
        lines += ["", "no decision recorded"]
    for response in found.responses:
        lines += ["", f"## response: {response.status}", *_response_lines(response)]
    for letter in found.dead_letters:
        lines += [
            "",
            f"## dead letter ({letter.stage})",
            f"reason: {letter.error}",
            f"from {letter.source_topic}[{letter.source_partition}]@{letter.source_offset}",
        ]
    return "\n".join(lines)


def _response_lines(response: ConversationResponse) -> list[str]:
    lines = []
    if response.created_at is not None:
        took = (response.responded_at - response.created_at).total_seconds()
        lines.append(f"end to end: {took * 1000:.0f} ms")
    lines += [f"- filter {name}: {verdict}" for name, verdict in response.filters.items()]
    if response.reason and response.status in ("blocked", "failed"):
        lines.append(f"reason: {response.reason}")
    lines += [f"- {r.agent}: {r.status}" + (f" ({r.error})" if r.error else "") for r in response.replies]
    if response.timed_out:
        lines.append(f"timed out: {', '.join(response.timed_out)}")
    return lines


def _decision_lines(d: RoutingDecision) -> list[str]:
    routes = (" -> " if d.mode == "sequential" else ", ").join(d.routes) or "no route"
    lines = [
        f"routes: {routes} ({d.mode})",
        f"engine: {d.engine}"
        + (f", model {d.model}" if d.model else "")
        + f", catalog {d.catalog_version or '?'}"
        + (f" ({d.catalog_source})" if d.catalog_source else ""),
        f"decided in {d.latency_ms:.2f} ms by {d.worker or '?'} at {d.decided_at:%Y-%m-%d %H:%M:%S.%f}",
    ]
    if d.reason:
        lines.append(f"why: {d.reason}")
    lines += [f"continuation: {d.continuation} asked the user something; the turn answers it"] if d.continuation else []
    if d.selected != d.routes:
        lines.append(f"engine chose: {', '.join(d.selected) or 'no route'}")
    if d.default_used:
        lines.append("the catalog's default agent was applied")
    if d.abstained:
        lines.append("abstained: the engine's confidence was under the threshold")
    if d.dropped:
        lines.append(f"dropped (not in the catalog): {', '.join(d.dropped)}")
    lines += [f"from the agent registry: {', '.join(d.registered)}"] if d.registered else []
    if d.fallback_reason:
        lines.append(f"fallback: {d.fallback_reason}")
    if d.confidence is not None:
        lines.append(f"confidence: {d.confidence:.3f}")
    if d.scores:
        ranked = sorted(d.scores.items(), key=lambda kv: -kv[1])
        lines.append("scores: " + ", ".join(f"{name} {score:.3f}" for name, score in ranked))
    if d.raw_output is not None and d.engine not in NO_RAW_OUTPUT:
        lines.append(f"raw output: {json.dumps(d.raw_output)}")
    return lines
