"""Every metric routeyard exports, defined once. Labels are low-cardinality: never ids."""

from __future__ import annotations

import time
from typing import Any

from prometheus_client import Counter, Gauge, Histogram

HELD_BUCKETS = (0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.03, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10)
"""The buckets of routeyard_held_seconds and routeyard_batch_phase_seconds (bench/pipeline.py's
relay keeps the same held-time histogram)."""


class _Children:
    """Memoises ``labels()`` of every labelled metric (prometheus-client takes a lock and checks
    the values on each call; the hot path asks several times per event). Label values are
    low-cardinality by rule, so the memo stays small."""

    def __init__(self) -> None:
        self._children: dict[tuple[int, tuple[tuple[str, str], ...]], Any] = {}

    def __call__(self, metric: Any, **values: str) -> Any:
        key = (id(metric), tuple(values.items()))
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(**values)
        return child


class _Metrics:
    def __init__(self) -> None:
        self.decisions = Counter("routeyard_decisions_total", "Routing decisions", ["engine", "outcome"])
        self.routes = Counter("routeyard_routes_total", "Agents selected by decisions", ["agent"])
        self.dropped_routes = Counter(
            "routeyard_dropped_routes_total", "Route names returned by an engine that are not in the catalog"
        )
        self.decision_seconds = Histogram(
            "routeyard_decision_seconds",
            "Engine time per decision",
            ["engine"],
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
        )
        self.batch_size = Histogram(
            "routeyard_batch_size",
            "Turns decided per engine call",
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512),
        )
        self.held_seconds = Histogram(
            "routeyard_held_seconds",
            "Per record: its batch fetched -> the batch's outcome published (the time a worker adds to a hop)",
            ["stage"],
            buckets=HELD_BUCKETS,
        )
        self.phase_seconds = Histogram(
            "routeyard_batch_phase_seconds",
            "Per batch, the time each of its steps took: decode, claim (the sweeper's due keys), read (Redis),"
            " decide (engine), store (Redis compare-and-set, per attempt), publish (context appends, records"
            " acknowledged). The pipelined router (router.pipeline: on) times decode and read per fetch,"
            " decide per turn, store and publish per group of turns finished together",
            ["stage", "phase"],
            buckets=HELD_BUCKETS,
        )
        self.redelivered = Counter("routeyard_redelivered_events_total", "Events seen again and not dispatched twice")
        self.dead_letters = Counter("routeyard_dead_letters_total", "Records dead-lettered", ["stage"])
        self.replies = Counter("routeyard_agent_replies_total", "Agent replies by outcome", ["outcome"])
        self.responses = Counter("routeyard_responses_total", "Responses published", ["status"])
        self.agent_timeouts = Counter(
            "routeyard_agent_timeouts_total", "Agent attempts that missed their deadline", ["agent"]
        )
        self.reply_seconds = Histogram(
            "routeyard_agent_reply_seconds",
            "Per accepted reply: its task dispatched (or re-dispatched) -> the reply recorded by the correlator",
            ["agent"],
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
        )
        self.variant_assignments = Counter(
            "routeyard_variant_assignments_total", "Tasks sent to each variant of an agent", ["agent", "variant"]
        )
        self.variant_outcomes = Counter(
            "routeyard_variant_outcomes_total",
            "Attempt outcomes (ok, error, timeout) per variant of an agent",
            ["agent", "variant", "outcome"],
        )
        self.variant_reply_seconds = Histogram(
            "routeyard_variant_reply_seconds",
            "routeyard_agent_reply_seconds with the variant label, for agents with variants",
            ["agent", "variant"],
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
        )
        self.variant_rolled_back = Gauge(
            "routeyard_variant_rolled_back",
            "1 once the variant was rolled back (as last seen here)",
            ["agent", "variant"],
        )
        self.gateway_requests = Counter(
            "routeyard_gateway_requests_total", "Gateway requests by kind and HTTP status", ["kind", "status"]
        )
        self.gateway_seconds = Histogram(
            "routeyard_gateway_seconds",
            "Gateway request received -> answered (streaming: -> last chunk)",
            ["kind"],
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
        )
        self.gateway_in_flight = Gauge("routeyard_gateway_in_flight", "Gateway turns waiting for their response")
        self.tasks = Counter("routeyard_agent_tasks_total", "Tasks handled by the agent runtime", ["agent", "outcome"])
        self.retries = Counter("routeyard_retries_total", "Batches retried after a retriable error", ["what"])
        self.outbox_rerun = Counter(
            "routeyard_outbox_rerun_total", "Effects carried out again because their writer did not confirm them"
        )
        self.prefix_cache_hit_rate = Gauge(
            "routeyard_prefix_cache_hit_rate", "Share of prompt tokens served from the engine's prefix cache"
        )
        self.engine_busy_ratio = Gauge(
            "routeyard_engine_busy_ratio",
            "Share of the time since the engine started with at least one request in flight (the sim engine)",
        )
        self.engine_ceiling = Gauge(
            "routeyard_engine_ceiling_decisions_per_second",
            "Decisions/s the engine makes when always full, for the requests seen so far (the sim engine)",
        )
        self.pending = Gauge("routeyard_pending_correlations", "Correlations waiting on agents")
        self.timeouts_held = Gauge(
            "routeyard_correlator_timeouts_held_seconds",
            "How far behind now the correlator's last sweep judged deadlines: its replies not yet read "
            "(0 when caught up; an agent is not timed out while its reply may be among them)",
        )
        self.filters = Counter(
            "routeyard_filter_total",
            "Filter attempts by outcome: passed, changed, blocked, error, timeout",
            ["filter", "outcome"],
        )
        self.filter_seconds = Histogram(
            "routeyard_filter_seconds",
            "Per accepted filter answer: its task dispatched -> the answer recorded by the correlator",
            ["filter"],
            buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
        )
        self.task_retries = Counter(
            "routeyard_agent_task_retries_total", "Agent tasks sent again after an error reply or a timeout", ["agent"]
        )
        self.circuit_changes = Counter(
            "routeyard_circuit_changes_total", "Circuit breaker state changes seen by this process", ["agent", "state"]
        )
        self.circuit_open = Gauge(
            "routeyard_circuit_open", "1 while the agent's breaker is open or half-open (as last seen here)", ["agent"]
        )
        self.withheld_retries = Counter(
            "routeyard_circuit_withheld_retries_total",
            "Agent retries not sent because the agent's breaker was open (the failed attempt stood)",
            ["agent"],
        )
        self.circuit_rerouted = Counter(
            "routeyard_circuit_rerouted_total", "Routes moved away from an agent whose breaker was open", ["agent"]
        )
        self.consumer_lag = Gauge(
            "routeyard_consumer_lag", "Records behind the end of the topic, for this process", ["group", "topic"]
        )
        self.end_to_end_seconds = Histogram(
            "routeyard_end_to_end_seconds",
            "Event created -> response published",
            ["status"],
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
        )


METRICS = _Metrics()
child = _Children()
"""``child(METRICS.x, label=value)``: the same as ``METRICS.x.labels(label=value)``, memoised."""


class Phases:
    """The steps of one batch, timed one after the other: ``done("read")`` observes the time
    since the previous step ended (or since the batch began) as step ``read``'s
    (``routeyard_batch_phase_seconds``). Where a worker's held time goes: Redis, the engine or
    the broker."""

    __slots__ = ("_last", "_stage")

    def __init__(self, stage: str) -> None:
        self._stage = stage
        self._last = time.perf_counter()

    def done(self, phase: str) -> None:
        now = time.perf_counter()
        child(METRICS.phase_seconds, stage=self._stage, phase=phase).observe(now - self._last)
        self._last = now
