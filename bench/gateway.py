"""What the HTTP gateway adds over the Kafka client path, measured in the same run.

    python bench/gateway.py [--seconds 10] [--concurrency 32] [--fraction 0.5]

Starts ``routeyard dev --engine rules --gateway-port P`` (tansu and Valkey embedded: the real
broker protocol, one process for router, correlator, the demo agents and the gateway) and drives
it from this process two ways, one turn each time, a new conversation id each:

- kafka: ``RouteyardClient.ask`` (publishes to the conversations topic, reads the responses topic);
- gateway: ``POST /v1/chat/completions`` (httpx, keep-alive), non-streaming, model "routeyard".

``--gateway process`` (the default) runs ``routeyard gateway`` as a process of its own beside dev,
as deployed; ``--gateway dev`` uses the gateway inside the dev process, where it shares one event
loop (one core) with the router, correlator and agents while the kafka path's client runs here.

1. maximum load, each path alone: ``--concurrency`` requests in flight for ``--seconds``; requests/s;
2. paced load: each path alone at ``--fraction`` x the kafka path's maximum, open loop (a request
   starts on schedule whatever the earlier ones do) for ``--seconds``; p50/p99 latency of each and
   the gateway's p99 minus the kafka path's p99 (the target: under 5 ms at half load).

3. time to first chunk of a streaming agent (StoryAgent, an async generator added to the demo's
   agents for this run: it yields its first piece at once, then one every 20 ms): ``--streams``
   turns one after another on each path, the time from sending the turn to its first agent chunk:
   gateway (SSE, ``stream: true``, the first content chunk) and kafka (``RouteyardClient.stream``,
   the first AgentChunk); p50/p99 of each.

Both paths share the dev process and this process's event loop; the gateway path also pays the
HTTP round trip.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
from routeyard.consumers.client import RouteyardClient
from routeyard.consumers.settings import KafkaSettings
from routeyard.schemas import AgentChunk

TEXT = "What's the weather in Paris?"
STORY = "tell me a story"
AGENTS_MODULE = """
import asyncio
from routeyard.consumers.agents.agent import agent
from routeyard.consumers.dev.demo.agents import messaging, restaurant, weather


@agent("StoryAgent", "tells a story piece by piece")
async def story(task):
    for i in range(5):
        yield f"piece {i} "
        await asyncio.sleep(0.02)
"""
STORY_SPEC = """  - name: StoryAgent
    description: tells a story piece by piece
    timeout: 10s
    rules:
      keywords: [story]
"""


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


def start_dev(port: int, folder: Path, env_out: Path, log: Path) -> subprocess.Popen[bytes]:
    """``routeyard dev`` with the demo's agents and catalog plus StoryAgent (files in ``folder``)."""
    from routeyard.consumers.dev.server import DEMO_CATALOG

    (folder / "bench_agents.py").write_text(AGENTS_MODULE)
    (folder / "catalog.yaml").write_text(DEMO_CATALOG.read_text().rstrip() + "\n" + STORY_SPEC)
    with log.open("wb") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "routeyard.consumers.cli", "dev", "--engine", "rules", "--gateway-port", str(port),
             "--env-out", str(env_out), "--catalog", str(folder / "catalog.yaml"),
             "--agents", *(f"bench_agents:{a}" for a in ("weather", "restaurant", "messaging", "story")),
             "--app-dir", str(folder)],
            stdout=out, stderr=subprocess.STDOUT, env=dict(os.environ, ROUTEYARD_LOG_LEVEL="WARNING"),
        )  # fmt: skip


async def wait_up(url: str, log: Path, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    async with httpx.AsyncClient() as http:
        while time.monotonic() < deadline:
            try:
                if (await http.get(f"{url}/readyz")).status_code == 200:
                    await asyncio.sleep(4.0)  # the consumer groups' first join
                    return
            except httpx.TransportError:
                pass
            await asyncio.sleep(0.2)
    raise SystemExit(f"routeyard dev did not start:\n{log.read_text()[-3000:]}")


def env_file(path: Path) -> dict[str, str]:
    return dict(line.split("=", 1) for line in path.read_text().splitlines() if "=" in line)


Ask = Callable[[], Awaitable[None]]


async def max_load(ask: Ask, seconds: float, concurrency: int) -> float:
    done = 0
    deadline = time.perf_counter() + seconds

    async def loop() -> None:
        nonlocal done
        while time.perf_counter() < deadline:
            await ask()
            done += 1

    started = time.perf_counter()
    await asyncio.gather(*(loop() for _ in range(concurrency)))
    return done / (time.perf_counter() - started)


async def paced(ask: Ask, rate: float, seconds: float) -> tuple[list[float], int]:
    """Latencies (ms) of the requests answered, and how many failed (e.g. 429 past the gateway's
    in-flight limits when the pace is beyond what it sustains)."""
    latencies: list[float] = []
    failed = 0

    async def one() -> None:
        nonlocal failed
        started = time.perf_counter()
        try:
            await ask()
        except (httpx.HTTPError, TimeoutError):
            failed += 1
            return
        latencies.append((time.perf_counter() - started) * 1000)

    tasks, start, n = [], time.perf_counter(), int(rate * seconds)
    for i in range(n):
        delay = start + i / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one()))
    await asyncio.gather(*tasks)
    return latencies, failed


class Connections:
    """Keep-alive HTTP connections, one httpx client each, lent to one request at a time. One shared
    client with a pool of many connections costs the bench itself more CPU than the gateway
    (httpcore checks every pooled connection's socket on each request: quadratic in the pool),
    which on a small machine is taken from the gateway being measured."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.idle: list[httpx.AsyncClient] = []
        self.all: list[httpx.AsyncClient] = []

    async def post(self, path: str, body: dict[str, Any], headers: dict[str, str]) -> None:
        http = self.idle.pop() if self.idle else self._new()
        try:
            answer = await http.post(path, json=body, headers=headers)
            answer.raise_for_status()
        finally:
            self.idle.append(http)

    def _new(self) -> httpx.AsyncClient:
        http = httpx.AsyncClient(base_url=self.url, timeout=30, limits=httpx.Limits(max_connections=1))
        self.all.append(http)
        return http

    async def close(self) -> None:
        for http in self.all:
            await http.aclose()


async def bench(args: argparse.Namespace, url: str, env: dict[str, str]) -> None:
    kafka = KafkaSettings(bootstrap=env["ROUTEYARD_KAFKA__BOOTSTRAP"])
    connections = Connections(url)
    async with (
        RouteyardClient(kafka, prefix=env["ROUTEYARD_TOPIC_PREFIX"]) as client,
        httpx.AsyncClient(base_url=url, timeout=30) as http,
    ):

        async def via_kafka() -> None:
            await client.ask(uuid.uuid4().hex, TEXT, timeout=30)

        async def via_gateway() -> None:
            body = {"model": "routeyard", "messages": [{"role": "user", "content": TEXT}]}
            await connections.post("/v1/chat/completions", body, {"X-Conversation-Id": uuid.uuid4().hex})

        paths = {"kafka": via_kafka, "gateway": via_gateway}
        await via_kafka()  # one first: concurrent first asks would each start a response reader
        for ask in paths.values():  # warm up
            await asyncio.gather(*(ask() for _ in range(20)))
        rates = {name: await max_load(ask, args.seconds, args.concurrency) for name, ask in paths.items()}
        for name, rate in rates.items():
            print(f"max load  {name:<8} {rate:8.1f} requests/s  (concurrency {args.concurrency})")
        pace = args.fraction * rates["kafka"]
        lat: dict[str, list[float]] = {}
        for name, ask in paths.items():
            lat[name], failed = await paced(ask, pace, args.seconds)
            p50, p99 = pct(lat[name], 0.5), pct(lat[name], 0.99)
            n = len(lat[name])
            print(f"paced {pace:.0f}/s {name:<8} p50 {p50:7.2f} ms  p99 {p99:7.2f} ms  (n={n}, failed: {failed})")
        added50 = pct(lat["gateway"], 0.5) - pct(lat["kafka"], 0.5)
        added99 = pct(lat["gateway"], 0.99) - pct(lat["kafka"], 0.99)
        at = f"{args.fraction:g} x kafka max (tansu, gateway: {args.gateway})"
        print(f"gateway adds: p50 {added50:+.2f} ms, p99 {added99:+.2f} ms at {at}")
        await first_chunks(args.streams, client, http)
        await connections.close()


async def first_chunks(n: int, client: RouteyardClient, http: httpx.AsyncClient) -> None:
    """Time to the first agent chunk of ``n`` streamed turns, one after another, on each path."""

    async def via_kafka() -> float:
        started = time.perf_counter()
        first = None
        async for item in client.stream(uuid.uuid4().hex, STORY, timeout=30):
            if first is None and isinstance(item, AgentChunk):
                first = time.perf_counter() - started
        return first if first is not None else float("nan")

    async def via_gateway() -> float:
        started = time.perf_counter()
        first = None
        body = {"model": "routeyard", "stream": True, "messages": [{"role": "user", "content": STORY}]}
        async with http.stream("POST", "/v1/chat/completions", json=body) as answer:
            async for line in answer.aiter_lines():
                if first is None and line.startswith("data: {") and '"content":"piece' in line:
                    first = time.perf_counter() - started
        return first if first is not None else float("nan")

    for name, one in (("kafka", via_kafka), ("gateway", via_gateway)):
        await one()  # warm up
        values = [await one() * 1000 for _ in range(n)]
        missing = sum(v != v for v in values)
        values = [v for v in values if v == v]
        p50, p99 = pct(values, 0.5), pct(values, 0.99)
        print(f"first chunk {name:<8} p50 {p50:7.2f} ms  p99 {p99:7.2f} ms  (n={len(values)}, no chunk: {missing})")


def start_gateway(port: int, folder: Path, env: Path, log: Path) -> subprocess.Popen[bytes]:
    """``routeyard gateway`` as a process of its own beside dev (instance ``bench``: its own reply
    topic), as it would run in production: not sharing the router's event loop."""
    with log.open("wb") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "routeyard.consumers.cli", "--env-file", str(env), "gateway",
             "--catalog", str(folder / "catalog.yaml"), "--port", str(port)],
            stdout=out, stderr=subprocess.STDOUT,
            env=dict(os.environ, ROUTEYARD_LOG_LEVEL="WARNING", ROUTEYARD_GATEWAY__INSTANCE="bench"),
        )  # fmt: skip


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=10.0, help="seconds per phase and path")
    parser.add_argument("--concurrency", type=int, default=32, help="requests in flight at maximum load")
    parser.add_argument("--fraction", type=float, default=0.5, help="paced load as a fraction of the kafka max")
    parser.add_argument("--streams", type=int, default=50, help="streamed turns per path for time to first chunk")
    parser.add_argument(
        "--gateway",
        choices=["process", "dev"],
        default="process",
        help="process: `routeyard gateway` in a process of its own beside dev (default; as deployed);"
        " dev: the gateway inside the dev process, sharing one event loop with router, correlator and agents",
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        port = free_port()
        log, env_out = folder / "dev.log", folder / "dev.env"
        processes = [start_dev(port, folder, env_out, log)]
        try:
            url = f"http://127.0.0.1:{port}"
            asyncio.run(wait_up(url, log))
            if args.gateway == "process":
                port, log = free_port(), folder / "gateway.log"
                processes.append(start_gateway(port, folder, env_out, log))
                url = f"http://127.0.0.1:{port}"
                asyncio.run(wait_up(url, log))
            print(f"gateway: {args.gateway} ({url})")
            asyncio.run(bench(args, url, env_file(env_out)))
        finally:
            for process in reversed(processes):
                process.send_signal(signal.SIGINT)
                process.wait(60)


if __name__ == "__main__":
    main()
