"""Rejection: an event the router refuses ends as its dead letter (the operator's record, for
``routeyard dlq``) and, where the sender can be answered, one ``rejected`` response.

Each is published once. A dead letter's identity is its source topic/partition/offset; a
rejected response's is its tenant and event id (an event published twice is answered once).
Markers in Redis (``CorrelationStore.sent_key``) are checked before publishing and set after,
for ``dedup_ttl_s``. What remains at least once: a process that dies after publishing and before
its markers are written publishes them again when its batch is redone (a window of one Redis
write; a consumer keying dead letters by source offset, or responses by event id, sees one).

Who can be answered: an event whose ids can still be read (the whole event, or for JSON that
is not a valid event a lenient read of just ``event_id``, ``conversation_id``, ``tenant`` and
``reply_topic``), ids of 1-256 characters. The answer goes to the event's ``reply_topic`` when
that is a valid topic the router may answer on, else to the responses topic.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

import msgspec
from routeyard.consumers.kafka.bus import Outgoing, Producer, Record, dead_letter
from routeyard.consumers.stores.correlations import CorrelationStore
from routeyard.schemas import ConversationEvent, ConversationResponse, Topics, encode

log = logging.getLogger(__name__)

MAX_ID_LENGTH = 256
MAX_REASON = 500


class Sender(msgspec.Struct, frozen=True):
    """The fields of an event that say who to answer and where (read leniently: anything else,
    of any shape, is skipped)."""

    event_id: Any = None
    conversation_id: Any = None
    tenant: Any = None
    reply_topic: Any = None


_sender_decoder = msgspec.json.Decoder(Sender)


class Rejected(msgspec.Struct, frozen=True):
    """A record the router refuses, why, and the event if it decoded."""

    record: Record
    error: BaseException | str
    event: ConversationEvent | None = None
    stage: str = "decode"


def sender_of(item: Rejected) -> Sender | None:
    """Who sent the refused event, if it can be told; None: only a dead letter."""
    if item.event is not None:
        e = item.event
        sender = Sender(e.event_id, e.conversation_id, e.tenant, e.reply_topic)
    else:
        try:
            sender = _sender_decoder.decode(item.record.value or b"")
        except Exception:  # any failure to read it, however deep or odd: nobody to answer
            return None
    if not all(_id(v) for v in (sender.event_id, sender.conversation_id)):
        return None
    tenant = sender.tenant if isinstance(sender.tenant, str) and len(sender.tenant) <= MAX_ID_LENGTH else None
    reply_topic = sender.reply_topic if isinstance(sender.reply_topic, str) else None
    return Sender(sender.event_id, sender.conversation_id, tenant, reply_topic)


def _id(value: object) -> bool:
    return isinstance(value, str) and 0 < len(value) <= MAX_ID_LENGTH


class Rejecter:
    def __init__(
        self,
        producer: Producer,
        store: CorrelationStore,
        topics: Topics,
        *,
        may_answer_on: Callable[[str], bool],
        answer_topic: Callable[[str | None], str] | None = None,
    ) -> None:
        self._producer = producer
        self._store = store
        self._topics = topics
        self._may_answer_on = may_answer_on
        """Whether a sender's ``reply_topic`` may carry its answer (valid, not routeyard's own)."""
        self._answer_topic = answer_topic or (lambda tenant: topics.responses)
        """Where a tenant's answers go when its event names no usable reply_topic."""

    async def reject(self, items: Sequence[Rejected]) -> int:
        """Publish each item's dead letter and rejected response not published before; returns
        how many dead letters went out."""
        records: dict[str, Outgoing] = {}
        letters: set[str] = set()
        for item in items:
            r = item.record
            key = self._store.sent_key("dead", r.topic, r.partition, r.offset)
            records.setdefault(key, self._letter(item))
            letters.add(key)
            sender = sender_of(item)
            if sender is not None:
                key = self._store.sent_key("rejected", sender.tenant, sender.event_id)
                records.setdefault(key, self._answer(item, sender))
        keys = list(records)
        fresh = [key for key, sent in zip(keys, await self._store.sent(keys), strict=True) if not sent]
        if fresh:
            await self._producer.publish([records[key] for key in fresh])
            await self._store.mark_sent(fresh)
        return len(letters.intersection(fresh))

    def _letter(self, item: Rejected) -> Outgoing:
        return dead_letter(item.record, self._topics.dead_letters, stage=item.stage, error=item.error)

    def _answer(self, item: Rejected, sender: Sender) -> Outgoing:
        topic = sender.reply_topic if sender.reply_topic and self._may_answer_on(sender.reply_topic) else None
        reason = " ".join(str(item.error).split())[:MAX_REASON]
        response = ConversationResponse(
            event_id=sender.event_id,
            conversation_id=sender.conversation_id,
            tenant=sender.tenant,
            status="rejected",
            reason=reason,
        )
        topic = topic or self._answer_topic(sender.tenant)
        return Outgoing(topic=topic, value=encode(response), key=sender.conversation_id)
