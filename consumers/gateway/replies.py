"""What the gateway reads: its own reply topic, the decisions topic and the streams topic.

Each gateway instance names ``<prefix>gateway.<instance>`` as its events' reply_topic, so it
reads only its own responses. That topic is read in the consumer group of the same name and
committed after each batch was handled: handling stores the response of every pending async turn
in Redis (``TurnStore.finish``) first, so a gateway killed while a turn was running finds the
response when it starts again (the group resumes where the last commit left it), and every
response is stored once. Waiting requests of this process get theirs through a future.

The decisions topic is read without a group from its end, only for the decision line of the
turns waited on here (and kept in Redis beside a kept turn's record, for GET /v1/turns/{id}).

The streams topic (agents' chunks, keyed by conversation) is read the same way, and a chunk is
passed on only when it names a streamed turn waited on here with its tenant and conversation.
Cost: every gateway instance reads every chunk of every streamed turn (N instances read N times
the chunk traffic; a chunk is decoded only while this instance streams a turn at all). That is
fine for a handful of instances; beyond, the event would need to name a per-instance stream
topic, as ``reply_topic`` does for responses (a wire change left for later).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from dataclasses import dataclass, field

from routeyard.consumers.feed import TurnFeed
from routeyard.consumers.kafka.bus import Bus, Consumer, Record, next_offsets
from routeyard.consumers.retry import retrying
from routeyard.consumers.stores.turns import TurnStore
from routeyard.schemas import (
    ConversationEvent,
    ConversationResponse,
    RoutingDecision,
    chunk_decoder,
    decision_decoder,
    encode,
    response_decoder,
)

log = logging.getLogger(__name__)

__all__ = ["Replies", "Waiter"]


@dataclass
class Waiter:
    """One turn waited on in this process."""

    tenant: str | None
    conversation_id: str
    response: asyncio.Future[ConversationResponse]
    decided: asyncio.Event = field(default_factory=asyncio.Event)
    decision: RoutingDecision | None = None
    feed: TurnFeed | None = None
    """A streamed turn's chunks, then its response."""
    keep: bool = False
    """The turn is kept in Redis (async, or timed out): its decision and response are stored there."""


class Replies:
    def __init__(
        self,
        bus: Bus,
        topic: str,
        decisions_topic: str,
        group: str,
        turns: TurnStore,
        wait_ms: int,
        *,
        streams_topic: str,
        keep_s: float,
    ) -> None:
        self.topic = topic
        self._bus, self._decisions_topic, self._group = bus, decisions_topic, group
        self._streams_topic, self._keep_s = streams_topic, keep_s
        self._turns = turns
        self._wait_ms = wait_ms
        self._streamed = 0
        self._waiting: dict[str, Waiter] = {}
        self._consumers: list[Consumer] = []
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        """Create the reply topic if needed, join its group, and start reading both topics."""
        await self._bus.create_topics({self.topic: 1})
        responses = self._bus.consumer(self._group, [self.topic])
        await responses.start()
        self._consumers.append(responses)
        decisions = await self._from_the_end(self._decisions_topic)
        chunks = await self._from_the_end(self._streams_topic)
        self._tasks = [
            asyncio.create_task(self._read_responses(responses)),
            asyncio.create_task(self._read_decisions(decisions)),
            asyncio.create_task(self._read_chunks(chunks)),
        ]

    async def _from_the_end(self, topic: str) -> Consumer:
        consumer = self._bus.consumer(None)
        await consumer.start()
        self._consumers.append(consumer)
        partitions = await consumer.partitions_for(topic)
        consumer.assign(partitions)
        await consumer.seek_to_end(partitions)
        for tp in partitions:
            await consumer.position(tp)
        return consumer

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []
        for consumer in reversed(self._consumers):
            await consumer.stop()
        self._consumers = []
        for waiter in self._waiting.values():
            waiter.response.cancel()

    def failed(self) -> BaseException | None:
        """The error a reader died of (the gateway is then not ready)."""
        for task in self._tasks:
            if task.done() and not task.cancelled() and task.exception() is not None:
                return task.exception()
        return None

    def expect(self, event: ConversationEvent, *, stream: bool = False, keep: bool = False) -> Waiter:
        """Wait for ``event``'s response (call before publishing it); ``forget`` when done.
        ``stream``: collect its chunks too (``waiter.feed``); ``keep``: a kept (async) turn whose
        record exists: its decision and response go to Redis, and it is forgotten by itself."""
        loop = asyncio.get_running_loop()
        waiter = Waiter(event.tenant, event.conversation_id, loop.create_future(), keep=keep)
        if stream:
            waiter.feed = TurnFeed()
            self._streamed += 1
        self._waiting[event.event_id] = waiter
        if keep:
            loop.call_later(self._keep_s, self.drop, event.event_id, waiter)
        return waiter

    def forget(self, event_id: str) -> None:
        waiter = self._waiting.get(event_id)
        if waiter is not None and not waiter.keep:
            self.drop(event_id, waiter)

    def drop(self, event_id: str, waiter: Waiter) -> None:
        if self._waiting.get(event_id) is waiter:
            del self._waiting[event_id]
            if waiter.feed is not None:
                self._streamed -= 1

    async def keep(self, event_id: str) -> None:
        """Keep a waited-on turn that was not answered in time: record it as pending, and store
        its decision and response, now if they came, or when they come."""
        waiter = self._waiting.get(event_id)
        if waiter is None:
            return
        await self._turns.pending(waiter.tenant, event_id)
        waiter.keep = True  # from here on the readers store what comes; before, it is stored here
        asyncio.get_running_loop().call_later(self._keep_s, self.drop, event_id, waiter)
        if waiter.decision is not None:
            await self._turns.decide(waiter.tenant, event_id, encode(waiter.decision))
        if waiter.response.done() and not waiter.response.cancelled():
            await self._turns.finish([(waiter.tenant, event_id, encode(waiter.response.result()))])

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    async def _read_responses(self, consumer: Consumer) -> None:
        while True:
            records = await consumer.fetch(max_records=500, timeout_ms=self._wait_ms)
            if not records:
                continue
            responses = [r for r in map(_response, records) if r is not None]
            # Turns waited on here and not kept are answered by now: only the others may be pending
            # (async, timed out, or of the process before a restart), so the Redis call is theirs alone.
            finished = [(r.tenant, r.event_id, value) for r, value in responses if self._kept(r.event_id)]
            await self._store(finished)
            stored = {event_id for _, event_id, _ in finished}
            late = [
                (r.tenant, r.event_id, value)
                for r, value in responses
                if self._answer(r) and r.event_id not in stored  # kept meanwhile (Replies.keep)
            ]
            await self._store(late)
            await consumer.commit(next_offsets(records))

    def _kept(self, event_id: str) -> bool:
        waiter = self._waiting.get(event_id)
        return waiter is None or waiter.keep

    async def _store(self, finished: list[tuple[str | None, str, bytes]]) -> None:
        if finished:
            await retrying(functools.partial(self._turns.finish, finished), what="gateway turns")

    def _answer(self, response: ConversationResponse) -> bool:
        """Hand the response to its waiter; True if that turn is kept (store it)."""
        waiter = self._waiting.get(response.event_id)
        if waiter is None:
            return False
        if waiter.response.cancelled():  # its request timed out a moment ago: ``keep`` stores what is set here
            waiter.response = asyncio.get_running_loop().create_future()
        if waiter.response.done():
            return False
        if (waiter.tenant, waiter.conversation_id) != (response.tenant or None, response.conversation_id):
            log.warning("ignored a response for event %s with another tenant or conversation", response.event_id)
            return False
        waiter.response.set_result(response)
        if waiter.feed is not None:
            waiter.feed.put(response)
        if waiter.keep:
            self.drop(response.event_id, waiter)
        return waiter.keep

    async def _read_decisions(self, consumer: Consumer) -> None:
        while True:
            for record in await consumer.fetch(max_records=500, timeout_ms=self._wait_ms):
                try:
                    decision = decision_decoder.decode(record.value or b"")
                except Exception:  # a bad record is skipped; the reader never dies of one
                    log.warning(
                        "skipped an unreadable decision at %s[%d]@%d", record.topic, record.partition, record.offset
                    )
                    continue
                waiter = self._waiting.get(decision.event_id)
                if waiter is not None and waiter.tenant == (decision.tenant or None):
                    waiter.decision = decision
                    waiter.decided.set()
                    if waiter.keep:
                        value = record.value or b""
                        store = functools.partial(self._turns.decide, waiter.tenant, decision.event_id, value)
                        await retrying(store, what="gateway turns")

    async def _read_chunks(self, consumer: Consumer) -> None:
        while True:
            records = await consumer.fetch(max_records=500, timeout_ms=self._wait_ms)
            if not self._streamed:
                continue  # no streamed turn here: nothing to decode
            for record in records:
                try:
                    chunk = chunk_decoder.decode(record.value or b"")
                except Exception:  # a bad record is skipped; the reader never dies of one
                    where = (record.topic, record.partition, record.offset)
                    log.warning("skipped an unreadable chunk at %s[%d]@%d", *where)
                    continue
                waiter = self._waiting.get(chunk.event_id)
                if waiter is None or waiter.feed is None:
                    continue
                if (waiter.tenant, waiter.conversation_id) != (chunk.tenant or None, chunk.conversation_id):
                    log.warning("ignored a chunk for event %s with another tenant or conversation", chunk.event_id)
                    continue
                waiter.feed.chunk(chunk)


def _response(record: Record) -> tuple[ConversationResponse, bytes] | None:
    value = record.value or b""
    try:
        return response_decoder.decode(value), value
    except Exception:  # a bad record is skipped; the reader never dies of one
        log.warning("skipped an unreadable response at %s[%d]@%d", record.topic, record.partition, record.offset)
        return None
