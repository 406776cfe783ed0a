"""Trace context in Kafka headers, with and without anything recording."""

from __future__ import annotations

import pytest
from routeyard.consumers import tracing

PARENT = {"traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"}


def test_headers_round_trip_and_ignore_the_rest() -> None:
    headers = tracing.headers({**PARENT, "tracestate": "vendor=1"})
    assert headers == [("traceparent", PARENT["traceparent"].encode()), ("tracestate", b"vendor=1")]
    noisy = [*headers, ("other", b"x"), ("traceparent", b"\xff")]
    assert tracing.carrier(noisy[:3]) == {**PARENT, "tracestate": "vendor=1"}
    assert tracing.carrier(None) == {} and tracing.headers({}) is None


def test_a_trace_begun_upstream_is_passed_on_when_nothing_records(monkeypatch: pytest.MonkeyPatch) -> None:
    span = tracing.Span(None, PARENT)  # what `started` returns without an SDK, or when sampled out
    span.set(routes=["A"])
    span.end()
    assert span.context() == PARENT


def test_setup_does_nothing_without_otel_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("OTEL_TRACES_EXPORTER", "OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"):
        monkeypatch.delenv(name, raising=False)
    assert tracing.setup("test") is False
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "none")
    assert tracing.setup("test") is False
