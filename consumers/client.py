"""A small async client for existing services: publish a turn, await its response.

    async with RouteyardClient("kafka:9092") as client:
        response = await client.ask("conv-42", "What's the weather in Paris?")
        print(response.status, response.content)

Request/reply over the topics: the client reads the responses topic (or its own reply topic, or
with ``tenant_topic`` its tenant's ``<prefix>responses.<tenant>``) without a consumer group, from
about the end, and matches responses to requests by event id, tenant and conversation id: a
response that carries an awaited event id but another tenant or conversation is ignored (logged
at WARNING, without content) and the real one is still awaited.
Any Kafka client in any language can do the same with the exported JSON Schema.

``stream`` publishes a turn that asks for its agents' replies as they are written and yields, as
they arrive, its decision (with ``watch_decisions``), its agents' ``AgentChunk``s (in order
within each task attempt; agents interleave) and last its response (see ``consumers/feed.py``).

Errors of ``ask`` and ``stream``: ``TurnRejected`` (the router refused the turn and said why, at once: a
``rejected`` response) and ``TurnTimeout`` (a ``TimeoutError``: no response in time; it names
the event ids, for ``routeyard explain``). Neither is retriable as is.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections import OrderedDict
from collections.abc import AsyncIterator, Sequence
from types import TracebackType
from typing import Self

import msgspec
from routeyard.consumers import tracing
from routeyard.consumers.errors import CannotReach, TurnRejected, TurnTimeout
from routeyard.consumers.feed import COMPLETION_GRACE_S, Item, TurnFeed
from routeyard.consumers.kafka.aio import KafkaBus
from routeyard.consumers.kafka.bus import Bus, Consumer, Outgoing, Partition
from routeyard.consumers.settings import KafkaSettings
from routeyard.schemas import (
    AgentChunk,
    ConversationEvent,
    ConversationResponse,
    Message,
    Mode,
    RoutingDecision,
    Topics,
    chunk_decoder,
    decision_decoder,
    encode,
    response_decoder,
)

log = logging.getLogger(__name__)

LATE_DECISIONS = 1024
"""Answered turns whose decision may still come, kept per client (the newest): one consumer reads
the responses and decisions topics, and may hand over a turn's response before its decision. Also
the most decisions ``RouteyardClient.decisions`` keeps (the newest)."""


class RouteyardClient:
    def __init__(
        self,
        kafka: str | KafkaSettings | None = None,
        *,
        bus: Bus | None = None,
        prefix: str = "routeyard.",
        reply_topic: str | None = None,
        tenant: str | None = None,
        watch_decisions: bool = False,
        tenant_topic: bool = False,
    ) -> None:
        """``tenant_topic``: read the tenant's own responses topic (the router's
        ``tenant_response_topics`` must be on), so only this tenant's responses are read. ``bus``:
        the bus to use instead of the broker ``kafka`` names (an in-memory bus, in tests)."""
        if (kafka is None) == (bus is None):
            raise ValueError("name a broker (kafka) or pass a bus, not both")
        if tenant_topic and not tenant:
            raise ValueError("tenant_topic needs a tenant")
        settings = kafka if isinstance(kafka, KafkaSettings) else KafkaSettings(bootstrap=kafka or "memory")
        self._bus: Bus = bus or KafkaBus(settings)
        self._wait_ms = settings.fetch_max_wait_ms
        self.topics = Topics(prefix=prefix)
        self.reply_topic = reply_topic
        self.tenant = tenant
        self.responses_topic = reply_topic or (self.topics.responses_for(tenant) if tenant_topic and tenant else None)
        """Where this client's responses arrive (None: the shared responses topic)."""
        self._awaited: dict[str, tuple[str | None, str]] = {}
        """Awaited event id -> the (tenant, conversation id) its response must carry."""
        self._producer = self._bus.producer()
        self._consumer: Consumer | None = None
        self._waiting: dict[str, asyncio.Future[ConversationResponse]] = {}
        self._reader: asyncio.Task[None] | None = None
        self._chunk_consumer: Consumer | None = None
        self._chunk_reader: asyncio.Task[None] | None = None
        self._starting = asyncio.Lock()
        """Held while a reader starts: concurrent first calls start one reader each, not one apiece."""
        self._feeds: dict[str, TurnFeed] = {}
        """Streamed turns in progress, by event id."""
        self._watch_decisions = watch_decisions
        self.decisions: dict[str, RoutingDecision] = {}
        """With ``watch_decisions``: the decisions of this client's events, by event id."""
        self._late: OrderedDict[str, tuple[str | None, str]] = OrderedDict()
        """With ``watch_decisions``: answered events whose decision was not read yet (``LATE_DECISIONS``)."""

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    async def start(self) -> None:
        try:
            await self._producer.start()
        except BaseException:
            await self._producer.stop()
            raise

    async def stop(self) -> None:
        for reader in (self._reader, self._chunk_reader):
            if reader is not None:
                reader.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await reader
        self._reader = self._chunk_reader = None
        for consumer in (self._consumer, self._chunk_consumer):
            if consumer is not None:
                await consumer.stop()
        self._consumer = self._chunk_consumer = None
        await self._producer.stop()
        for future in self._waiting.values():
            future.cancel()

    def event(
        self,
        conversation_id: str,
        messages: str | Sequence[Message],
        *,
        event_id: str | None = None,
        agents: list[str] | None = None,
        mode: Mode | None = None,
        metadata: dict[str, str] | None = None,
    ) -> ConversationEvent:
        if isinstance(messages, str):
            messages = [Message(role="user", content=messages)]
        return ConversationEvent(
            event_id=event_id or uuid.uuid4().hex,
            conversation_id=conversation_id,
            messages=list(messages),
            tenant=self.tenant,
            agents=agents,
            reply_topic=self.reply_topic,
            mode=mode,
            metadata=metadata or {},
        )

    async def publish(self, events: Sequence[ConversationEvent]) -> None:
        """Publish turns (keyed by conversation id) and wait for the broker's acknowledgement.
        Each starts a trace (or continues the caller's current one): ``traceparent`` in its headers."""
        spans = [tracing.started("routeyard.publish", conversation=e.conversation_id) for e in events]
        try:
            await self._producer.publish(
                [
                    Outgoing(
                        topic=self.topics.conversations,
                        value=encode(e),
                        key=e.conversation_id,
                        headers=tracing.headers(span.context()),
                    )
                    for e, span in zip(events, spans, strict=True)
                ],
            )
        finally:
            for span in spans:
                span.end()

    async def send(self, conversation_id: str, messages: str | Sequence[Message], **options: object) -> str:
        """Publish one turn without waiting for its response; returns the event id."""
        event = self.event(conversation_id, messages, **options)  # type: ignore[arg-type]
        await self.publish([event])
        return event.event_id

    async def ask(
        self,
        conversation_id: str,
        messages: str | Sequence[Message],
        *,
        timeout: float = 60.0,
        **options: object,
    ) -> ConversationResponse:
        """Publish one turn and wait for its response; raises ``TurnRejected`` if the router
        refused it, ``TurnTimeout`` if no response came in time."""
        event = self.event(conversation_id, messages, **options)  # type: ignore[arg-type]
        response = (await self.ask_many([event], timeout=timeout))[0]
        if response.status == "rejected":
            raise TurnRejected(response.event_id, response.reason or "no reason given")
        return response

    async def ask_many(
        self, events: Sequence[ConversationEvent], *, timeout: float = 60.0
    ) -> list[ConversationResponse]:
        """Publish turns and wait for all their responses (a refused turn's has status
        ``rejected``); raises ``TurnTimeout`` naming the turns not answered in time."""
        await self._listen()
        loop = asyncio.get_running_loop()
        futures = [self._waiting.setdefault(e.event_id, loop.create_future()) for e in events]
        self._awaited.update((e.event_id, (e.tenant or None, e.conversation_id)) for e in events)
        try:
            await self.publish(events)
            try:
                async with asyncio.timeout(timeout):
                    return list(await asyncio.gather(*futures))
            except TimeoutError:
                # the timeout cancelled the futures still waiting: those are the late ones
                late = [e.event_id for e, f in zip(events, futures, strict=True) if f.cancelled() or not f.done()]
                raise TurnTimeout(late, timeout) from None
        finally:
            for e in events:
                self._waiting.pop(e.event_id, None)
                awaited = self._awaited.pop(e.event_id, None)
                if self._watch_decisions and awaited is not None and e.event_id not in self.decisions:
                    self._late[e.event_id] = awaited
            while len(self._late) > LATE_DECISIONS:
                self._late.popitem(last=False)

    async def stream(
        self,
        event: ConversationEvent | str,
        messages: str | Sequence[Message] = (),
        *,
        timeout: float = 60.0,
        **options: object,
    ) -> AsyncIterator[Item]:
        """Publish one turn asking for a stream (an event, or a conversation id and its messages)
        and yield its decision (with ``watch_decisions``), its chunks as they arrive, then its
        response; raises ``TurnRejected`` or ``TurnTimeout`` (no response within ``timeout`` s)."""
        if isinstance(event, str):
            event = self.event(event, messages, **options)  # type: ignore[arg-type]
        event = msgspec.structs.replace(event, stream=True)
        await self._listen()
        await self._listen_chunks()
        feed = self._feeds[event.event_id] = TurnFeed()
        self._awaited[event.event_id] = (event.tenant or None, event.conversation_id)
        try:
            await self.publish([event])
            deadline = asyncio.get_running_loop().time() + timeout
            item = await _next(feed, deadline, event.event_id, timeout)
            while not isinstance(item, ConversationResponse):
                yield item
                item = await _next(feed, deadline, event.event_id, timeout)
            grace = asyncio.get_running_loop().time() + COMPLETION_GRACE_S
            while feed.behind(item) and (late := await _before(feed, grace)) is not None:
                yield late
            if item.status == "rejected":
                raise TurnRejected(item.event_id, item.reason or "no reason given")
            yield item
        finally:
            self._feeds.pop(event.event_id, None)
            self._awaited.pop(event.event_id, None)

    async def _listen_chunks(self) -> None:
        async with self._starting:
            if self._chunk_reader is None:
                self._chunk_consumer = await self._from_the_end([self.topics.streams])
                self._chunk_reader = asyncio.create_task(self._read(self._chunk_consumer))

    async def _listen(self) -> None:
        async with self._starting:
            if self._reader is not None:
                return
            topics = [self.responses_topic or self.topics.responses]
            if self._watch_decisions:
                topics.append(self.topics.decisions)
            self._consumer = await self._from_the_end(topics)
            self._reader = asyncio.create_task(self._read(self._consumer))

    async def _from_the_end(self, topics: list[str]) -> Consumer:
        """A started consumer without a group, assigned every partition of ``topics`` at their end."""
        consumer = self._bus.consumer(None)
        await consumer.start()
        try:
            partitions = [tp for topic in topics for tp in await _partitions(consumer, topic)]
            consumer.assign(partitions)
            # Start at about the end. Responses are matched by event id, so reading a few older
            # records (tansu reports the end of a multi-record batch too early) is harmless.
            await consumer.seek_to_end(partitions)
            for tp in partitions:
                await consumer.position(tp)
        except BaseException:
            await consumer.stop()
            raise
        return consumer

    async def _read(self, consumer: Consumer) -> None:
        while True:
            for record in await consumer.fetch(max_records=500, timeout_ms=self._wait_ms):
                try:
                    where = f"{record.topic}[{record.partition}]@{record.offset}"
                    self._receive(record.topic, record.value or b"", where)
                except Exception as exc:  # a bad record is skipped; the reader never dies of one
                    log.warning(
                        "skipped an unreadable record on %s[%d]@%d (%s)",
                        record.topic,
                        record.partition,
                        record.offset,
                        type(exc).__name__,
                    )

    def _receive(self, topic: str, value: bytes, where: str = "") -> None:
        if topic == self.topics.streams:
            chunk = chunk_decoder.decode(value)
            feed = self._feeds.get(chunk.event_id)
            if feed is not None and self._matches("chunk", chunk, where or topic):
                feed.chunk(chunk)
            return
        if topic == self.topics.decisions and self._watch_decisions:
            self._decided(decision_decoder.decode(value), where or topic)
            return
        response = response_decoder.decode(value)
        future, feed = self._waiting.get(response.event_id), self._feeds.get(response.event_id)
        if (future is None or future.done()) and feed is None:
            return
        if not self._matches("response", response, where or topic):
            return
        if feed is not None:
            feed.put(response)
        if future is not None and not future.done():
            future.set_result(response)

    def _decided(self, decision: RoutingDecision, where: str) -> None:
        """Keep the decision of a turn awaited or answered (its tenant and conversation, not just its
        id: a forged one is ignored), and hand it to the turn's stream."""
        expected = self._awaited.get(decision.event_id) or self._late.get(decision.event_id)
        if expected is not None and expected == (decision.tenant or None, decision.conversation_id):
            self._late.pop(decision.event_id, None)
            self.decisions[decision.event_id] = decision
            while len(self.decisions) > LATE_DECISIONS:  # kept for a reader that never pops them
                del self.decisions[next(iter(self.decisions))]
        if decision.event_id in self._feeds and self._matches("decision", decision, where):
            self._feeds[decision.event_id].put(decision)

    def _matches(self, kind: str, record: AgentChunk | RoutingDecision | ConversationResponse, where: str) -> bool:
        """The record carries the tenant and conversation of the awaited event it names."""
        expected = self._awaited.get(record.event_id)
        if expected is None or expected == (record.tenant or None, record.conversation_id):
            return True
        log.warning(
            "ignored a %s at %s for awaited event %s: tenant %r, conversation %r (expected %r, %r)",
            kind, where, record.event_id, record.tenant, record.conversation_id, *expected,
        )  # fmt: skip
        return False


async def _next(feed: TurnFeed, deadline: float, event_id: str, timeout: float) -> Item:
    """The feed's next item; TurnTimeout naming ``event_id`` past ``deadline`` (loop time)."""
    item = await _before(feed, deadline)
    if item is None:
        raise TurnTimeout([event_id], timeout)
    return item


async def _before(feed: TurnFeed, deadline: float) -> Item | None:
    """The feed's next item, or None if none comes before ``deadline`` (loop time)."""
    try:
        async with asyncio.timeout_at(deadline):
            return await feed.get()
    except TimeoutError:
        return None


async def _partitions(consumer: Consumer, topic: str, timeout: float = 10.0) -> list[Partition]:
    """``topic``'s partitions, once the broker knows it; CannotReach (one line) if it never does."""
    try:
        async with asyncio.timeout(timeout):
            while True:
                partitions = await consumer.partitions_for(topic)  # refreshes cluster metadata
                if partitions:
                    return partitions
                await asyncio.sleep(0.1)
    except TimeoutError:
        raise CannotReach(
            "send",
            f"no topic {topic!r} on the broker after {timeout:g} s: is routeyard running there with this "
            "topic prefix? (`routeyard topics create` creates its topics)",
        ) from None
