"""The agent registry: ``<prefix>registry``, one announcement per instance every few seconds.

    Announcer        the agent runtime's side: announce now, then every ``heartbeat_s``; "leaving" at stop
    RegistryReader   a router worker's side: read from the beginning, ``poll`` between batches

Who may register is the reader's decision: with ``ROUTEYARD_REGISTRY__ENABLED`` off nothing is
read; when on, only names in ``ROUTEYARD_REGISTRY__ALLOW`` are accepted, every other one is
refused with a WARNING (once per name), so a stray process cannot add agents that steal traffic.
An announcement's time is taken as at most the reader's clock: a forged future time buys nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
import uuid
from collections.abc import AsyncIterator

import msgspec
from pydantic import ValidationError
from routeyard.consumers.agents.agent import Agent
from routeyard.consumers.kafka.bus import Bus, Consumer, Outgoing, Producer, Record
from routeyard.consumers.settings import Settings
from routeyard.router.catalog import AgentRules, AgentSpec
from routeyard.router.registry import Roster

log = logging.getLogger(__name__)

MAX_ANNOUNCEMENT_BYTES = 64 * 1024
MAX_REFUSED_REMEMBERED = 1000


class Announcement(msgspec.Struct, frozen=True, kw_only=True):
    name: str
    description: str
    instance: str
    at: float
    topic: str | None = None
    examples: tuple[str, ...] = ()
    keywords: tuple[str, ...] = ()
    leaving: bool = False


_decoder = msgspec.json.Decoder(Announcement)


def registry_topic(prefix: str) -> str:
    return f"{prefix}registry"


def announcement(agent: Agent, instance: str, *, leaving: bool = False) -> Announcement:
    return Announcement(
        name=agent.name,
        description=agent.description,
        instance=instance,
        at=time.time(),
        topic=agent.topic,
        examples=agent.examples,
        keywords=agent.keywords,
        leaving=leaving,
    )


@contextlib.asynccontextmanager
async def announcing(agent: Agent, settings: Settings, producer: Producer) -> AsyncIterator[str]:
    """Announce ``agent`` for the block (heartbeats every ``registry.heartbeat_s``); yields the instance id."""
    instance = f"{socket.gethostname()}:{os.getpid()}/{uuid.uuid4().hex[:6]}"
    topic = registry_topic(settings.topic_prefix)

    async def send(leaving: bool = False) -> None:
        value = msgspec.json.encode(announcement(agent, instance, leaving=leaving))
        await producer.publish([Outgoing(topic=topic, key=agent.name, value=value)])

    async def beat() -> None:
        while True:
            try:
                await send()
            except Exception as exc:  # the next beat tries again; the agent keeps working
                log.warning("agent %s: heartbeat not sent: %s", agent.name, exc)
            await asyncio.sleep(settings.registry.heartbeat_s)

    task = asyncio.create_task(beat())
    log.info("agent %s registering as %s on %s", agent.name, instance, topic)
    try:
        yield instance
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        with contextlib.suppress(Exception):
            await send(leaving=True)


class RegistryReader:
    """The allowed registered agents, read from the registry topic into a ``Roster``."""

    def __init__(self, bus: Bus, settings: Settings) -> None:
        self._bus = bus
        self.topic = registry_topic(settings.topic_prefix)
        self._allow = settings.registry.allow
        self.roster = Roster(settings.registry.timeout_s)
        self._consumer: Consumer | None = None
        self._refused: set[str] = set()
        topics = settings.topics
        self._reserved = frozenset([*topics.core(), self.topic, f"{settings.topic_prefix}catalog"])
        """Topics no registered agent may name: routeyard's own (tasks there would be misread)."""

    async def start(self) -> None:
        from routeyard.consumers.catalogs.published import ensure_compacted

        await ensure_compacted(self._bus, self.topic)
        consumer = self._bus.consumer(None)
        await consumer.start()
        self._consumer = consumer
        partitions = await consumer.partitions_for(self.topic)
        consumer.assign(partitions)
        await consumer.seek_to_beginning(partitions)

    async def stop(self) -> None:
        if self._consumer is not None:
            consumer, self._consumer = self._consumer, None
            await consumer.stop()

    async def poll(self, timeout_ms: int = 0) -> None:
        assert self._consumer is not None, "start() first"
        records = await self._consumer.fetch(max_records=1000, timeout_ms=timeout_ms)
        now = time.time()
        for record in records:
            self._take(record, now)

    def _take(self, record: Record, now: float) -> None:
        where = f"{record.topic}[{record.partition}]@{record.offset}"
        try:
            if record.value is None or len(record.value) > MAX_ANNOUNCEMENT_BYTES:
                raise ValueError("empty or too large")
            said = _decoder.decode(record.value)
            if said.name not in self._allow:
                self._refuse(said.name, where)
                return
            if said.topic in self._reserved:
                raise ValueError(f"agent {said.name!r} names routeyard's own topic {said.topic!r}")
            spec = AgentSpec.model_validate(
                {
                    "name": said.name,
                    "description": said.description,
                    "topic": said.topic,
                    "examples": said.examples,
                    "rules": AgentRules(keywords=said.keywords),
                }
            )
        except (msgspec.DecodeError, ValidationError, ValueError, RecursionError) as exc:
            log.warning("ignoring registry record %s: %s", where, str(exc).replace("\n", "; ")[:300])
            return
        self.roster.beat(spec, said.instance[:200], min(said.at, now), leaving=said.leaving)

    def _refuse(self, name: str, where: str) -> None:
        if name in self._refused or len(self._refused) >= MAX_REFUSED_REMEMBERED:
            return
        self._refused.add(name)
        log.warning("refused registration of %r (%s): not in ROUTEYARD_REGISTRY__ALLOW", name[:100], where)
