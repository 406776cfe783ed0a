"""The pipelined router worker (``router.pipeline: on``): turns flow into the engine continuously.

Three owned tasks, each one step of ``RouterWorker``'s batch, overlapping:

    intake    fetch -> decode -> admit (append each turn to its context and read it: one Redis
              call per fetch, in fetch order) -> one ``decide`` task per fresh turn
    decide    ``engine.decide([request])``: the engine's own batching (vLLM's continuous batching,
              the ``sim`` engine's model of it) decides what runs together, not fetch boundaries,
              and a turn is out as soon as its own answer is, not its batch's slowest
    finish    every decided turn so far -> store correlations (one script call) -> publish
    commit    the offsets now contiguous, one commit at a time, coalesced: the finisher never
              waits for the broker's commit round trip, so a turn decided meanwhile is not held

Why this design and not three stages over whole batches (fetch N+1 / decide N / publish N-1):
with the staged design a turn still waits for the slowest answer of its batch (10-30 tokens:
up to twenty decode steps) and a batch arriving mid-decision waits for the engine call before
it; both are latency the ideal (every turn submitted at its creation) does not have. Continuous
flow has neither, and keeps the engine as full as the in-flight bound allows.

Timing: ``routeyard_batch_phase_seconds{stage="route"}`` gets decode and read per fetch, decide
per turn (its engine call), store and publish per finished group; ``routeyard_held_seconds`` each
record's fetch -> outcome out, as the one-batch worker reports them.

Invariants (tests/unit/test_flow.py, tests/integration/test_router_pipeline.py):
- one turn per conversation in flight (``flow.Holds``): a later turn waits until the earlier is
  stored, then is admitted, so its context has the earlier turn, and a crash or retry never
  decides the earlier turn with the later one in its context;
- offsets are committed after the outcome is published, per partition only up to the first
  record not finished (``flow.Ledger``);
- at most ``router.max_in_flight`` records fetched and uncommitted: beyond it nothing is
  fetched (aiokafka keeps heartbeating), so backpressure reaches Kafka;
- a redelivered event finds its correlation stored (the admit guard) or loses the
  compare-and-set (``write_many``): never dispatched twice;
- revoked partitions: their waiting turns are dropped (the next owner reads them again), their
  admitted turns finish and are committed before the callback returns.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import time
from collections.abc import Coroutine, Sequence
from typing import NamedTuple, cast

from routeyard.consumers import tracing
from routeyard.consumers.kafka.bus import Partition, Record, commit
from routeyard.consumers.metrics import METRICS, Phases, child
from routeyard.consumers.retry import Action, backoff_for, classify, retrying
from routeyard.consumers.stores.context import Append
from routeyard.consumers.stores.correlations import Stored, decode_state
from routeyard.consumers.workers import variants as picking
from routeyard.consumers.workers.flow import Holds, Ledger
from routeyard.consumers.workers.rejection import Rejected
from routeyard.consumers.workers.router import REUSED, RouterWorker, Turn
from routeyard.router.circuit import Gate
from routeyard.router.correlation import Correlation
from routeyard.router.engines.base import EngineResult, RoutingRequest
from routeyard.schemas import ConversationEvent

__all__ = ["PipelinedRouter"]


class Waiting(NamedTuple):
    event: ConversationEvent
    record: Record
    key: str
    span: tracing.Span | None = None
    fetched: float = 0.0  # perf_counter at its fetch: routeyard_held_seconds{stage="route"}

    @property
    def conversation(self) -> tuple[str | None, str]:
        return self.event.tenant, self.event.conversation_id


class Group:
    """The turns admitted together: their variant picks and circuit gate (released with the last)."""

    def __init__(self, picks: picking.Picks, gate: Gate, left: int) -> None:
        self.picks, self.gate, self.left = picks, gate, left


class Decided(NamedTuple):
    waiting: Waiting
    turn: Turn
    request: RoutingRequest
    result: EngineResult
    latency_ms: float
    group: Group


class PipelinedRouter(RouterWorker):
    async def run(self, stop: asyncio.Event) -> None:
        self._ledger = Ledger()
        self._holds: Holds[Waiting] = Holds()
        self._ready: list[Waiting] = []
        self._decided: asyncio.Queue[Decided | None] = asyncio.Queue()
        self._changed = asyncio.Event()
        self._commit_due = asyncio.Event()
        self._committing = asyncio.Lock()
        self._backoff = backoff_for(self._settings)
        self._consumer.subscribe([self._topics.conversations], on_revoked=self._revoked)
        try:
            async with asyncio.TaskGroup() as tasks:
                self._tasks = tasks
                finisher = tasks.create_task(self._finish_loop(), name="route-finish")
                committer = tasks.create_task(self._commit_loop(), name="route-commit")
                await self._intake(stop)
                await self._drain()
                finisher.cancel()
                committer.cancel()
        except ExceptionGroup as group:  # the first failure, as the one-batch worker raises it
            raise group.exceptions[0] from None
        await self._outbox.settle()

    async def _intake(self, stop: asyncio.Event) -> None:
        cfg = self._settings.router
        while not stop.is_set():
            if self.tick is not None:
                self.tick()
            ready, self._ready = self._ready, []
            await self._admit(ready)
            room = cfg.max_in_flight - self._ledger.open
            if room <= 0:  # backpressure: nothing is fetched until turns are out
                await self._wait_changed(cfg.batch_wait_ms / 1000 or 0.01)
                continue
            records = await self._consumer.fetch(max_records=min(cfg.max_batch, room), timeout_ms=cfg.batch_wait_ms)
            if records:
                await self._take(records)

    async def _wait_changed(self, timeout: float) -> None:
        self._changed.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._changed.wait(), timeout)

    async def _drain(self) -> None:
        """Stopping: turns not admitted stay uncommitted (redelivered); admitted ones finish."""
        for waiting in [*self._holds.drop(lambda _: True), *self._ready]:
            self._ledger.abandon(waiting.record)
        self._ready = []
        while self._ledger.busy():
            await self._wait_changed(0.1)
        await self._commit()

    async def _take(self, records: Sequence[Record]) -> None:
        await self._swap_catalog()
        started_ns, fetched = time.time_ns(), time.perf_counter()
        phases = Phases("route")
        self._ledger.add(records)
        events, sources, dead = self._decode(records)
        phases.done("decode")
        go: list[Waiting] = []
        for event, record in zip(events, sources, strict=True):
            span = tracing.started("routeyard.route", tracing.carrier(record.headers), at_ns=started_ns)
            key = self._store.key(event.tenant, event.conversation_id, event.event_id)
            waiting = Waiting(event, record, key, span, fetched)
            if self._holds.claim(waiting.conversation, waiting):
                go.append(waiting)
        if dead:
            self._spawn(self._rejected(dead))
        await self._admit(go)

    async def _admit(self, go: list[Waiting]) -> None:
        """Append each turn to its context and read it (one call), then decide the fresh ones."""
        if not go:
            return
        appends = [
            Append(w.event.tenant, w.event.conversation_id, w.event.event_id, w.event.messages, w.key) for w in go
        ]
        phases = Phases("route")
        admitted, gate, picks = await retrying(
            lambda: asyncio.gather(
                self._context.admit_many(appends),
                self._gate(),
                picking.pick(self._catalog, self._variants, [w.event for w in go]),
            ),
            what="route admit",
            backoff=self._backoff,
        )
        phases.done("read")
        group = Group(picks, gate, 0)
        reused: list[Waiting] = []
        for w, (held, context) in zip(go, admitted, strict=True):
            if held is None:
                group.left += 1
                self._spawn(self._decide(w, Turn(w.event, w.key, context, w.span), group))
            elif decode_state(held).conversation_id != w.event.conversation_id:
                reused.append(w)
            else:  # decided before: redelivered, nothing to do
                METRICS.redelivered.inc()
                self._finished(w)
        if reused:
            self._spawn(self._rejected([Rejected(w.record, REUSED, w.event, stage="route") for w in reused], reused))
        if not group.left:
            await self._release(gate)

    async def _decide(self, waiting: Waiting, turn: Turn, group: Group) -> None:
        request = RoutingRequest(
            event_id=turn.event.event_id, conversation=turn.context, agents=self._catalog.restrict(turn.event.agents)
        )
        started = time.perf_counter()
        try:
            decide = functools.partial(self._engine.decide, [request])
            [result] = await retrying(decide, what="route decide", backoff=self._backoff)
        except Exception as exc:
            if classify(exc) is not Action.DEAD_LETTER:
                raise
            await self._rejected([Rejected(waiting.record, exc, waiting.event, stage="route")], [waiting])
            await self._ungroup(group)
            return
        latency_ms = (time.perf_counter() - started) * 1000
        child(METRICS.phase_seconds, stage="route", phase="decide").observe(latency_ms / 1000)
        self._observe_engine()
        await self._decided.put(Decided(waiting, turn, request, result, latency_ms, group))

    async def _finish_loop(self) -> None:
        while True:
            items = [await self._decided.get()]
            while not self._decided.empty():
                items.append(self._decided.get_nowait())
            decided = [d for d in items if d is not None]
            if decided:
                await self._finish(decided)
            self._commit_due.set()

    async def _commit_loop(self) -> None:
        while True:
            await self._commit_due.wait()
            self._commit_due.clear()
            await self._commit()

    async def _commit(self, partitions: set[Partition] | None = None) -> None:
        """Commit what is contiguous (in ``partitions``, or everywhere). One commit at a time, so
        a partition's committed offset only moves forward; committed records free in-flight room."""
        async with self._committing:
            await commit(self._consumer, self._ledger.committable(partitions))
        self._changed.set()

    async def _finish(self, decided: list[Decided]) -> None:
        """Store and publish; a failure that is a record's fault is isolated, the turn that still
        fails alone dead-lettered (as ``consume_batches`` does)."""
        try:
            await retrying(functools.partial(self._publish, decided), what="route publish", backoff=self._backoff)
        except Exception as exc:
            if classify(exc) is not Action.DEAD_LETTER:
                raise
            if len(decided) > 1:
                for one in decided:
                    await self._finish([one])
                return
            w = decided[0].waiting
            await retrying(
                functools.partial(self._reject, [Rejected(w.record, exc, w.event, stage="route")]),
                what="route reject",
                backoff=self._backoff,
            )
        METRICS.batch_size.observe(len(decided))
        for d in decided:
            self._finished(d.waiting)
            await self._ungroup(d.group)

    async def _publish(self, decided: list[Decided]) -> None:
        phases = Phases("route")
        writes = []
        for d in decided:
            self._picks = d.group.picks  # _open reads the picks of the turn's own admission (no await between)
            writes.append(self._open(d.turn, d.request, d.result, d.latency_ms, d.group.gate))
        stored = await self._store.write_many([w for w, _ in writes], time.time())
        phases.done("store")
        items = {
            w.key: Stored(cast(Correlation, w.state), raw, effects)
            for (w, effects), raw in zip(writes, stored, strict=True)
            if raw
        }
        await self._outbox.carry_out(items)
        phases.done("publish")

    async def _ungroup(self, group: Group) -> None:
        group.left -= 1
        if group.left == 0:
            await self._release(group.gate)

    def _finished(self, waiting: Waiting) -> None:
        """Its outcome is out: its offset may be committed, its conversation's next turn goes."""
        self._ledger.finish(waiting.record)
        if waiting.fetched:
            child(METRICS.held_seconds, stage="route").observe(time.perf_counter() - waiting.fetched)
        if waiting.span is not None:
            waiting.span.end()
        following = self._holds.release(waiting.conversation)
        if following is not None:
            self._ready.append(following)
        self._decided.put_nowait(None)  # wakes the finisher, which has what is now contiguous committed

    async def _rejected(self, dead: list[Rejected], claimed: Sequence[Waiting] = ()) -> None:
        """Publish the rejections, then finish the records (``claimed``: turns holding their
        conversation, which the next turn may now have)."""
        await retrying(functools.partial(self._reject, dead), what="route reject", backoff=self._backoff)
        for waiting in claimed:
            self._finished(waiting)
        if not claimed:
            for r in dead:
                self._ledger.finish(r.record)
            self._decided.put_nowait(None)

    def _spawn(self, work: Coroutine[object, object, None]) -> None:
        self._tasks.create_task(work)

    async def _revoked(self, partitions: set[Partition]) -> None:
        """Drop the revoked partitions' waiting turns; let their admitted turns finish; commit."""
        gone = [w for w in self._holds.drop(lambda w: _partition(w.record) in partitions)]
        gone += [w for w in self._ready if _partition(w.record) in partitions]
        self._ready = [w for w in self._ready if _partition(w.record) not in partitions]
        for w in gone:
            self._ledger.abandon(w.record)
        while self._ledger.busy(partitions):
            await self._wait_changed(0.1)
        await self._commit(partitions)
        self._ledger.forget(partitions)


def _partition(record: Record) -> Partition:
    return Partition(record.topic, record.partition)
