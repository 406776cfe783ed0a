"""``routeyard replay``: route recorded traffic again with a candidate engine or catalog (shadow testing).

    async with build_engine(candidate_settings) as engine:
        report = await replay(settings, engine, catalog, Selection(since=since, limit=500), labels=labels)
    print(replay_markdown(report))                          # routeyard.consumers.tools.replay_report

Reads ``<prefix>conversations``, ``decisions`` and ``responses`` (and any other ``reply_topic`` the
events name) without a consumer group, so no live group moves: every partition assigned, read from
the beginning until caught up (nothing came for ``settle_s`` and every position reached the high
watermark the fetches reported; tansu's ListOffsets is never asked). The stream is each partition
in offset order, merged by record timestamp; a ``Selection`` keeps the records in ``[since,
until)``, then skips ``skip`` and keeps ``limit``; an event id seen before is not replayed. Each
turn is routed as the router worker routes it (``routeyard.consumers.tools.replay_report.rebuild_contexts`` for
the context; ``routeyard.router.plan`` for the default agent and the decision).

Nothing is published unless ``dispatch_prefix`` is given: the selected events then go, unchanged,
to that prefix's conversations topic for a shadow pipeline (never the live prefix; a
``reply_topic`` is cleared, so shadow responses cannot reach a live client's topic).

Errors::

    ReplayError     bad options (negative or inverted selection, a refused dispatch prefix).
                    Not retriable: fix the options.
    LabelsError     (routeyard.consumers.tools.replay_report) a malformed labels file. Not retriable.
    EngineDead      the candidate engine died; propagates.
"""

from __future__ import annotations

import heapq
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TypeVar

import msgspec
from routeyard.consumers.errors import ReplayError as ReplayError
from routeyard.consumers.kafka.aio import as_bus
from routeyard.consumers.kafka.bus import Bus, Consumer, Outgoing, Partition, Record
from routeyard.consumers.settings import KafkaSettings, Settings
from routeyard.consumers.tools.replay_report import (
    Entry,
    ReadStats,
    ReplayReport,
    TurnComparison,
    compare,
    rebuild_contexts,
    score_labels,
    summarize,
)
from routeyard.router.catalog import Catalog
from routeyard.router.continuation import continue_turn
from routeyard.router.engines.base import DecisionEngine, RoutingRequest
from routeyard.router.plan import decide_routes, make_decision
from routeyard.router.validation import InvalidEvent, validate
from routeyard.schemas import (
    DecodeError,
    Message,
    RoutingDecision,
    Topics,
    decision_decoder,
    encode,
    event_decoder,
    response_decoder,
    valid_topic,
)

log = logging.getLogger(__name__)

_FETCH_MS = 100
_MAX_RECORDS = 1000
_PATIENCE_S = 30.0
"""How long to wait for partitions short of their high watermark before giving up on them."""
_T = TypeVar("_T")


class Selection(msgspec.Struct, frozen=True, kw_only=True):
    """Which turns: record timestamps in ``[since, until)`` (naive = UTC), then ``skip``, ``limit``."""

    since: datetime | None = None
    until: datetime | None = None
    skip: int = 0
    limit: int | None = None

    def check(self) -> None:
        if self.skip < 0 or (self.limit is not None and self.limit < 0):
            raise ReplayError("skip and limit must not be negative")
        if self.since and self.until and _ms(self.since) >= _ms(self.until):
            raise ReplayError(f"since ({self.since.isoformat()}) is not before until ({self.until.isoformat()})")

    def pick(self, entries: Sequence[Entry]) -> list[Entry]:
        low, high = (_ms(t) if t else None for t in (self.since, self.until))
        inside = [e for e in entries if (low is None or e.timestamp >= low) and (high is None or e.timestamp < high)]
        return inside[self.skip : None if self.limit is None else self.skip + self.limit]


def _ms(moment: datetime) -> int:
    return int((moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp() * 1000)


@dataclass(frozen=True, slots=True)
class Recorded:
    """What the live pipeline left on its topics."""

    entries: list[Entry]
    decisions: dict[str, RoutingDecision]
    replies: dict[str, list[Message]]
    """Event id -> its agents' ok replies, the assistant messages the correlator appended."""
    stats: ReadStats
    partitions: int


# -- reading --------------------------------------------------------------------------------------


async def read_topics(
    kafka: KafkaSettings | Bus, topics: Sequence[str], *, settle_s: float = 1.0
) -> dict[str, list[Record]]:
    """Every record of ``topics`` (none for a missing topic), read without a consumer group."""
    consumer = as_bus(kafka).consumer(None)
    await consumer.start()
    try:
        partitions = [p for t in topics for p in await consumer.partitions_for(t)]
        found: dict[str, list[Record]] = {t: [] for t in topics}
        if partitions:
            consumer.assign(partitions)
            await consumer.seek_to_beginning(partitions)
            for record in await drain(consumer, partitions, settle_s):
                found[record.topic].append(record)
        return found
    finally:
        await consumer.stop()


async def drain(consumer: Consumer, partitions: list[Partition], settle_s: float) -> list[Record]:
    """Every record of the assigned ``partitions`` up to their high watermarks (quiet ``settle_s`` first)."""
    records: list[Record] = []
    quiet_since = time.monotonic()
    while True:
        batch = await consumer.fetch(max_records=_MAX_RECORDS, timeout_ms=_FETCH_MS)
        records += batch
        quiet_since = time.monotonic() if batch else quiet_since
        quiet = time.monotonic() - quiet_since
        if batch or quiet < settle_s:
            continue
        lagging = [tp for tp in partitions if not await _caught_up(consumer, tp)]
        if not lagging:
            return records
        if quiet >= _PATIENCE_S:
            log.warning("replay: stopped reading with %s short of their high watermark", lagging)
            return records


async def _caught_up(consumer: Consumer, tp: Partition) -> bool:
    highwater = consumer.highwater(tp)  # from fetch responses: right on tansu, unlike ListOffsets
    return highwater is not None and await consumer.position(tp) >= highwater


def stream(records: Sequence[Record]) -> list[Record]:
    """Each partition in offset order, the partitions merged by record timestamp."""
    by_partition: dict[int, list[Record]] = {}
    for record in records:
        by_partition.setdefault(record.partition, []).append(record)
    ordered = [sorted(rs, key=lambda r: r.offset) for _, rs in sorted(by_partition.items())]
    return list(heapq.merge(*ordered, key=lambda r: r.timestamp))


async def read_recorded(kafka: KafkaSettings | Bus, topics: Topics, *, settle_s: float = 1.0) -> Recorded:
    found = await read_topics(kafka, [topics.conversations, topics.decisions, topics.responses], settle_s=settle_s)
    conversations = found[topics.conversations]
    events = _decoded(stream(conversations), event_decoder.decode)
    first: dict[str, Entry] = {}
    for record, event in events:
        first.setdefault(event.event_id, Entry(event, record))
    entries = list(first.values())
    responses = found[topics.responses]
    elsewhere = sorted({e.event.reply_topic for e in entries if e.event.reply_topic} - {topics.responses})
    if elsewhere:
        responses += [r for rs in (await read_topics(kafka, elsewhere, settle_s=settle_s)).values() for r in rs]
    replies: dict[str, list[Message]] = {}
    for _, response in _decoded(responses, response_decoder.decode):
        said = [
            Message(role="assistant", content=r.content, name=r.agent, awaiting_input=r.awaiting_input)
            for r in response.replies
            if r.status == "ok"
        ]
        replies.setdefault(response.event_id, [m for m in said if m.content])
    decisions: dict[str, RoutingDecision] = {}
    for _, decision in _decoded(found[topics.decisions], decision_decoder.decode):
        decisions.setdefault(decision.event_id, decision)
    undecodable, duplicates = len(conversations) - len(events), len(events) - len(entries)
    stats = ReadStats(prefix=topics.prefix, read=len(conversations), undecodable=undecodable, duplicates=duplicates)
    partitions = len({r.partition for r in conversations}) or 1
    return Recorded(entries=entries, decisions=decisions, replies=replies, stats=stats, partitions=partitions)


def _decoded(records: Sequence[Record], decode: Callable[[bytes], _T]) -> list[tuple[Record, _T]]:
    decoded: list[tuple[Record, _T]] = []
    for record in records:
        try:
            decoded.append((record, decode(record.value or b"")))
        except DecodeError:
            log.warning("replay: undecodable record %s[%d]@%d", record.topic, record.partition, record.offset)
    return decoded


# -- routing again --------------------------------------------------------------------------------


def rejection(entry: Entry, catalog: Catalog, max_bytes: int) -> str | None:
    """Why the router would dead-letter the event with ``catalog`` (None: it would route it)."""
    if len(entry.record.value or b"") > max_bytes:
        return f"event is larger than {max_bytes} bytes"
    try:
        validate(entry.event, catalog)
    except InvalidEvent as exc:
        return str(exc)
    return None


async def decide(
    settings: Settings, engine: DecisionEngine, catalog: Catalog, turns: Sequence[tuple[Entry, list[Message]]]
) -> list[RoutingDecision]:
    """Decide (entry, context) pairs in batches of ``router.max_batch``, as the router worker does."""
    cfg = settings.router
    decisions: list[RoutingDecision] = []
    for start in range(0, len(turns), cfg.max_batch):
        batch = turns[start : start + cfg.max_batch]
        requests = [
            RoutingRequest(event_id=e.event.event_id, conversation=ctx, agents=catalog.restrict(e.event.agents))
            for e, ctx in batch
        ]
        began = time.perf_counter()
        results = await engine.decide(requests)
        latency_ms = (time.perf_counter() - began) * 1000 / len(batch)
        for (entry, _), request, result in zip(batch, requests, results, strict=True):
            routing = decide_routes(result, request.agents, catalog, min_confidence=cfg.min_confidence)
            if cfg.continuation:
                routing = continue_turn(routing, result, request, override=cfg.continuation_override)
            decisions.append(
                make_decision(
                    entry.event,
                    routing,
                    result,
                    engine=engine.name,
                    mode=entry.event.mode or cfg.mode,
                    catalog_version=catalog.version,
                    latency_ms=latency_ms,
                    decided_at=datetime.now(UTC),
                    worker="replay",
                )
            )
    return decisions


# -- the whole replay -----------------------------------------------------------------------------


async def replay(
    settings: Settings,
    engine: DecisionEngine,
    catalog: Catalog,
    selection: Selection | None = None,
    *,
    labels: Mapping[str, list[str]] | None = None,
    dispatch_prefix: str | None = None,
    settle_s: float = 1.0,
    bus: Bus | None = None,
) -> ReplayReport:
    """Replay the turns ``selection`` picks from ``settings.topic_prefix``'s topics with ``engine``
    (started) and ``catalog``; compare with the recorded decisions; score both against ``labels``."""
    selection = selection or Selection()
    selection.check()
    shadow = shadow_topics(settings.topic_prefix, dispatch_prefix) if dispatch_prefix is not None else None
    recorded = await read_recorded(bus or settings.kafka, settings.topics, settle_s=settle_s)
    if not recorded.stats.read:
        log.warning("replay: nothing on %s", settings.topics.conversations)
    chosen = selection.pick(recorded.entries)
    turns = await _route_again(settings, engine, catalog, recorded, chosen, labels or {})
    dispatched = await dispatch(bus or settings.kafka, shadow, chosen, recorded.partitions) if shadow else 0
    candidate = f"{engine.name}, catalog {catalog.version}"
    dispatch_topic = shadow.conversations if shadow else None
    summary = summarize(turns, recorded.stats, candidate=candidate, dispatch=(dispatch_topic, dispatched))
    return ReplayReport(summary=summary, turns=turns, scores=score_labels(turns))


async def _route_again(
    settings: Settings,
    engine: DecisionEngine,
    catalog: Catalog,
    recorded: Recorded,
    chosen: Sequence[Entry],
    labels: Mapping[str, list[str]],
) -> list[TurnComparison]:
    cfg = settings.router
    rejected = {e.event.event_id: rejection(e, catalog, cfg.max_event_bytes) for e in recorded.entries}

    def kept(entry: Entry) -> bool:
        return entry.event.event_id in recorded.decisions or rejected[entry.event.event_id] is None

    ids = [e.event.event_id for e in chosen]
    contexts = rebuild_contexts(
        recorded.entries, set(ids), recorded.replies, kept, size=cfg.context_max_messages, ttl_s=cfg.context_ttl_s
    )
    routable = [(e, contexts[i]) for e, i in zip(chosen, ids, strict=True) if rejected[i] is None]
    decided = {d.event_id: d for d in await decide(settings, engine, catalog, routable)}
    return [
        compare(e, contexts[i], recorded.decisions.get(i), decided.get(i) or rejected[i] or "?", labels.get(i))
        for e, i in zip(chosen, ids, strict=True)
    ]


# -- dispatching to a shadow pipeline -------------------------------------------------------------


def shadow_topics(live_prefix: str, prefix: str) -> Topics:
    """The shadow pipeline's topics; refuses the live prefix."""
    shadow = Topics(prefix=prefix)
    if shadow.conversations == Topics(prefix=live_prefix).conversations:
        raise ReplayError(f"refusing to dispatch to the live prefix {live_prefix!r}: name a shadow pipeline's prefix")
    if not valid_topic(shadow.conversations):
        raise ReplayError(f"dispatch prefix {prefix!r} does not make a valid topic name")
    return shadow


async def dispatch(kafka: KafkaSettings | Bus, shadow: Topics, entries: Sequence[Entry], partitions: int) -> int:
    """Republish ``entries`` to the shadow conversations topic; returns how many."""
    bus = as_bus(kafka)
    await bus.create_topics({shadow.conversations: partitions})
    producer = bus.producer()
    await producer.start()
    try:
        await producer.publish([_republished(e, shadow.conversations) for e in entries])
    finally:
        await producer.stop()
    return len(entries)


def _republished(entry: Entry, topic: str) -> Outgoing:
    record, event = entry.record, entry.event
    value = record.value or b""
    if event.reply_topic is not None:  # a live client's topic: the shadow pipeline must not answer there
        value = encode(msgspec.structs.replace(event, reply_topic=None))
    key = record.key.decode(errors="replace") if record.key is not None else None
    return Outgoing(topic=topic, value=value, key=key, headers=list(record.headers) or None)
