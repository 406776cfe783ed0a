"""``routeyard variants report AGENT``: how an agent's variants compare, from what the topics recorded.

Reads the decisions, responses and shadows topics from the beginning (no consumer group) and
prints per variant: turns, ok / error / timeout rates, and reply latency p50 / p99 (the decision
-> the agent's reply finished); for shadow variants, how often their reply agrees with the
served one: the normalised texts (case and whitespace folded) are equal, or the token Jaccard
similarity is at least 0.6.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

from routeyard.consumers.kafka.aio import as_bus
from routeyard.consumers.kafka.bus import Bus, Partition, Record
from routeyard.consumers.settings import KafkaSettings
from routeyard.consumers.tools.replay import drain
from routeyard.schemas import (
    AgentReply,
    ConversationResponse,
    DecodeError,
    RoutingDecision,
    Topics,
    decision_decoder,
    reply_decoder,
    response_decoder,
)

__all__ = ["Row", "agrees", "read_topics", "report", "report_text"]

AGREE_JACCARD = 0.6
_TOKEN = re.compile(r"\w+")


@dataclass
class Row:
    variant: str
    shadow: bool = False
    outcomes: dict[str, int] = field(default_factory=lambda: {"ok": 0, "error": 0, "timeout": 0})
    latencies: list[float] = field(default_factory=list)
    compared: int = 0
    agreed: int = 0

    @property
    def turns(self) -> int:
        return sum(self.outcomes.values())


def agrees(a: str, b: str) -> bool:
    """Normalised texts equal, or token Jaccard similarity >= 0.6."""
    if " ".join(a.lower().split()) == " ".join(b.lower().split()):
        return True
    x, y = set(_TOKEN.findall(a.lower())), set(_TOKEN.findall(b.lower()))
    return bool(x | y) and len(x & y) / len(x | y) >= AGREE_JACCARD


def report(
    agent: str,
    decisions: Sequence[RoutingDecision],
    responses: Sequence[ConversationResponse],
    shadows: Sequence[AgentReply],
    since: datetime | None = None,
) -> list[Row]:
    decided = {d.event_id: d for d in decisions if agent in d.variants and (since is None or d.decided_at >= since)}
    rows: dict[str, Row] = {}
    served: dict[str, str] = {}
    for r in responses:
        variant = r.variants.get(agent)
        if variant is None or r.event_id not in decided:
            continue
        row = rows.setdefault(variant, Row(variant))
        reply = next((x for x in r.replies if x.agent == agent), None)
        kind = "timeout" if agent in r.timed_out or reply is None else reply.status
        row.outcomes[kind] = row.outcomes.get(kind, 0) + 1
        if reply is not None:
            row.latencies.append((reply.finished_at - decided[r.event_id].decided_at).total_seconds())
            if reply.status == "ok":
                served[r.event_id] = reply.content
    for s in shadows:
        if s.agent != agent or s.event_id not in decided:
            continue
        variant = s.task_id.rpartition(":")[2]
        row = rows.setdefault(variant, Row(variant, shadow=True))
        row.outcomes[s.status] += 1
        row.latencies.append((s.finished_at - decided[s.event_id].decided_at).total_seconds())
        if s.event_id in served and s.status == "ok":
            row.compared += 1
            row.agreed += agrees(s.content, served[s.event_id])
    return sorted(rows.values(), key=lambda r: (r.shadow, r.variant))


def _pct(values: list[float], q: float) -> str:
    if not values:
        return "-"
    ordered = sorted(values)
    return f"{ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000:.0f} ms"


def report_text(agent: str, rows: Sequence[Row]) -> str:
    if not rows:
        return f"no turns of {agent} with variants found"
    lines = [f"{agent}: variant, turns, ok, error, timeout, reply p50, p99, shadow agreement"]
    for r in rows:
        n = max(1, r.turns)
        rates = ", ".join(f"{k} {r.outcomes.get(k, 0) / n:.1%}" for k in ("ok", "error", "timeout"))
        agree = f", agrees {r.agreed}/{r.compared} ({r.agreed / max(1, r.compared):.0%})" if r.shadow else ""
        name = f"{r.variant} (shadow)" if r.shadow else r.variant
        lines.append(
            f"  {name}: {r.turns} turns, {rates}, p50 {_pct(r.latencies, 0.5)}, p99 {_pct(r.latencies, 0.99)}{agree}"
        )
    return "\n".join(lines)


async def read_topics(
    kafka: KafkaSettings | Bus, topics: Topics
) -> tuple[list[RoutingDecision], list[ConversationResponse], list[AgentReply]]:
    consumer = as_bus(kafka).consumer(None)
    await consumer.start()
    try:
        partitions: list[Partition] = []
        for name in (topics.decisions, topics.responses, topics.shadows):
            partitions += await consumer.partitions_for(name)
        records: list[Record] = []
        if partitions:
            consumer.assign(partitions)
            await consumer.seek_to_beginning(partitions)
            records = await drain(consumer, partitions, 0.5)
    finally:
        await consumer.stop()
    decisions, responses, shadows = [], [], []
    for record in records:
        try:
            if record.topic == topics.decisions:
                decisions.append(decision_decoder.decode(record.value or b""))
            elif record.topic == topics.responses:
                responses.append(response_decoder.decode(record.value or b""))
            else:
                shadows.append(reply_decoder.decode(record.value or b""))
        except DecodeError:
            continue  # not ours to judge here: the report counts what it can read
    return decisions, responses, shadows
