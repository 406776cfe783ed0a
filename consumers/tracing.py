"""W3C trace context across the Kafka hops, with OpenTelemetry (extra ``routeyard[tracing]``).

A conversation's path is one trace: the producer client starts it (``routeyard.publish``) and puts
``traceparent``/``tracestate`` in the record's Kafka headers; the router worker continues it
(``routeyard.route``, with the decision as attributes: agents, engine, time to decide, confidence,
fallback reason) and stores the context with the correlation, so every task, the next sequential
task and the response carry it; the agent runtime (``routeyard.agent``) and the correlator
(``routeyard.reply``, ``routeyard.timeout`` for an attempt it timed out, ``routeyard.respond``)
continue it from the headers they read or the context stored with the correlation. Agents in
other languages see a standard ``traceparent`` header and can continue it too.

Configuration is OpenTelemetry's own: ``OTEL_TRACES_EXPORTER`` (``otlp`` by default when
``OTEL_EXPORTER_OTLP_ENDPOINT`` or ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` is set, ``console``,
``none``), ``OTEL_SERVICE_NAME``, ``OTEL_TRACES_SAMPLER``... Without the SDK or without any of
those variables nothing is recorded and nothing is exported, at almost no cost; the headers are
still passed on, so a trace begun upstream is not broken by routeyard.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import time
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

log = logging.getLogger(__name__)

__all__ = ["FIELDS", "Span", "carrier", "headers", "setup", "span", "started"]

FIELDS = ("traceparent", "tracestate")
"""The W3C trace-context headers routeyard reads and writes."""

Headers = Sequence[tuple[str, bytes]] | None

_TRACEPARENT = re.compile(r"[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}")
"""W3C traceparent: version-traceid-parentid-flags, lower-case hex, 55 characters."""
MAX_TRACESTATE = 512
"""Longest tracestate passed on (W3C: 32 list members; vendors keep it short)."""

try:  # the API is small and often present (vLLM depends on it); the SDK is the optional part
    from opentelemetry import trace as _trace
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    _PROPAGATOR: Any = TraceContextTextMapPropagator()
    _NO_PROVIDER: tuple[type, ...] = (_trace.ProxyTracerProvider, _trace.NoOpTracerProvider)
    """What ``get_tracer_provider`` returns until an SDK provider is installed (here or by the host)."""
except ImportError:  # pragma: no cover - exercised where opentelemetry is not installed
    _trace = None  # type: ignore[assignment]
    _PROPAGATOR = None
    _NO_PROVIDER = ()

_configured = False


def setup(service: str) -> bool:
    """Install an SDK tracer provider exporting as the OTEL_* variables say (once per process).
    True when spans will be exported."""
    global _configured
    if _configured or _trace is None:
        return _configured
    exporter_name = os.environ.get("OTEL_TRACES_EXPORTER")
    endpoint = os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
    if exporter_name is None:
        exporter_name = "otlp" if endpoint else "none"
    if exporter_name == "none":
        return False
    try:
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter
    except ImportError:
        log.warning("OTEL_* asks for traces but opentelemetry-sdk is missing: pip install 'routeyard[tracing]'")
        return False
    if exporter_name == "console":
        exporter: Any = ConsoleSpanExporter()
    else:
        try:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        except ImportError:
            log.warning("the OTLP exporter is missing: pip install 'routeyard[tracing]'")
            return False
        exporter = OTLPSpanExporter()
    name = os.environ.get("OTEL_SERVICE_NAME") or f"routeyard-{service}"
    provider = TracerProvider(resource=Resource.create({"service.name": name}))
    provider.add_span_processor(BatchSpanProcessor(exporter))
    _trace.set_tracer_provider(provider)
    _configured = True
    log.info("tracing: exporting spans (%s) as %s", exporter_name, name)
    return True


def carrier(record_headers: Headers) -> dict[str, str]:
    """The valid trace context fields of a record's Kafka headers (see ``valid``): whatever a
    record carries, what routeyard copies onto the records it causes stays small."""
    found: dict[str, str] = {}
    for name, value in record_headers or ():
        if name in FIELDS and value and len(value) <= MAX_TRACESTATE:
            with contextlib.suppress(UnicodeDecodeError):
                text = value.decode("ascii")
                if valid(name, text):
                    found[name] = text
    return found


def valid(name: str, value: str) -> bool:
    """A W3C ``traceparent`` (55 characters), or a ``tracestate`` of printable ASCII of at most
    ``MAX_TRACESTATE`` characters."""
    if name == "traceparent":
        return len(value) == 55 and _TRACEPARENT.fullmatch(value) is not None
    return name == "tracestate" and len(value) <= MAX_TRACESTATE and value.isprintable() and value.isascii()


def headers(trace: Mapping[str, str] | None) -> list[tuple[str, bytes]] | None:
    """Kafka headers carrying a trace context (None: nothing to carry); invalid fields are left out."""
    if not trace:
        return None
    return [(name, trace[name].encode("ascii")) for name in FIELDS if trace.get(name) and valid(name, trace[name])]


class Span:
    """A started span (or nothing, without OpenTelemetry): set attributes, end it, and get the
    context to put on the records it causes."""

    def __init__(self, inner: Any, parent: Mapping[str, str] | None) -> None:
        self._inner = inner
        self._parent = dict(parent or {})

    def set(self, **attributes: Any) -> None:
        if self._inner is not None:
            for key, value in attributes.items():
                if value is not None:
                    self._inner.set_attribute(f"routeyard.{key}", value)

    def error(self, message: str) -> None:
        if self._inner is not None and _trace is not None:
            self._inner.set_status(_trace.Status(_trace.StatusCode.ERROR, message))

    def end(self, at_ns: int | None = None) -> None:
        if self._inner is not None:
            self._inner.end(end_time=at_ns)

    def context(self) -> dict[str, str]:
        """The W3C fields naming this span as the parent (the incoming ones when not recording)."""
        if self._inner is None or _trace is None or not self._inner.get_span_context().is_valid:
            return self._parent
        out: dict[str, str] = {}
        _PROPAGATOR.inject(out, context=_trace.set_span_in_context(self._inner))
        return out or self._parent


def started(name: str, parent: Mapping[str, str] | None = None, *, at_ns: int | None = None, **attrs: Any) -> Span:
    """A span named ``name``, child of the context in ``parent`` (W3C fields), started now or at ``at_ns``."""
    if _trace is None or isinstance(_trace.get_tracer_provider(), _NO_PROVIDER):
        return Span(None, parent)  # nothing could record it: skip the extract and the no-op span
    context = _PROPAGATOR.extract(dict(parent)) if parent else None
    tracer = _trace.get_tracer("routeyard")
    inner = tracer.start_span(name, context=context, start_time=at_ns or time.time_ns())
    if not inner.is_recording():  # no SDK, or sampled out: pass the incoming context on unchanged
        return Span(None, parent)
    result = Span(inner, parent)
    result.set(**attrs)
    return result


@contextlib.contextmanager
def span(name: str, parent: Mapping[str, str] | None = None, **attrs: Any) -> Iterator[Span]:
    """``started`` as a block: ended when it exits, marked as an error if it raises."""
    current = started(name, parent, **attrs)
    try:
        yield current
    except BaseException as exc:
        current.error(f"{type(exc).__name__}: {exc}")
        raise
    finally:
        current.end()
