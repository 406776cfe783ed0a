"""The router worker: conversations in, decisions and agent tasks out.

One batch at a time: decode -> append each turn to its context (Redis) -> one engine call for
the whole batch -> store each correlation with its effects -> publish tasks and decisions ->
commit offsets. A redelivered event finds its correlation (or its done marker) already stored and
is neither appended to its context nor decided nor dispatched again; that check and the append
are one Redis script call. Undecodable or invalid events, and events whose id another
conversation of the tenant already used, go to the dead-letter topic with the reason, and their
sender gets a ``rejected`` response (routeyard.consumers.workers.rejection), each published once.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
import uuid
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import NamedTuple, cast

import msgspec
from routeyard.consumers import tracing
from routeyard.consumers.catalogs.live import LiveCatalog
from routeyard.consumers.kafka.bus import Consumer, Producer, Record, consume_batches
from routeyard.consumers.metrics import METRICS, Phases, child
from routeyard.consumers.retry import backoff_for
from routeyard.consumers.settings import Settings
from routeyard.consumers.stores.circuits import CircuitStore
from routeyard.consumers.stores.context import Append, ContextStore
from routeyard.consumers.stores.correlations import CorrelationStore, Outbox, Stored, Write, decode_state
from routeyard.consumers.stores.variants import VariantStore
from routeyard.consumers.workers import turns
from routeyard.consumers.workers import variants as picking
from routeyard.consumers.workers.rejection import Rejected, Rejecter
from routeyard.router.catalog import Catalog
from routeyard.router.circuit import Gate, probe_lease
from routeyard.router.continuation import continue_turn
from routeyard.router.correlation import Correlation, Effect, Target, stage, start
from routeyard.router.engines.base import DecisionEngine, EngineResult, RoutingRequest
from routeyard.router.filters import FilterSpec, input_chain, output_chain
from routeyard.router.plan import avoid_open_circuits, decide_routes, make_decision
from routeyard.router.validation import InvalidEvent, answerable, utc, validate
from routeyard.schemas import (
    ConversationEvent,
    Message,
    RoutingDecision,
    TaskKind,
    encode,
    event_decoder,
)

log = logging.getLogger(__name__)


class Turn(NamedTuple):
    """A turn to decide: its event, correlation key, context (with the turn appended) and span."""

    event: ConversationEvent
    key: str
    context: list[Message]
    span: tracing.Span | None


REUSED = "event id already used by another conversation of this tenant (event ids must be unique)"


def _first_of_each(events: list[ConversationEvent], keys: list[str]) -> tuple[list[int], list[tuple[int, str]]]:
    """The indexes of the first event of each correlation key in the batch, and the later ones
    of another conversation, refused. Later copies in the same conversation are redeliveries."""
    firsts: dict[str, int] = {}
    refused: list[tuple[int, str]] = []
    for i, key in enumerate(keys):
        first = firsts.setdefault(key, i)
        if first == i:
            continue
        if events[first].conversation_id != events[i].conversation_id:
            refused.append((i, REUSED))
        else:
            METRICS.redelivered.inc()
    return list(firsts.values()), refused


class RouterWorker:
    tick: Callable[[], None] | None = None
    """Called on every turn of the batch loop (the process's liveness probe)."""

    def __init__(
        self,
        *,
        settings: Settings,
        catalog: Catalog,
        engine: DecisionEngine,
        consumer: Consumer,
        producer: Producer,
        context: ContextStore,
        store: CorrelationStore,
        circuits: CircuitStore | None = None,
        variants: VariantStore | None = None,
        live: LiveCatalog | None = None,
    ) -> None:
        self._settings = settings
        self._variants = variants
        self._picks: picking.Picks = {}
        """This batch's variants: (tenant, conversation, agent) -> (variant, why it moved)."""
        self._live = live
        """Where a newer catalog comes from (checked between batches); None: ``catalog`` for good."""
        self._catalog_source = live.source.kind if live is not None else "file"
        self._catalog_version = live.version if live is not None else catalog.version
        self._unavailable: frozenset[str] = frozenset()
        self._registered: tuple[str, ...] = ()
        self._circuits = circuits
        self._topics = settings.topics
        self._catalog = catalog
        self._rules = settings.event_rules()
        self._engine = engine
        self._consumer = consumer
        self._producer = producer
        self._context = context
        self._store = store
        self._outbox = Outbox(store, context, producer)
        allowed = settings.router.tenants or frozenset()  # an unknown tenant has no topic of its own
        self._rejecter = Rejecter(
            producer,
            store,
            settings.topics,
            may_answer_on=lambda topic: answerable(topic, self._catalog, settings.topics),
            answer_topic=lambda tenant: settings.response_topic(tenant if tenant in allowed else None),
        )
        self.worker_id = f"{socket.gethostname()}:{os.getpid()}/{uuid.uuid4().hex[:6]}"

    async def run(self, stop: asyncio.Event) -> None:
        cfg = self._settings.router
        await consume_batches(
            self._consumer,
            self.handle,
            stop,
            max_records=cfg.max_batch,
            wait_ms=cfg.batch_wait_ms,
            what="route batch",
            poison=self._poison,
            backoff=backoff_for(self._settings),
            tick=self.tick,
            stage="route",
        )
        await self._outbox.settle()

    async def handle(self, records: Sequence[Record]) -> None:
        await self._swap_catalog()
        started_ns = time.time_ns()
        phases = Phases("route")
        events, sources, dead = self._decode(records)
        phases.done("decode")
        if events:
            spans = {
                e.event_id: tracing.started("routeyard.route", tracing.carrier(r.headers), at_ns=started_ns)
                for e, r in zip(events, sources, strict=True)
            }
            try:
                refused = await self._route(events, spans, phases)
            finally:
                for span in spans.values():
                    span.end()
            dead += [Rejected(sources[i], why, events[i], stage="route") for i, why in refused]
        if dead:
            await self._reject(dead)

    async def _swap_catalog(self) -> None:
        """Between batches: the newest catalog version and the registered agents alive now. Engines
        take the agents with each request, so the catalog is all that changes."""
        if self._live is None:
            return
        try:
            await self._live.refresh()
        except Exception as exc:  # the catalog in effect stays; the next batch tries again
            log.warning("catalog not refreshed, keeping version %s: %s", self._catalog_version, exc)
            return
        live = self._live
        self._catalog, self._catalog_version = live.catalog, live.version
        self._registered, self._unavailable = live.registered, live.unavailable

    async def _poison(self, record: Record, error: BaseException) -> None:
        """A record whose handling failed on its own (batch isolation): rejected like the rest."""
        await self._reject([Rejected(record, error, stage="route")])

    async def _reject(self, dead: list[Rejected]) -> None:
        sent = await self._rejecter.reject(dead)
        child(METRICS.dead_letters, stage="route").inc(sent)

    def _decode(self, records: Sequence[Record]) -> tuple[list[ConversationEvent], list[Record], list[Rejected]]:
        """The valid events with the records they came from, and the rest, rejected. Decoding and
        validating are pure: any exception they raise is the record's fault."""
        events: list[ConversationEvent] = []
        sources: list[Record] = []
        dead: list[Rejected] = []
        limit = self._settings.router.max_event_bytes
        for record in records:
            event = None
            try:
                if record.value is None or len(record.value) > limit:
                    raise InvalidEvent(f"event is empty or larger than {limit} bytes")
                event = event_decoder.decode(record.value)
                validate(event, self._catalog, self._rules)
            except Exception as exc:  # the record's fault, whatever it is (a RecursionError of deep JSON too)
                log.warning("dead-lettering %s[%d]@%d: %s", record.topic, record.partition, record.offset, exc)
                dead.append(Rejected(record, exc, event))
                continue
            events.append(event)
            sources.append(record)
        return events, sources, dead

    async def _route(
        self,
        events: list[ConversationEvent],
        spans: dict[str, tracing.Span] | None = None,
        phases: Phases | None = None,
    ) -> list[tuple[int, str]]:
        """Route the batch's events; returns (index, reason) of those refused (dead-lettered)."""
        phases = phases or Phases("route")
        keys = [self._store.key(e.tenant, e.conversation_id, e.event_id) for e in events]
        firsts, refused = _first_of_each(events, keys)
        # Two calls at once, on two connections: one round trip's wait. The first appends each
        # turn to its context only where its correlation key is absent, and returns that key's
        # value where it is present (a redelivery, or an event id another conversation used).
        appends = [
            Append(events[i].tenant, events[i].conversation_id, events[i].event_id, events[i].messages, keys[i])
            for i in firsts
        ]
        admitted, gate, self._picks = await asyncio.gather(
            self._context.admit_many(appends),
            self._gate(),
            picking.pick(self._catalog, self._variants, [events[i] for i in firsts]),
        )
        phases.done("read")
        fresh: list[Turn] = []
        for i, (held, context) in zip(firsts, admitted, strict=True):
            if held is None:
                event = events[i]
                fresh.append(Turn(event, keys[i], context, (spans or {}).get(event.event_id)))
            elif decode_state(held).conversation_id != events[i].conversation_id:
                refused.append((i, REUSED))
            else:  # decided before: redelivered, nothing to do
                METRICS.redelivered.inc()
        try:
            await self._dispatch(fresh, gate, phases)
        finally:  # also when deciding failed: a probe claimed and not used must not wait out its lease
            await self._release(gate)
        return refused

    async def _dispatch(self, turns: list[Turn], gate: Gate, phases: Phases) -> None:
        """Decide the turns not seen before, store their correlations, carry out their effects."""
        if not turns:
            return
        requests = [
            RoutingRequest(
                event_id=t.event.event_id,
                conversation=t.context,
                agents=self._catalog.restrict(t.event.agents),
            )
            for t in turns
        ]
        started = time.perf_counter()
        results = await self._engine.decide(requests)
        latency_ms = (time.perf_counter() - started) * 1000 / max(1, len(requests))
        METRICS.batch_size.observe(len(requests))
        self._observe_engine()
        writes = [
            self._open(turn, request, result, latency_ms, gate)
            for turn, request, result in zip(turns, requests, results, strict=True)
        ]
        phases.done("decide")
        stored = await self._store.write_many([w for w, _ in writes], time.time())
        phases.done("store")
        items = {
            w.key: Stored(cast(Correlation, w.state), raw, effects)  # _open writes correlations only
            for (w, effects), raw in zip(writes, stored, strict=True)
            if raw
        }
        await self._outbox.carry_out(items)
        phases.done("publish")

    async def _release(self, gate: Gate) -> None:
        if self._circuits is not None and gate.unused_probes():
            await self._circuits.release(gate.unused_probes())

    def _open(
        self, turn: Turn, request: RoutingRequest, result: EngineResult, latency_ms: float, gate: Gate | None = None
    ) -> tuple[Write, list[Effect]]:
        event, span = turn.event, turn.span
        now = time.time()
        mode = event.mode or self._settings.router.mode
        routing = decide_routes(
            result, request.agents, self._catalog, min_confidence=self._settings.router.min_confidence
        )
        if self._settings.router.continuation:
            routing = continue_turn(routing, result, request, override=self._settings.router.continuation_override)
        if gate is not None:
            allowed = [a.name for a in request.agents]
            routing = avoid_open_circuits(routing, gate.take, self._catalog, allowed)
            for name in routing.circuit_open:
                child(METRICS.circuit_rerouted, agent=name).inc()
        if self._unavailable:
            allowed = [a.name for a in request.agents]
            unavailable = self._unavailable
            routing = avoid_open_circuits(
                routing, lambda n: n not in unavailable, self._catalog, allowed, label="unavailable"
            )
        targets = [self._target(name, event) for name in routing.routes]
        decision = make_decision(
            event,
            routing,
            result,
            engine=self._engine.name,
            mode=mode,
            catalog_version=self._catalog_version,
            latency_ms=latency_ms,
            decided_at=datetime.fromtimestamp(now, UTC),
            worker=self.worker_id,
        )
        decision = picking.recorded(decision, targets, self._picks, self._catalog)
        decision = msgspec.structs.replace(
            decision,
            catalog_source=self._catalog_source,
            registered=[name for name in decision.routes if name in self._registered],
        )
        self._count(decision)
        turns.decided(decision)
        if span is not None:
            span.set(
                routes=list(decision.routes),
                engine=decision.engine,
                mode=mode,
                decision_ms=round(latency_ms, 3),
                confidence=decision.confidence,
                fallback_reason=decision.fallback_reason,
                catalog_version=decision.catalog_version,
                variants=[f"{a}={v}" for a, v in sorted(decision.variants.items())],
            )
        trace = span.context() if span is not None else {}
        chain = self._filters(routing.routes)
        transition = start(
            event_id=event.event_id,
            conversation_id=event.conversation_id,
            tenant=event.tenant,
            mode=mode,
            agents=targets,
            context=request.conversation,
            replies_topic=self._topics.replies,
            response_topic=event.reply_topic or self._settings.response_topic(event.tenant),
            created_at=utc(event.created_at),
            metadata=event.metadata,
            now=now,
            trace=trace,
            stream_topic=self._topics.streams if event.stream else None,
            filters=chain,
        )
        effects = [self._decision_effect(decision, trace), *transition.effects]
        if not any(f.kind == "input_filter" for f in chain):  # a copy now would bypass the input filters
            effects += picking.shadow_tasks(
                decision,
                self._catalog,
                self._topics,
                request.conversation,
                event.metadata,
                now,
                transition.state.headers(),
            )
        return Write(turn.key, None, stage(transition.state, effects, now)), effects

    def _observe_engine(self) -> None:
        value = self._engine.prefix_cache_hit_rate()
        if value is not None:
            METRICS.prefix_cache_hit_rate.set(value)

    async def _gate(self) -> Gate:
        """Which agents this batch may use (their circuit breakers), read once per batch."""
        if self._circuits is None:
            return Gate()
        retry = self._settings.retry
        leases = {
            a.name: probe_lease(a.timeout_s, self._retries(a.name), retry.backoff_max_s) for a in self._catalog.agents
        }
        return await self._circuits.gate(leases, time.time())

    def _retries(self, name: str) -> int:
        spec = self._catalog.get(name)
        retries = spec.retries if spec is not None else None
        return self._settings.retry.agent_retries if retries is None else retries

    def _target(self, name: str, event: ConversationEvent | None = None) -> Target:
        spec = self._catalog.get(name)
        assert spec is not None  # decide_routes keeps catalog names only
        retry = self._settings.retry
        topic, variant, canary = picking.routed(spec, event, self._picks, self._topics)
        return Target(
            agent=name,
            topic=topic,
            variant=variant,
            canary=canary,
            timeout_s=spec.timeout_s,
            retries=self._retries(name),
            backoff_s=retry.backoff_s,
            backoff_max_s=retry.backoff_max_s,
        )

    def _filters(self, routes: list[str]) -> list[Target]:
        """The turn's filter chain (router/filters.py): input filters, then output filters."""
        c = self._catalog
        chain: list[tuple[FilterSpec, TaskKind]] = [
            (f, "input_filter") for f in input_chain(c.filters, c.agent_filters, routes)
        ]
        chain += [(f, "output_filter") for f in output_chain(c.filters, c.agent_filters, routes)]
        retry = self._settings.retry
        return [
            Target(
                agent=f.name,
                topic=self._topics.filter(f.name),
                timeout_s=f.timeout_s,
                retries=f.retries,
                backoff_s=retry.backoff_s,
                backoff_max_s=retry.backoff_max_s,
                kind=kind,
            )
            for f, kind in chain
        ]

    def _decision_effect(self, decision: RoutingDecision, trace: dict[str, str] | None = None) -> Effect:
        return Effect(
            id=f"decision:{decision.event_id}",
            topic=self._topics.decisions,
            key=decision.conversation_id,
            value=encode(decision),
            headers=tracing.headers(trace),
        )

    def _count(self, decision: RoutingDecision) -> None:
        if decision.abstained:
            outcome = "abstained"
        elif decision.fallback_reason:
            outcome = "fallback"
        else:
            outcome = "routed" if decision.routes else "no_route"
        child(METRICS.decisions, engine=decision.engine, outcome=outcome).inc()
        child(METRICS.decision_seconds, engine=decision.engine).observe(decision.latency_ms / 1000)
        for name in decision.routes:
            child(METRICS.routes, agent=name).inc()
        if decision.dropped:
            METRICS.dropped_routes.inc(len(decision.dropped))
