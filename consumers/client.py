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

Errors of ``ask``: ``TurnRejected`` (the router refused the turn and said why, at once: a
``rejected`` response) and ``TurnTimeout`` (a ``TimeoutError``: no response in time; it names
the event ids, for ``routeyard explain``). Neither is retriable as is.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Sequence
from types import TracebackType
from typing import Self

from routeyard.consumers import tracing
from routeyard.consumers.errors import CannotReach, TurnRejected, TurnTimeout
from routeyard.consumers.kafka.aio import KafkaBus
from routeyard.consumers.kafka.bus import Bus, Consumer, Outgoing, Partition
from routeyard.consumers.settings import KafkaSettings
from routeyard.schemas import (
    ConversationEvent,
    ConversationResponse,
    Message,
    Mode,
    RoutingDecision,
    Topics,
    decision_decoder,
    encode,
    response_decoder,
)

log = logging.getLogger(__name__)


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
        self._watch_decisions = watch_decisions
        self.decisions: dict[str, RoutingDecision] = {}
        """With ``watch_decisions``: the decisions of this client's events, by event id."""

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
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
            self._reader = None
        if self._consumer is not None:
            await self._consumer.stop()
            self._consumer = None
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
                self._awaited.pop(e.event_id, None)

    async def _listen(self) -> None:
        if self._reader is not None:
            return
        topics = [self.responses_topic or self.topics.responses]
        if self._watch_decisions:
            topics.append(self.topics.decisions)
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
        self._consumer = consumer
        self._reader = asyncio.create_task(self._read(consumer))

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
        if topic == self.topics.decisions and self._watch_decisions:
            decision = decision_decoder.decode(value)
            if decision.event_id in self._waiting:
                self.decisions[decision.event_id] = decision
            return
        response = response_decoder.decode(value)
        future = self._waiting.get(response.event_id)
        if future is None or future.done():
            return
        expected = self._awaited.get(response.event_id)
        if expected is not None and expected != (response.tenant or None, response.conversation_id):
            log.warning(
                "ignored a response at %s for awaited event %s: tenant %r, conversation %r (expected %r, %r)",
                where or topic, response.event_id, response.tenant, response.conversation_id, *expected,
            )  # fmt: skip
            return
        future.set_result(response)


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
