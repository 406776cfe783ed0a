"""The agent runtime: an agent is an async function with a name and a description.

    from routeyard.consumers import agent
    from routeyard.schemas import AgentTask

    @agent("WeatherAgent", "Provides weather forecasts and current conditions for any location")
    async def weather(task: AgentTask) -> str:
        return "Sunny, 21 C"

Run it with ``routeyard agent mymodule:weather``. Instances of one agent form one consumer
group, so they share the load. Each task is handled once: a task already answered (its id is
remembered in Redis after the reply is published) is skipped when redelivered. An exception
becomes an error reply; a handler still running at the task's deadline is cancelled, and the
correlator reports that agent as timed out.

A handler that asks the user something returns ``Ask("What's your phone number?")``: the reply is
marked ``awaiting_input``, and the user's answer comes back to this agent.

A handler that is an async generator streams its reply::

    @agent("StoryAgent", "Tells short stories")
    async def story(task: AgentTask) -> AsyncIterator[str]:
        async for piece in model.stream(task.messages):
            yield piece

Each yielded string goes out as an ``AgentChunk`` on the task's ``stream_topic`` when the sender
asked for a stream (``consumers/agents/streaming.py``), and the reply's content is their
concatenation. Yielding anything but ``str``, or more than ``agent.max_reply_bytes`` in all, is an
error reply saying so.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import inspect
import logging
import time
import uuid
from collections.abc import AsyncGenerator, Awaitable, Callable, Collection, Sequence
from dataclasses import dataclass
from typing import Any, TypeGuard

import msgspec
from routeyard.consumers import tracing
from routeyard.consumers.agents.offsets import OffsetTracker
from routeyard.consumers.agents.streaming import ChunkWriter, write_all
from routeyard.consumers.coalesced import Coalesced
from routeyard.consumers.errors import BadReply
from routeyard.consumers.kafka.bus import Consumer, Outgoing, Partition, Producer, Record, commit, dead_letter
from routeyard.consumers.metrics import METRICS, child
from routeyard.consumers.retry import backoff_for, retrying
from routeyard.consumers.settings import Settings
from routeyard.consumers.stores.context import tenant_part
from routeyard.consumers.stores.marks import TaskMarks
from routeyard.schemas import AgentReply, AgentTask, encode, task_decoder

log = logging.getLogger(__name__)

Handler = (
    Callable[[AgentTask], Awaitable[str | None]]
    | Callable[[AgentTask], str | None]
    | Callable[[AgentTask], AsyncGenerator[str, None]]
)
"""``async def handler(task)`` (runs on the event loop: it must await, not compute for long), an
async generator (it streams: each yielded piece is a chunk) or a plain ``def handler(task)``
(CPU-bound or blocking work: runs in a worker thread)."""
COMMIT_EVERY_S = 0.05


@dataclass(frozen=True)
class Agent:
    name: str
    description: str
    handler: Handler
    topic: str | None = None
    expose_errors: bool = False
    """Send an exception's text to the caller verbatim. Off by default: the caller gets a generic
    error with a reference id, and the detail stays in this process's log and trace."""
    register: bool = False
    """Announce this agent on the registry topic while it runs (``routeyard.consumers.catalogs``)."""
    examples: tuple[str, ...] = ()
    """Requests it should get (sent with the announcement, for the semantic engine)."""
    keywords: tuple[str, ...] = ()
    """Rules-engine keywords (sent with the announcement)."""

    @property
    def streams(self) -> bool:
        """The handler is an async generator: its reply is written piece by piece."""
        return _is_async_gen(self.handler)

    async def __call__(self, task: AgentTask) -> str | None:
        if _is_async_gen(self.handler):
            raise TypeError(f"agent {self.name} streams: run it with its task's ChunkWriter (stream())")
        if _is_async(self.handler):
            return await self.handler(task)
        # A plain ``def`` runs in a worker thread: the event loop stays free, so the deadline is
        # enforced and other tasks go on (the thread itself cannot be stopped: its late result is
        # discarded). An ``async def`` that computes without awaiting blocks the whole runtime.
        return await asyncio.to_thread(self.handler, task)  # type: ignore[arg-type]

    async def stream(self, task: AgentTask, writer: ChunkWriter) -> str:
        """Run a streaming handler, writing each piece to ``writer``; the reply's content."""
        if not _is_async_gen(self.handler):
            raise TypeError(f"agent {self.name} does not stream: call it")
        await write_all(self.handler(task), writer)
        return writer.text


def _is_async_gen(handler: Handler) -> TypeGuard[Callable[[AgentTask], AsyncGenerator[str, None]]]:
    call = type(handler).__call__ if not inspect.isroutine(handler) else handler
    return inspect.isasyncgenfunction(handler) or inspect.isasyncgenfunction(call)


class Ask(str):
    """A reply that asks the user something and waits for the answer::

        return Ask("What's your phone number?")

    It goes out with ``awaiting_input``: the conversation's next turn, when it reads as an answer,
    comes back to this agent whatever the routing engine would choose (``router/continuation.py``)."""

    __slots__ = ()


class ReplyError(Exception):
    """Raise in a handler to answer with this error text, shown to the caller as it is (one line,
    at most MAX_ERROR_CHARS), instead of the generic ``<agent> failed (ref <id>)``.
    ``retriable=False``: another attempt cannot help (a refused request), so the router does not
    retry it whatever the agent's ``retries``."""

    def __init__(self, message: str, *, retriable: bool = True) -> None:
        super().__init__(message)
        self.retriable = retriable


MAX_ERROR_CHARS = 500


def _is_async(handler: Handler) -> TypeGuard[Callable[[AgentTask], Awaitable[str | None]]]:
    call = type(handler).__call__ if not inspect.isroutine(handler) else handler
    return inspect.iscoroutinefunction(handler) or inspect.iscoroutinefunction(call)


def agent(
    name: str,
    description: str,
    *,
    topic: str | None = None,
    expose_errors: bool = False,
    register: bool = False,
    examples: Sequence[str] = (),
    keywords: Sequence[str] = (),
) -> Callable[[Handler], Agent]:
    """Declare an agent. The name must match the catalog entry that routes to it. An exception
    in the handler becomes an error reply saying ``<agent> failed (ref <id>)``; the exception
    itself is logged and recorded on the trace with that id. ``expose_errors=True`` sends
    ``<Type>: <message>`` instead (only for agents whose errors are safe to show a caller).
    ``register=True`` announces it on the registry topic while it runs (name, description,
    ``examples``, ``keywords``, topic): with ``ROUTEYARD_REGISTRY__ENABLED`` and its name allowed,
    router workers route to it while it is alive."""

    def wrap(handler: Handler) -> Agent:
        return Agent(
            name=name,
            description=description,
            handler=handler,
            topic=topic,
            expose_errors=expose_errors,
            register=register,
            examples=tuple(examples),
            keywords=tuple(keywords),
        )

    return wrap


class AgentRunner:
    tick: Callable[[], None] | None = None
    """Called on every turn of the intake loop (the process's liveness probe)."""
    span_name = "routeyard.agent"
    """The span each task runs in (the filter runtime, built on this one, names its own)."""

    def __init__(
        self,
        agent: Agent,
        *,
        settings: Settings,
        consumer: Consumer,
        producer: Producer,
        marks: TaskMarks,
    ) -> None:
        self.agent = agent
        self._settings = settings
        self._consumer = consumer
        self._producer = producer
        self._ns = settings.namespace
        self._tracker = OffsetTracker()
        self._slots = asyncio.Semaphore(settings.agent.concurrency)
        self._freed = asyncio.Event()
        self._backoff = backoff_for(settings)
        self._failure: BaseException | None = None
        self._marks = marks
        self._replies: Coalesced[Outgoing] = Coalesced(producer.publish)
        """Replies of the tasks that finish in one turn of the event loop go out as one publish."""
        self._committed_at = 0.0
        self._tasks: dict[asyncio.Task[None], Record] = {}
        """Every task in flight, with its record: owned here, awaited or cancelled on drain."""

    async def run(self, stop: asyncio.Event) -> None:
        """Fetch while there are free slots, run each task in its own (tracked) asyncio task,
        commit up to the oldest task still running. On ``stop``: stop fetching, wait up to
        ``lifecycle.shutdown_timeout_s`` for the tasks in hand, cancel the rest (their records
        are not committed, so another instance redoes them), commit what finished."""
        try:
            while not stop.is_set():
                if self._failure is not None:
                    raise RuntimeError(f"agent {self.agent.name}: a task could not complete") from self._failure
                if self.tick is not None:
                    self.tick()
                await self._intake()
                await self._commit(now=False)
        finally:
            self._consumer.pause(self._consumer.assignment())
            await self._drain(set(self._tasks), self._settings.lifecycle.shutdown_timeout_s)
            await self._commit()

    async def release(self, partitions: Collection[Partition]) -> None:
        """Partitions are being revoked (a rebalance): finish their tasks within the shutdown
        timeout, cancel the rest, commit what finished, and stop tracking them. The member that
        gets them next starts after the last finished task, so no task runs in two runtimes."""
        mine = {t for t, r in self._tasks.items() if Partition(r.topic, r.partition) in partitions}
        await self._drain(mine, self._settings.lifecycle.shutdown_timeout_s)
        offsets = {tp: o for tp, o in self._tracker.committable().items() if tp in partitions}
        if offsets:
            await commit(self._consumer, offsets)
        self._tracker.forget(partitions)

    async def _drain(self, tasks: set[asyncio.Task[None]], timeout_s: float) -> None:
        if not tasks:
            return
        log.info("agent %s: draining %d in-flight tasks (up to %.0fs)", self.agent.name, len(tasks), timeout_s)
        _, late = await asyncio.wait(tasks, timeout=timeout_s)
        for task in late:
            task.cancel()
        if late:
            log.warning("agent %s: %d tasks abandoned at the drain timeout", self.agent.name, len(late))
            await asyncio.wait(late)

    async def _intake(self) -> None:
        wait = self._settings.kafka.fetch_max_wait_ms
        if self._slots.locked():
            # Backpressure: no free slot. Pause every partition but keep polling, so the group
            # does not evict this member while long tasks run (max_poll_interval_ms).
            self._consumer.pause(self._consumer.assignment())
            self._freed.clear()
            with contextlib.suppress(TimeoutError):  # back as soon as a task ends, not a fetch wait later
                await asyncio.wait_for(self._freed.wait(), 1.0)
            if self._slots.locked():
                await self._consumer.fetch(max_records=1, timeout_ms=0)  # still polling: stays in the group
            return
        self._consumer.resume(self._consumer.paused())
        records = await self._consumer.fetch(max_records=self._free_slots(), timeout_ms=wait)
        if not records:
            return
        for record in records:
            self._tracker.begin(record)
        start = await retrying(functools.partial(self._screen, records), what="agent intake", backoff=self._backoff)
        for record, task in start:
            await self._slots.acquire()
            job = asyncio.create_task(self._one(record, task))
            self._tasks[job] = record
            job.add_done_callback(self._tasks.pop)

    async def _screen(self, records: list[Record]) -> list[tuple[Record, AgentTask]]:
        """The records to run, decoded. The rest end here: undecodable ones are dead-lettered,
        tasks already answered (one read for the whole batch) are counted and skipped."""
        tasks: list[tuple[Record, AgentTask]] = []
        dead: list[Record] = []
        letters: list[Outgoing] = []
        for record in records:
            try:
                tasks.append((record, task_decoder.decode(record.value or b"")))
            except Exception as exc:  # pure decoding: the record's fault (a RecursionError of deep JSON too)
                dead.append(record)
                letters.append(dead_letter(record, self._settings.topics.dead_letters, stage="agent", error=exc))
        done = await self._marks.answered([self._done_key(task) for _, task in tasks]) if tasks else []
        if letters:
            await self._producer.publish(letters)
            child(METRICS.dead_letters, stage="agent").inc(len(letters))
        start, skipped = [], list(dead)
        for (record, task), answered in zip(tasks, done, strict=True):
            if answered:
                skipped.append(record)
            else:
                start.append((record, task))
        if len(skipped) > len(dead):
            child(METRICS.tasks, agent=self.agent.name, outcome="duplicate").inc(len(skipped) - len(dead))
        for record in skipped:
            self._tracker.end(record)
        return start

    def _free_slots(self) -> int:
        return max(1, self._settings.agent.concurrency - self._tracker.in_flight)

    async def _commit(self, *, now: bool = True) -> None:
        """Commit what finished; in the intake loop (``now=False``) at most every COMMIT_EVERY_S:
        a commit is a broker round trip, and committing later only means more redelivered tasks
        skipped as answered after a crash."""
        if not now and time.monotonic() - self._committed_at < COMMIT_EVERY_S:
            return
        self._committed_at = time.monotonic()
        offsets = self._tracker.committable()
        if offsets and await commit(self._consumer, offsets):
            self._tracker.committed(offsets)

    async def _one(self, record: Record, task: AgentTask) -> None:
        try:
            await self._handle(record, task)
            await retrying(functools.partial(self._marks.add, self._done_key(task)), what="agent task mark")
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
            self._freed.set()

    def _done_key(self, task: AgentTask) -> str:
        return f"{self._ns}:{tenant_part(task.tenant)}:task:{task.task_id}"

    async def _handle(self, record: Record, task: AgentTask) -> None:
        """Run the handler once (it never raises: an exception is an error reply), then publish
        its reply, retried on its own: a broker error must not run the handler again."""
        with tracing.span(self.span_name, tracing.carrier(record.headers), agent=self.agent.name) as span:
            span.set(task_id=task.task_id, attempt=task.attempt)
            reply = await self._run_handler(task, span)
            span.set(status=reply.status if reply is not None else "timed_out")
            if reply is not None:
                out = Outgoing(
                    topic=task.reply_topic,
                    value=self._encoded(reply),
                    key=task.conversation_id,
                    headers=tracing.headers(span.context()),
                )
                await retrying(functools.partial(self._replies.add, out), what="agent reply", backoff=self._backoff)

    def _encoded(self, reply: AgentReply) -> bytes:
        """The reply's bytes; a reply over ``agent.max_reply_bytes`` becomes an error reply saying
        so (the broker would refuse it, and the correlator could not use it)."""
        value = encode(reply)
        limit = self._settings.agent.max_reply_bytes
        if len(value) <= limit:
            return value
        log.warning(
            "agent %s: reply to task %s has %d bytes; sent as an error", self.agent.name, reply.task_id, len(value)
        )
        reason = f"reply of {len(value)} bytes exceeds agent.max_reply_bytes ({limit})"
        return encode(msgspec.structs.replace(reply, status="error", content="", error=reason))

    async def _run_handler(self, task: AgentTask, span: tracing.Span | None = None) -> AgentReply | None:
        """The reply to publish; None when the deadline passed (the correlator reports the timeout)."""
        remaining = task.deadline.timestamp() - time.time()
        if remaining <= 0:
            child(METRICS.tasks, agent=self.agent.name, outcome="expired").inc()
            log.warning("agent %s: task %s arrived after its deadline; not started", self.agent.name, task.task_id)
            return None
        content, error, retriable = "", None, True
        fields: dict[str, Any] = {}
        try:
            async with asyncio.timeout(remaining):
                content, fields = await self._answer(task)
        except TimeoutError:
            child(METRICS.tasks, agent=self.agent.name, outcome="timeout").inc()
            log.warning("agent %s: task %s cancelled at its deadline", self.agent.name, task.task_id)
            return None
        except ReplyError as exc:
            error, retriable = " ".join(str(exc).split())[:MAX_ERROR_CHARS], exc.retriable
            log.warning("agent %s: task %s answered with an error: %s", self.agent.name, task.task_id, error)
        except BadReply as exc:
            log.warning("agent %s: task %s: %s", self.agent.name, task.task_id, exc)
            error = str(exc)
        except Exception as exc:
            error = self._error(task, exc, span)
        child(METRICS.tasks, agent=self.agent.name, outcome="ok" if error is None else "error").inc()
        return AgentReply(
            task_id=task.task_id,
            event_id=task.event_id,
            conversation_id=task.conversation_id,
            tenant=task.tenant,
            agent=task.agent,
            status="ok" if error is None else "error",
            content=content,
            error=error,
            token=task.token,
            retriable=retriable,
            **(fields if error is None else {}),
        )

    async def _answer(self, task: AgentTask) -> tuple[str, dict[str, Any]]:
        """The reply's content and its other fields (an agent's: none; a filter's: its verdict)."""
        content = await self._content(task)
        return str(content), {"awaiting_input": True} if isinstance(content, Ask) else {}

    async def _content(self, task: AgentTask) -> str:
        """The handler's reply text; a streaming handler's pieces go out as chunks meanwhile."""
        if not self.agent.streams:
            content = await self.agent(task)
            if content is not None and not isinstance(content, str):
                raise BadReply(f"{self.agent.name} returned {type(content).__name__}, not str")
            return content or ""
        limit = self._settings.agent.max_reply_bytes
        async with ChunkWriter(self._producer, task, max_bytes=limit) as writer:
            return await self.agent.stream(task, writer)

    def _error(self, task: AgentTask, exc: Exception, span: tracing.Span | None) -> str:
        """What the caller is told of a handler's exception: a reference id that finds the detail in
        this process's log and the trace, never the detail itself (it may hold secrets), unless
        the agent opted in with ``expose_errors``."""
        detail = f"{type(exc).__name__}: {exc}"
        if self.agent.expose_errors:
            log.exception("agent %s raised on task %s", self.agent.name, task.task_id)
            return detail
        ref = uuid.uuid4().hex[:12]
        log.exception("agent %s raised on task %s (error ref %s)", self.agent.name, task.task_id, ref)
        if span is not None:
            span.set(error_ref=ref)
            span.error(detail[:1000])
        return f"{self.agent.name} failed (ref {ref})"
