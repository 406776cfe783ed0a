"""The metrics and health server on a loopback port, probed as Prometheus and Kubernetes would."""

from __future__ import annotations

import asyncio
import json

from routeyard.consumers.metrics import METRICS
from routeyard.consumers.observability import Health, serving


async def get(port: int, path: str, method: str = "GET") -> tuple[int, str]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"{method} {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    await writer.drain()
    raw = (await reader.read()).decode()
    writer.close()
    head, _, body = raw.partition("\r\n\r\n")
    return int(head.split()[1]), body


async def test_metrics_health_and_readiness() -> None:
    health = Health(stall_after_s=0.2)
    health.register("router")
    METRICS.decisions.labels(engine="rules", outcome="routed").inc()
    async with serving(health, "127.0.0.1", 0) as server:
        assert server is not None
        status, body = await get(server.port, "/metrics")
        assert status == 200 and 'routeyard_decisions_total{engine="rules",outcome="routed"}' in body
        status, body = await get(server.port, "/readyz")
        assert status == 503 and json.loads(body)["components"] == {"router": "not ready"}
        health.ready("router")
        assert (await get(server.port, "/readyz"))[0] == 200
        assert (await get(server.port, "/healthz"))[0] == 200
        await asyncio.sleep(0.3)  # no progress reported since: stalled
        status, body = await get(server.port, "/healthz")
        assert status == 503 and "stalled" in json.loads(body)["components"]["router"]
        health.progress("router")
        assert (await get(server.port, "/healthz"))[0] == 200
        assert (await get(server.port, "/nope"))[0] == 404
        assert (await get(server.port, "/metrics", method="POST"))[0] == 405
        health.stopping = True
        status, body = await get(server.port, "/readyz")
        assert status == 503 and json.loads(body)["components"]["process"] == "stopping"


async def test_no_port_no_server() -> None:
    async with serving(Health(), "127.0.0.1", None) as server:
        assert server is None
