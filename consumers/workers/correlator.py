"""The correlator: agent replies in, one response per event out.

Two loops in one process:
- replies: decode -> load each event's correlation -> record the replies (pure transition) ->
  store with compare-and-set -> carry out the effects (next sequential task, context append,
  response) -> commit offsets.
- sweeper: every ``sweep_interval_ms``, claim correlations whose wake time passed (an agent's
  deadline, or an outbox nobody confirmed), time agents out, and carry out what is due.

Forged replies (a token, agent, tenant or conversation that does not match the task; see
``router/correlation.py``) change nothing either: they are counted (outcome ``forged``), logged at
WARNING with their coordinates and dead-lettered with the reason; they never reach a breaker.

Late and duplicate replies change nothing that was published; they are counted (late ones on
the correlation too, and logged at DEBUG without content). Each attempt's outcome (ok reply;
error reply or timeout) goes to the agent's circuit breaker once its correlation is stored.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime
from typing import cast

import msgspec
from routeyard.consumers import tracing
from routeyard.consumers.kafka.bus import (
    Consumer,
    Outgoing,
    Producer,
    Record,
    consume_batches,
    dead_letter,
    dead_letterer,
)
from routeyard.consumers.metrics import METRICS, Phases, child
from routeyard.consumers.retry import backoff_for, retrying
from routeyard.consumers.settings import Settings
from routeyard.consumers.stores.circuits import CircuitStore
from routeyard.consumers.stores.context import ContextStore
from routeyard.consumers.stores.correlations import CorrelationStore, Done, Outbox, Stored, Write, decode_state
from routeyard.consumers.stores.variants import VariantStore
from routeyard.consumers.workers.turns import TurnLog
from routeyard.router.correlation import (
    Correlation,
    Effect,
    Outcome,
    Transition,
    on_deadline,
    on_reply,
    redeliver,
    response_status,
    stage,
)
from routeyard.router.variants import breaker_name
from routeyard.schemas import AgentReply, encode, reply_decoder

log = logging.getLogger(__name__)

CAS_ATTEMPTS = 10
CATCH_UP_PATIENCE_S = 60.0
GROUP_JOIN_GRACE_S = 15.0
"""With no replies partition assigned this long after start, another correlator holds them all."""

Step = tuple[Correlation, list[Effect], list[Outcome]]
Change = Callable[[Correlation, float, str, frozenset[str]], Step]
"""(stored state, now, its key, agents whose breaker is not closed) -> the change."""


class Correlator:
    tick: Callable[[], None] | None = None
    """Called on every turn of the batch loop (the process's liveness probe)."""
    _sweep_read_to: float | None = None
    """The running sweep's ``replies_read_to``: deadlines after it wait for the unread replies."""

    def __init__(
        self,
        *,
        settings: Settings,
        consumer: Consumer,
        producer: Producer,
        context: ContextStore,
        store: CorrelationStore,
        circuits: CircuitStore | None = None,
        variants: VariantStore | None = None,
    ) -> None:
        self._settings = settings
        self._variants = variants
        self._born = time.monotonic()
        self._circuits = circuits
        self._topics = settings.topics
        self._consumer = consumer
        self._producer = producer
        self._store = store
        self._outbox = Outbox(store, context, producer)
        self._turns = TurnLog(settings.log_turns)
        self._read_to: dict[int, float] = {}
        """Per replies partition: the newest record time (s) among the records handled."""
        self._in_hand: dict[int, float] = {}
        """Per replies partition: the oldest record time (s) in the batch being handled."""

    async def run(self, stop: asyncio.Event) -> None:
        async with asyncio.TaskGroup() as group:
            group.create_task(self._replies_loop(stop))
            group.create_task(self._sweep_loop(stop))
        await self._outbox.settle()

    async def _replies_loop(self, stop: asyncio.Event) -> None:
        await consume_batches(
            self._consumer,
            self.handle,
            stop,
            max_records=self._settings.correlator.max_batch,
            wait_ms=self._settings.router.batch_wait_ms,
            what="correlate batch",
            poison=dead_letterer(self._producer, self._topics.dead_letters, stage="correlate"),
            backoff=backoff_for(self._settings),
            tick=self.tick,
            stage="correlate",
        )

    async def _sweep_loop(self, stop: asyncio.Event) -> None:
        interval = self._settings.correlator.sweep_interval_ms / 1000
        await self._catch_up(stop)
        while not stop.is_set():
            await retrying(self.sweep, what="sweep", backoff=backoff_for(self._settings))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), interval)

    async def handle(self, records: Sequence[Record]) -> None:
        for r in records:
            at = r.timestamp / 1000
            self._in_hand[r.partition] = min(self._in_hand.get(r.partition, at), at)
        try:
            await self._handle(records)
        finally:
            self._in_hand.clear()
        for r in records:
            self._read_to[r.partition] = max(self._read_to.get(r.partition, 0.0), r.timestamp / 1000)

    async def _handle(self, records: Sequence[Record]) -> None:
        phases = Phases("correlate")
        replies: dict[str, list[AgentReply]] = defaultdict(list)
        sources: dict[str, list[Record]] = defaultdict(list)
        dead: list[Outgoing] = []
        spans = []
        for record in records:
            try:
                reply = self._bounded(record, reply_decoder.decode(record.value or b""))
            except Exception as exc:  # pure decoding: the record's fault (a RecursionError of deep JSON too)
                dead.append(dead_letter(record, self._topics.dead_letters, stage="correlate", error=exc))
                continue
            key = self._store.key(reply.tenant, reply.conversation_id, reply.event_id)
            replies[key].append(reply)
            sources[key].append(record)
            spans.append(tracing.started("routeyard.reply", tracing.carrier(record.headers), agent=reply.agent))
        phases.done("decode")
        refused: dict[str, dict[int, str]] = {}

        def record_replies(state: Correlation, now: float, key: str, blocked: frozenset[str]) -> Step:
            step, refused[key] = self._record(state, replies[key], now, blocked)
            return step

        try:
            strays, finished = await self._apply(replies, record_replies, phases)
        finally:
            for span in spans:
                span.end()
        dead += self._refused(refused, sources)
        if finished:  # answered and shrunk to a done marker: late, as on a state
            await self._count_late({key: len(replies[key]) for key in finished})
        for key in strays:  # no correlation: never routed here, or expired long ago
            child(METRICS.replies, outcome="unknown").inc(len(sources[key]))
            why = "no correlation for this event (unknown event, or finished longer ago than dedup_ttl_s)"
            dead += [dead_letter(r, self._topics.dead_letters, stage="correlate", error=why) for r in sources[key]]
        if dead:
            await self._producer.publish(dead)
            child(METRICS.dead_letters, stage="correlate").inc(len(dead))

    async def _catch_up(self, stop: asyncio.Event, patience_s: float = CATCH_UP_PATIENCE_S) -> None:
        """Before timing anyone out, read the replies that arrived while no correlator ran: after a
        restart, an agent that answered in time must not count as timed out (nor trip its breaker)."""
        started = time.monotonic()
        while not stop.is_set() and time.monotonic() - started < patience_s:
            if await self._caught_up():
                return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 0.05)
        if not stop.is_set():
            log.warning("replies not caught up after %.0f s; timing agents out anyway", patience_s)

    async def _caught_up(self) -> bool:
        """Every assigned replies partition read up to its high watermark (none assigned: nothing to read)."""
        partitions = self._consumer.assignment()
        if not partitions:
            return self._consumer.subscribed() and time.monotonic() - self._born > GROUP_JOIN_GRACE_S
        for tp in partitions:
            end = self._consumer.highwater(tp)
            if end is None or await self._consumer.position(tp) < end:
                return False
        return True

    async def replies_read_to(self, now: float) -> float:
        """The time before which every reply on this correlator's partitions has been handled: ``now``
        when it is caught up; else the time of the record it is at on the partition furthest
        behind (never more than ``CATCH_UP_PATIENCE_S`` back: a correlator that cannot catch up
        still times agents out). Record times are the producers' clocks, so skew between an
        agent's host and this one shifts it by as much."""
        read_to = now
        for oldest in self._in_hand.values():
            read_to = min(read_to, oldest)
        for tp in self._consumer.assignment():
            end = self._consumer.highwater(tp)
            if end is not None and await self._consumer.position(tp) < end:  # behind: hold at what it read
                read_to = min(read_to, self._read_to.get(tp.partition, 0.0))
        return max(read_to, now - CATCH_UP_PATIENCE_S)

    async def sweep(self) -> int:
        METRICS.pending.set(await self._store.pending())
        phases = Phases("sweep")
        now = time.time()
        self._sweep_read_to = read_to = await self.replies_read_to(now)
        METRICS.timeouts_held.set(now - read_to)
        keys = await self._store.claim_due(now, due=read_to)
        if keys:
            phases.done("claim")
            await self._apply(keys, self._expire, phases)  # done markers are left alone: nothing is due
        return len(keys)

    def _record(
        self, state: Correlation, replies: list[AgentReply], now: float, blocked: frozenset[str]
    ) -> tuple[Step, dict[int, str]]:
        """The change the replies make, and the refused ones (index in ``replies`` -> why)."""
        effects: list[Effect] = []
        outcomes: list[Outcome] = []
        refused: dict[int, str] = {}
        for i, reply in enumerate(replies):
            transition, outcome = on_reply(state, self._fits(state, reply), now, blocked)
            child(METRICS.replies, outcome=outcome).inc()
            if outcome == "recorded":
                _reply_took(state, reply, now)
            if outcome == "late":
                log.debug("late reply from %s for event %s (task %s)", reply.agent, reply.event_id, reply.task_id)
            if transition.refused is not None:
                refused[i] = transition.refused
            state = self._observe(transition)
            effects += transition.effects
            outcomes += transition.outcomes
        return (state, effects, outcomes), refused

    def _refused(self, refused: dict[str, dict[int, str]], sources: dict[str, list[Record]]) -> list[Outgoing]:
        """Dead letters for the replies refused as forged (as the last stored change saw them)."""
        dead = []
        for key, why in refused.items():
            for i, reason in why.items():
                r = sources[key][i]
                log.warning("refused reply at %s[%d]@%d: %s", r.topic, r.partition, r.offset, reason)
                dead.append(dead_letter(r, self._topics.dead_letters, stage="correlate", error=reason))
        return dead

    def _bounded(self, record: Record, reply: AgentReply) -> AgentReply:
        """A reply record over ``correlator.max_reply_bytes`` is recorded as an error reply saying so."""
        size, limit = len(record.value or b""), self._settings.correlator.max_reply_bytes
        if size <= limit:
            return reply
        reason = f"reply of {size} bytes exceeds correlator.max_reply_bytes ({limit})"
        return msgspec.structs.replace(reply, status="error", content="", error=reason)

    def _fits(self, state: Correlation, reply: AgentReply) -> AgentReply:
        """``reply`` if the response still has room for it beside the other agents' replies
        (``correlator.max_response_bytes``), else an error reply saying so. Only a len() check
        unless the replies are large: a character takes at most 6 bytes in JSON."""
        room = self._settings.correlator.max_response_bytes
        others = [s.reply for s in state.slots if s.reply is not None and s.agent != reply.agent]
        if sum(_most_bytes(r) for r in others) + _most_bytes(reply) <= room:
            return reply
        used, size = sum(len(encode(r)) for r in others), len(encode(reply))
        if used + size <= room:
            return reply
        reason = f"reply of {size} bytes exceeds the room left in the response ({room - used} of {room} bytes)"
        return msgspec.structs.replace(reply, status="error", content="", error=reason)

    def _expire(self, state: Correlation, now: float, key: str, blocked: frozenset[str]) -> Step:
        """Time agents out; if the outbox is stale (its writer died), carry it out again."""
        rerun: list[Effect] = []
        if state.outbox and now - state.outbox_since >= self._store.lease_s:
            state = redeliver(state, now)
            rerun = list(state.outbox)
            METRICS.outbox_rerun.inc(len(rerun))
        transition = on_deadline(state, now, blocked, replies_read_to=self._sweep_read_to)
        return self._observe(transition), rerun + transition.effects, transition.outcomes

    @staticmethod
    def _observe(transition: Transition) -> Correlation:
        if transition.response is not None:
            child(METRICS.responses, status=transition.response.status).inc()
        for agent in transition.withheld:
            child(METRICS.withheld_retries, agent=agent).inc()
        return transition.state

    async def _count_late(self, counts: dict[str, int]) -> None:
        """Late replies to finished turns: counted, and on their done markers (compare-and-set)."""
        child(METRICS.replies, outcome="late").inc(sum(counts.values()))
        pending = dict(counts)
        for _ in range(CAS_ATTEMPTS):
            if not pending:
                return
            writes = []
            for key, raw in zip(pending, await self._store.get_many(list(pending)), strict=True):
                marker = decode_state(raw) if raw is not None else None
                if isinstance(marker, Done):
                    late = msgspec.structs.replace(marker, late_replies=marker.late_replies + pending[key])
                    writes.append(Write(key, raw, late))
            results = await self._store.write_many(writes, time.time())
            pending = {w.key: pending[w.key] for w, ok in zip(writes, results, strict=True) if ok is None}

    async def _load(self, keys: list[str]) -> tuple[dict[str, tuple[bytes, Correlation]], list[str], list[str]]:
        """The stored states of ``keys``; the keys with nothing stored; those shrunk to a done marker."""
        states: dict[str, tuple[bytes, Correlation]] = {}
        missing: list[str] = []
        finished: list[str] = []
        for key, raw in zip(keys, await self._store.get_many(keys), strict=True):
            state = decode_state(raw) if raw is not None else None
            if isinstance(state, Correlation):
                states[key] = (raw, state)  # type: ignore[assignment]  # raw is bytes here
            else:
                (finished if isinstance(state, Done) else missing).append(key)
        return states, missing, finished

    async def _apply(self, keys: Iterable[str], change: Change, phases: Phases) -> tuple[list[str], list[str]]:
        """Load, change and compare-and-set each key until it sticks; then carry out the effects.

        Returns the keys that have no stored correlation, and those that hold only a done marker
        (finished: nothing changes them).
        """
        pending = list(keys)
        missing: list[str] = []
        finished: list[str] = []
        done: dict[str, Stored] = {}
        outcomes: dict[str, list[Outcome]] = {}
        for _ in range(CAS_ATTEMPTS):
            if not pending:
                break
            states, absent, shrunk = await self._load(pending)
            missing += absent
            finished += shrunk
            blocked = await self._blocked([state for _, state in states.values()])
            phases.done("read")
            now = time.time()
            writes: list[tuple[Write, list[Effect]]] = []
            for key, (raw, stored) in states.items():
                state, effects, outcomes[key] = change(stored, now, key, blocked)
                new_effects = [e for e in effects if e not in state.outbox]
                writes.append((Write(key, raw, stage(state, new_effects, now)), effects))
            written = await self._store.write_many([w for w, _ in writes], now)
            phases.done("store")
            pending = []
            for (write, effects), now_raw in zip(writes, written, strict=True):
                if now_raw is not None:  # stage() made a correlation: a done marker is never written here
                    done[write.key] = Stored(cast(Correlation, write.state), now_raw, effects)
                else:
                    pending.append(write.key)
        if pending:
            raise RuntimeError(f"{len(pending)} correlations kept changing under compare-and-set")
        await self._outbox.carry_out(done)
        phases.done("publish")
        _timed_out([(d.state, outcomes[key]) for key, d in done.items()], self._turns)
        answered = [d.state for d in done.values() if any(e.id.startswith("response:") for e in d.effects)]
        _responded(answered, self._turns)
        await self._feedback([o for key in done for o in outcomes[key]])
        return missing, finished

    async def _blocked(self, states: list[Correlation]) -> frozenset[str]:
        """The agents that may get a retry in this batch whose breaker is not closed (read from
        Redis only when some agent may: retries are off by default)."""
        if self._circuits is None:
            return frozenset()
        agents = {
            s.agent
            for state in states
            if not state.done
            for s in state.slots
            if s.kind == "agent" and s.status in ("waiting", "retrying") and s.attempt <= s.retries
        }
        return await self._circuits.blocked(agents) if agents else frozenset()

    async def _feedback(self, outcomes: list[Outcome]) -> None:
        """Stored attempts' outcomes: metrics, and each agent's circuit breaker (filters have none)."""
        for o in outcomes:
            if o.filter:
                child(METRICS.filters, filter=o.agent, outcome=o.verdict or o.kind).inc()
                continue
            if o.kind == "timeout":
                child(METRICS.agent_timeouts, agent=o.agent).inc()
            if o.retry:
                child(METRICS.task_retries, agent=o.agent).inc()
        varied = [o for o in outcomes if o.variant is not None]
        for o in varied:
            child(METRICS.variant_outcomes, agent=o.agent, variant=o.variant or "", outcome=o.kind).inc()
        if self._circuits is not None:  # a canary has its own breaker; a filter has none
            results = [(o.agent, o.kind == "ok") for o in outcomes if not o.canary and not o.filter]
            results += [(breaker_name(o.agent, o.variant), o.kind == "ok") for o in varied if o.variant]
            await self._circuits.record(results, time.time())
        if self._variants is not None and varied:
            await self._variants.record([(o.agent, o.variant or "", o.kind) for o in varied])


def _timed_out(changes: list[tuple[Correlation, list[Outcome]]], turns: TurnLog) -> None:
    """A span and a turn-log line per attempt the sweeper timed out, in its conversation's trace
    (ended at once: it marks the moment the deadline was enforced; the agent's own span, if any,
    shows its work)."""
    for state, outcomes in changes:
        for o in outcomes:
            if o.kind == "timeout":
                turns.timed_out(state, o)
                span = tracing.started("routeyard.timeout", state.trace, agent=o.agent, attempt=o.attempt)
                span.set(retry=o.retry)
                span.error(f"{o.agent} missed its deadline (attempt {o.attempt})")
                span.end()


def _most_bytes(reply: AgentReply) -> int:
    """An upper bound of the reply's size in JSON: a character takes at most 6 bytes (a \\u
    escape), and the fields that are not text take less than 256 bytes together."""
    texts = (reply.content, reply.error or "", reply.task_id, reply.event_id, reply.conversation_id, reply.agent)
    return 6 * (sum(len(t) for t in texts) + len(reply.tenant or "")) + 256


def _age(created_at: datetime | None, now: float) -> float | None:
    """Seconds since ``created_at`` (naive means UTC); None when absent or out of range (a
    correlation stored before the router rejected such dates)."""
    if created_at is None:
        return None
    try:
        return now - (created_at if created_at.tzinfo else created_at.replace(tzinfo=UTC)).timestamp()
    except (OverflowError, ValueError, OSError):
        return None


def _responded(states: list[Correlation], turns: TurnLog) -> None:
    """Responses just published: end-to-end latency, the turn log's line, and the trace's last span."""
    now = time.time()
    for state in states:
        status = response_status(state.slots)
        took = _age(state.created_at, now)
        turns.responded(state, status, took)
        if took is not None and took >= 0:
            child(METRICS.end_to_end_seconds, status=status).observe(took)
        span = tracing.started("routeyard.respond", state.trace, status=status, routes=state.routes)
        span.set(end_to_end_ms=round(took * 1000, 3) if took is not None else None)
        span.end()


def _reply_took(state: Correlation, reply: AgentReply, now: float) -> None:
    """``routeyard_agent_reply_seconds``: the current attempt's task dispatched (its deadline less
    the agent's timeout) -> its reply recorded. An earlier attempt's late rescue is not timed."""
    for slot in state.slots:
        if slot.status == "waiting" and slot.deadline is not None and slot.current_task_id == reply.task_id:
            took = max(now - (slot.deadline - slot.timeout_s), 0.0)
            if slot.kind != "agent":
                child(METRICS.filter_seconds, filter=slot.agent).observe(took)
                continue
            child(METRICS.reply_seconds, agent=slot.agent).observe(took)
            if slot.variant is not None:
                child(METRICS.variant_reply_seconds, agent=slot.agent, variant=slot.variant).observe(took)
