"""The agent runtime: an agent is an async function with a name and a description.

    from consumers import agent
    from schemas import AgentTask

    @agent("WeatherAgent", "Provides weather forecasts and current conditions for any location")
    async def weather(task: AgentTask) -> str:
        return "Sunny, 21 C"

Run it with ``routeyard agent mymodule:weather``. Instances of one agent form one consumer
group, so they share the load. Each task is handled once: a task already answered (its id is
remembered in Redis after the reply is published) is skipped when redelivered. An exception
becomes an error reply; a handler still running at the task's deadline is cancelled, and the
correlator reports that agent as timed out.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from redis.asyncio import Redis

from consumers.bus import Outgoing, Record, commit, dead_letter, fetch, publish
from consumers.context import tenant_part
from consumers.metrics import METRICS
from consumers.retry import retrying
from consumers.settings import Settings
from schemas import AgentReply, AgentTask, DecodeError, encode, task_decoder

log = logging.getLogger(__name__)

Handler = Callable[[AgentTask], Awaitable[str | None]]


@dataclass(frozen=True)
class Agent:
    name: str
    description: str
    handler: Handler
    topic: str | None = None

    async def __call__(self, task: AgentTask) -> str | None:
        return await self.handler(task)


def agent(name: str, description: str, *, topic: str | None = None) -> Callable[[Handler], Agent]:
    """Declare an agent. The name must match the catalog entry that routes to it."""

    def wrap(handler: Handler) -> Agent:
        return Agent(name=name, description=description, handler=handler, topic=topic)

    return wrap


class OffsetTracker:
    """Tasks finish out of order; commit only up to the oldest one still running."""

    def __init__(self) -> None:
        self._running: dict[TopicPartition, set[int]] = {}
        self._next: dict[TopicPartition, int] = {}
        self._committed: dict[TopicPartition, int] = {}

    def begin(self, record: Record) -> None:
        tp = TopicPartition(record.topic, record.partition)
        self._running.setdefault(tp, set()).add(record.offset)
        self._next[tp] = max(self._next.get(tp, 0), record.offset + 1)

    def end(self, record: Record) -> None:
        self._running[TopicPartition(record.topic, record.partition)].discard(record.offset)

    def committable(self) -> dict[TopicPartition, int]:
        ready = {}
        for tp, nxt in self._next.items():
            running = self._running.get(tp)
            offset = min(running) if running else nxt
            if self._committed.get(tp) != offset:
                ready[tp] = offset
        return ready

    def committed(self, offsets: dict[TopicPartition, int]) -> None:
        self._committed.update(offsets)

    @property
    def in_flight(self) -> int:
        return sum(len(s) for s in self._running.values())


class AgentRunner:
    def __init__(
        self,
        agent: Agent,
        *,
        settings: Settings,
        consumer: AIOKafkaConsumer,
        producer: AIOKafkaProducer,
        redis: Redis,
    ) -> None:
        self.agent = agent
        self._settings = settings
        self._consumer = consumer
        self._producer = producer
        self._redis = redis
        self._ns = settings.namespace
        self._tracker = OffsetTracker()
        self._slots = asyncio.Semaphore(settings.agent.concurrency)
        self._failure: BaseException | None = None

    async def run(self, stop: asyncio.Event, drain_timeout_s: float = 30.0) -> None:
        tasks: set[asyncio.Task[None]] = set()
        try:
            while not stop.is_set():
                if self._failure is not None:
                    raise RuntimeError(f"agent {self.agent.name}: a task could not complete") from self._failure
                await self._intake(tasks)
                await self._commit()
        finally:
            if tasks:
                _, late = await asyncio.wait(tasks, timeout=drain_timeout_s)
                for t in late:
                    t.cancel()
            await self._commit()

    async def _intake(self, tasks: set[asyncio.Task[None]]) -> None:
        wait = self._settings.kafka.fetch_max_wait_ms
        if self._slots.locked():
            # Backpressure: no free slot. Pause every partition but keep polling, so the group
            # does not evict this member while long tasks run (max_poll_interval_ms).
            self._consumer.pause(*self._consumer.assignment())
            await fetch(self._consumer, max_records=1, timeout_ms=wait)
            return
        self._consumer.resume(*self._consumer.paused())
        records = await fetch(self._consumer, max_records=self._free_slots(), timeout_ms=wait)
        for record in records:
            await self._slots.acquire()
            self._tracker.begin(record)
            task = asyncio.create_task(self._one(record))
            tasks.add(task)
            task.add_done_callback(tasks.discard)

    def _free_slots(self) -> int:
        return max(1, self._settings.agent.concurrency - self._tracker.in_flight)

    async def _commit(self) -> None:
        offsets = self._tracker.committable()
        if offsets and await commit(self._consumer, offsets):
            self._tracker.committed(offsets)

    async def _one(self, record: Record) -> None:
        try:
            await retrying(functools.partial(self._handle, record), what="agent task")
        except Exception as exc:
            log.exception(
                "agent %s: task at %s[%d]@%d failed to complete; it will be redelivered",
                self.agent.name,
                record.topic,
                record.partition,
                record.offset,
            )
            self._failure = exc
        else:
            self._tracker.end(record)
        finally:
            self._slots.release()

    async def _handle(self, record: Record) -> None:
        try:
            task = task_decoder.decode(record.value or b"")
        except DecodeError as exc:
            letters = self._settings.topics.dead_letters
            await publish(self._producer, [dead_letter(record, letters, stage="agent", error=exc)])
            METRICS.dead_letters.labels(stage="agent").inc()
            return
        done_key = f"{self._ns}:{tenant_part(task.tenant)}:task:{task.task_id}"
        if await self._redis.exists(done_key):
            METRICS.tasks.labels(agent=self.agent.name, outcome="duplicate").inc()
            return
        reply = await self._run_handler(task)
        if reply is not None:
            await publish(
                self._producer,
                [Outgoing(topic=task.reply_topic, value=encode(reply), key=task.conversation_id)],
            )
        await self._redis.set(done_key, b"1", ex=self._settings.agent.dedup_ttl_s)

    async def _run_handler(self, task: AgentTask) -> AgentReply | None:
        """The reply to publish; None when the deadline passed (the correlator reports the timeout)."""
        remaining = task.deadline.timestamp() - time.time()
        if remaining <= 0:
            METRICS.tasks.labels(agent=self.agent.name, outcome="expired").inc()
            log.warning("agent %s: task %s arrived after its deadline; not started", self.agent.name, task.task_id)
            return None
        content, error = "", None
        try:
            content = await asyncio.wait_for(self.agent(task), timeout=remaining) or ""
        except TimeoutError:
            METRICS.tasks.labels(agent=self.agent.name, outcome="timeout").inc()
            log.warning("agent %s: task %s cancelled at its deadline", self.agent.name, task.task_id)
            return None
        except Exception as exc:
            log.exception("agent %s raised on task %s", self.agent.name, task.task_id)
            error = f"{type(exc).__name__}: {exc}"
        METRICS.tasks.labels(agent=self.agent.name, outcome="ok" if error is None else "error").inc()
        return AgentReply(
            task_id=task.task_id,
            event_id=task.event_id,
            conversation_id=task.conversation_id,
            tenant=task.tenant,
            agent=task.agent,
            status="ok" if error is None else "error",
            content=content,
            error=error,
        )
