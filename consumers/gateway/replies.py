"""What the gateway reads: its own reply topic and the decisions topic.

Each gateway instance names ``<prefix>gateway.<instance>`` as its events' reply_topic, so it
reads only its own responses. That topic is read in the consumer group of the same name and
committed after each batch was handled: handling stores the response of every pending async turn
in Redis (``TurnStore.finish``) first, so a gateway killed while a turn was running finds the
response when it starts again (the group resumes where the last commit left it), and every
response is stored once. Waiting requests of this process get theirs through a future.

The decisions topic is read without a group from its end, only for the decision line of the
turns waited on here.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from dataclasses import dataclass, field

from routeyard.consumers.kafka.bus import Bus, Consumer, Record, next_offsets
from routeyard.consumers.retry import retrying
from routeyard.consumers.stores.turns import TurnStore
from routeyard.schemas import (
    ConversationEvent,
    ConversationResponse,
    RoutingDecision,
    decision_decoder,
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


class Replies:
    def __init__(self, bus: Bus, topic: str, decisions_topic: str, group: str, turns: TurnStore, wait_ms: int) -> None:
        self.topic = topic
        self._bus, self._decisions_topic, self._group = bus, decisions_topic, group
        self._turns = turns
        self._wait_ms = wait_ms
        self._waiting: dict[str, Waiter] = {}
        self._consumers: list[Consumer] = []
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        """Create the reply topic if needed, join its group, and start reading both topics."""
        await self._bus.create_topics({self.topic: 1})
        responses = self._bus.consumer(self._group, [self.topic])
        decisions = self._bus.consumer(None)
        for consumer in (responses, decisions):
            await consumer.start()
            self._consumers.append(consumer)
        partitions = await decisions.partitions_for(self._decisions_topic)
        decisions.assign(partitions)
        await decisions.seek_to_end(partitions)
        for tp in partitions:
            await decisions.position(tp)
        self._tasks = [
            asyncio.create_task(self._read_responses(responses)),
            asyncio.create_task(self._read_decisions(decisions)),
        ]

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

    def expect(self, event: ConversationEvent) -> Waiter:
        """Wait for ``event``'s response (call before publishing it); ``forget`` when done."""
        future: asyncio.Future[ConversationResponse] = asyncio.get_running_loop().create_future()
        waiter = Waiter(event.tenant, event.conversation_id, future)
        self._waiting[event.event_id] = waiter
        return waiter

    def forget(self, event_id: str) -> None:
        self._waiting.pop(event_id, None)

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    async def _read_responses(self, consumer: Consumer) -> None:
        while True:
            records = await consumer.fetch(max_records=500, timeout_ms=self._wait_ms)
            if not records:
                continue
            responses = [r for r in map(_response, records) if r is not None]
            # Turns waited on here are synchronous: only the others may be pending async turns
            # (of this process, or of the one before a restart), so the Redis call is theirs alone.
            finished = [(r.tenant, r.event_id, value) for r, value in responses if r.event_id not in self._waiting]
            if finished:
                await retrying(functools.partial(self._turns.finish, finished), what="gateway turns")
            for response, _ in responses:
                self._answer(response)
            await consumer.commit(next_offsets(records))

    def _answer(self, response: ConversationResponse) -> None:
        waiter = self._waiting.get(response.event_id)
        if waiter is None or waiter.response.done():
            return
        if (waiter.tenant, waiter.conversation_id) != (response.tenant or None, response.conversation_id):
            log.warning("ignored a response for event %s with another tenant or conversation", response.event_id)
            return
        waiter.response.set_result(response)

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


def _response(record: Record) -> tuple[ConversationResponse, bytes] | None:
    value = record.value or b""
    try:
        return response_decoder.decode(value), value
    except Exception:  # a bad record is skipped; the reader never dies of one
        log.warning("skipped an unreadable response at %s[%d]@%d", record.topic, record.partition, record.offset)
        return None
