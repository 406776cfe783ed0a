"""What an operator scrapes and probes: ``/metrics``, ``/healthz`` and ``/readyz`` on every worker,
and the consumer-lag gauges behind ``routeyard_consumer_lag``.

    ROUTEYARD_OBSERVABILITY__PORT=9464     serve on 0.0.0.0:9464 (the images set it; unset: off)

- ``/metrics``: the Prometheus text format of every ``routeyard_*`` metric (consumers/metrics.py).
- ``/healthz``: 200 while the event loop answers and no component has stalled (a component that
  has not reported progress for ``stall_after_s`` while it should is unhealthy: restart it).
- ``/readyz``: 200 once every component of the process has started (engine loaded, Redis and
  Kafka connected) and until shutdown begins; 503 with the components that are not, otherwise.

The server is a few lines of asyncio (no web framework): it reads one request line, ignores the
rest of the request, and closes the connection after the answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest
from routeyard.consumers.kafka.bus import Consumer
from routeyard.consumers.metrics import METRICS

log = logging.getLogger(__name__)

__all__ = ["HEALTH", "Health", "ObservabilityServer", "serving", "watch_lag"]


@dataclass
class _Component:
    ready: bool = False
    last_progress: float = field(default_factory=time.monotonic)


class Health:
    """Readiness and progress of the components of one process (router, correlator, agents)."""

    def __init__(self, stall_after_s: float = 120.0) -> None:
        self.stall_after_s = stall_after_s
        self._components: dict[str, _Component] = {}
        self.stopping = False

    def register(self, name: str) -> None:
        self._components.setdefault(name, _Component())

    def ready(self, name: str, ready: bool = True) -> None:
        self._components.setdefault(name, _Component()).ready = ready
        self.progress(name)

    def progress(self, name: str) -> None:
        """The component did something (fetched, even nothing): it is not stuck."""
        self._components.setdefault(name, _Component()).last_progress = time.monotonic()

    def readiness(self) -> tuple[bool, dict[str, str]]:
        states = {n: "ready" if c.ready and not self.stopping else "not ready" for n, c in self._components.items()}
        if self.stopping:
            states["process"] = "stopping"
        return bool(self._components) and all(s == "ready" for s in states.values()), states

    def liveness(self) -> tuple[bool, dict[str, str]]:
        now = time.monotonic()
        states = {}
        for name, component in self._components.items():
            idle = now - component.last_progress
            stalled = component.ready and not self.stopping and idle > self.stall_after_s
            states[name] = f"stalled for {idle:.0f} s" if stalled else "ok"
        return all(s == "ok" for s in states.values()), states


HEALTH = Health()
"""The process's components (``run_router``, ``run_correlator``, ``run_agent`` register here)."""


class ObservabilityServer:
    def __init__(self, health: Health, host: str = "0.0.0.0", port: int = 9464) -> None:
        self.health = health
        self.host, self.port = host, port
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, self.host, self.port)
        self.port = self._server.sockets[0].getsockname()[1]  # the real one when 0 was asked
        log.info("metrics and health on http://%s:%d/metrics", self.host, self.port)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 2)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            line = await asyncio.wait_for(reader.readline(), 5)
            parts = line.decode("latin-1").split()
            path = parts[1].split("?", 1)[0] if len(parts) >= 2 else ""
            status, content_type, body = self._answer(parts[0] if parts else "", path)
            head = f"HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {len(body)}\r\n"
            writer.write(head.encode() + b"Connection: close\r\n\r\n" + body)
            await writer.drain()
        except (TimeoutError, ConnectionError, UnicodeDecodeError):
            pass
        finally:
            writer.close()

    def _answer(self, method: str, path: str) -> tuple[str, str, bytes]:
        if method != "GET":
            return "405 Method Not Allowed", "text/plain", b"GET only\n"
        if path == "/metrics":
            return "200 OK", CONTENT_TYPE_LATEST, generate_latest(REGISTRY)
        if path in ("/healthz", "/readyz"):
            ok, states = self.health.liveness() if path == "/healthz" else self.health.readiness()
            body = json.dumps({"ok": ok, "components": states}).encode() + b"\n"
            return ("200 OK" if ok else "503 Service Unavailable"), "application/json", body
        return "404 Not Found", "text/plain", b"/metrics, /healthz or /readyz\n"


@contextlib.asynccontextmanager
async def serving(health: Health, host: str, port: int | None) -> AsyncIterator[ObservabilityServer | None]:
    """The server for the life of the block (``port`` None: none)."""
    if port is None:
        yield None
        return
    server = ObservabilityServer(health, host, port)
    await server.start()
    try:
        yield server
    finally:
        health.stopping = True
        await server.stop()


async def watch_lag(consumer: Consumer, group: str, stop: asyncio.Event, interval_s: float = 5.0) -> None:
    """Every ``interval_s``: ``routeyard_consumer_lag{group,topic}`` = records behind the end, summed
    over the partitions this consumer holds (from the high watermarks its fetches saw)."""
    while not stop.is_set():
        lag: dict[str, int] = {}
        for tp in consumer.assignment():
            end = consumer.highwater(tp)
            if end is None:
                continue
            with contextlib.suppress(Exception):  # a partition revoked meanwhile
                position = await consumer.position(tp)
                lag[tp.topic] = lag.get(tp.topic, 0) + max(0, end - position)
        for topic, behind in lag.items():
            METRICS.consumer_lag.labels(group=group, topic=topic).set(behind)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), interval_s)
