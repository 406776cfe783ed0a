"""A conversation's path, end to end, as an operator sees it: one trace across the Kafka hops
(client -> router worker -> agent -> correlator -> response) with the decision on the route span,
and /metrics, /readyz of the running process counting it."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from uuid import uuid4

import pytest

pytest.importorskip("opentelemetry.sdk")

from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client import REGISTRY
from routeyard.consumers import app
from routeyard.consumers.dev.embedded import EmbeddedBroker, EmbeddedValkey
from routeyard.consumers.observability import Health, serving

from tests.integration.stack import Recorder, catalog, make_settings, running, spec
from tests.unit.test_observability import get

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def spans() -> Iterator[InMemorySpanExporter]:
    provider = trace.get_tracer_provider()
    if not isinstance(provider, TracerProvider):
        provider = TracerProvider()
        trace.set_tracer_provider(provider)
    exporter = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    yield exporter
    exporter.shutdown()


def phase_totals() -> dict[tuple[str, str], tuple[float, float]]:
    """(count, sum) of each worker step's time, and of the time it holds records (step "held")."""
    out = {}
    for stage, phases in (
        ("route", ("decode", "read", "decide", "store", "publish")),
        ("correlate", ("decode", "read", "store", "publish")),
    ):
        for phase in phases:
            labels = {"stage": stage, "phase": phase}
            out[stage, phase] = tuple(
                REGISTRY.get_sample_value(f"routeyard_batch_phase_seconds_{s}", labels) or 0.0 for s in ("count", "sum")
            )
        out[stage, "held"] = tuple(
            REGISTRY.get_sample_value(f"routeyard_held_seconds_{s}", {"stage": stage}) or 0.0 for s in ("count", "sum")
        )
    return out


def by_name(finished: tuple[ReadableSpan, ...], trace_id: int) -> dict[str, ReadableSpan]:
    return {s.name: s for s in finished if s.context is not None and s.context.trace_id == trace_id}


async def test_one_trace_and_the_metrics_of_a_conversation(
    broker: EmbeddedBroker, valkey: EmbeddedValkey, spans: InMemorySpanExporter, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = make_settings(broker, valkey, f"t{uuid4().hex[:8]}.")
    agents = Recorder()
    health = Health()  # this "process" only: earlier tests' stopped workers are not ready, rightly
    monkeypatch.setattr(app, "HEALTH", health)
    async with serving(health, "127.0.0.1", 0) as server:
        assert server is not None
        async with running(settings, catalog(spec("WeatherAgent", "weather")), [agents.agent("WeatherAgent")]) as c:
            before = phase_totals()
            (response,) = await c.ask_many([c.event("c-trace", "Weather in Lima?", event_id="ev-trace")], timeout=30)
            assert response.status == "complete"
            status, body = await get(server.port, "/readyz")
            assert status == 200, body
            assert '"router": "ready"' in body and '"agent WeatherAgent": "ready"' in body
            assert '"correlator": "ready"' in body
            await asyncio.sleep(0.3)  # the respond span ends just after the response is published
            _, metrics = await get(server.port, "/metrics")
            after = phase_totals()
        assert 'routeyard_decisions_total{engine="rules",outcome="routed"}' in metrics
        assert 'routeyard_routes_total{agent="WeatherAgent"}' in metrics
        assert 'routeyard_end_to_end_seconds_count{status="complete"}' in metrics
        assert "routeyard_consumer_lag" in metrics
        assert 'routeyard_batch_phase_seconds_count{phase="publish",stage="route"}' in metrics

    # Where the workers' time went: every step of the route and correlate batches was timed, and
    # the steps of a batch add up to no more than the time its records were held.
    moved = {k: (after[k][0] - before[k][0], after[k][1] - before[k][1]) for k in after}
    assert all(count >= 1 for count, _ in moved.values()), moved
    for stage in ("route", "correlate"):
        steps = sum(total for (s, phase), (_, total) in moved.items() if s == stage and phase != "held")
        assert 0 < steps <= moved[stage, "held"][1] + 1e-6, (stage, steps, moved)

    finished = spans.get_finished_spans()
    publish = next(
        s for s in finished if s.name == "routeyard.publish" and s.attributes["routeyard.conversation"] == "c-trace"
    )
    path = by_name(finished, publish.context.trace_id)
    assert {"routeyard.publish", "routeyard.route", "routeyard.agent", "routeyard.reply", "routeyard.respond"} <= set(
        path
    )
    route, agent, reply, respond = (path[f"routeyard.{n}"] for n in ("route", "agent", "reply", "respond"))
    assert route.parent is not None and route.parent.span_id == publish.context.span_id
    assert agent.parent is not None and agent.parent.span_id == route.context.span_id
    assert reply.parent is not None and reply.parent.span_id == agent.context.span_id
    assert respond.parent is not None and respond.parent.span_id == route.context.span_id
    assert route.attributes["routeyard.routes"] == ("WeatherAgent",)
    assert route.attributes["routeyard.engine"] == "rules"
    assert route.attributes["routeyard.decision_ms"] >= 0
    assert agent.attributes["routeyard.agent"] == "WeatherAgent"
    assert respond.attributes["routeyard.status"] == "complete"


async def test_a_timed_out_agent_shows_in_the_trace(
    broker: EmbeddedBroker, valkey: EmbeddedValkey, spans: InMemorySpanExporter
) -> None:
    settings = make_settings(broker, valkey, f"t{uuid4().hex[:8]}.")
    slow = Recorder().agent("WeatherAgent", delay=5.0)  # cancelled by the runtime at its 0.5 s deadline
    agents = catalog({**spec("WeatherAgent", "weather", timeout="500ms"), "retries": 1})
    async with running(settings, agents, [slow]) as c:
        (response,) = await c.ask_many([c.event("c-slow", "Weather in Lima?", event_id="ev-slow")], timeout=30)
        assert response.status != "complete"
        await asyncio.sleep(0.3)

    finished = spans.get_finished_spans()
    publish = next(
        s for s in finished if s.name == "routeyard.publish" and s.attributes["routeyard.conversation"] == "c-slow"
    )
    route = by_name(finished, publish.context.trace_id)["routeyard.route"]
    timeouts = sorted(
        (s for s in finished if s.name == "routeyard.timeout" and s.context.trace_id == route.context.trace_id),
        key=lambda s: s.attributes["routeyard.attempt"],
    )
    assert [(s.attributes["routeyard.attempt"], s.attributes["routeyard.retry"]) for s in timeouts] == [
        (1, True),
        (2, False),
    ]
    for s in timeouts:
        assert s.attributes["routeyard.agent"] == "WeatherAgent"
        assert s.parent is not None and s.parent.span_id == route.context.span_id
        assert not s.status.is_ok
