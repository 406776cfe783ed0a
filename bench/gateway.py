"""What the HTTP gateway adds over the Kafka client path, measured in the same run.

    python bench/gateway.py [--seconds 10] [--paced-seconds 40] [--concurrency 32] [--fraction 0.5]

Starts ``routeyard dev --engine rules --gateway-port P`` (tansu and Valkey embedded: the real
broker protocol, one process for router, correlator, the demo agents and the gateway) and drives
it from this process two ways, one turn each time, a new conversation id each:

- kafka: ``RouteyardClient.ask`` (publishes to the conversations topic, reads the responses topic);
- gateway: ``POST /v1/chat/completions`` (httpx, keep-alive), non-streaming, model "routeyard".

``--gateway process`` (the default) runs ``routeyard gateway`` as a process of its own beside dev,
as deployed; ``--gateway dev`` uses the gateway inside the dev process, where it shares one event
loop (one core) with the router, correlator and agents while the kafka path's client runs here.

1. maximum load, each path alone: ``--concurrency`` requests in flight for ``--seconds``; requests/s;
2. paced load at ``--fraction`` x the gateway's maximum (the issue's target: the gateway adds under
   5 ms p99 at half of its maximum load), open loop (a request starts on schedule whatever the
   earlier ones do) for ``--paced-seconds``. The paths are interleaved, request by request, so both
   meet the same machine: on tansu each hop of a turn waits up to the fetch wait (a waiting fetch is
   not woken by new data), and a slow stretch of a 2-core machine shifts a whole run by tens of ms.
   p50/p99 latency of each, the gateway's minus the kafka path's, and a 95% interval for those
   differences from resampling both paths' latencies (their noise).

3. time to first chunk of a streaming agent (StoryAgent, an async generator added to the demo's
   agents for this run: it yields its first piece at once, then one every 20 ms): ``--streams``
   turns one after another on each path, the time from sending the turn to its first agent chunk:
   gateway (SSE, ``stream: true``, the first content chunk) and kafka (``RouteyardClient.stream``,
   the first AgentChunk); p50/p99 of each.

Both paths share the dev process and this process's event loop; the gateway path also pays the
HTTP round trip.

``--bus memory`` runs the whole pipeline in this process instead, on the in-memory bus (whose
fetches wake on a publish, where tansu's wait out the fetch wait) and a Valkey of its own: router,
correlator, agents, the gateway's uvicorn server and both clients share one event loop. With no
broker polling in either path, what is left between the two is the gateway's own work and the HTTP
round trip (the httpx client's work included, charged to the gateway): its added latency without
the broker's noise. The maximum load is then the single process's, and the paced phase is at
``--fraction`` x that.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

import httpx
from routeyard.consumers.client import RouteyardClient
from routeyard.consumers.kafka.bus import Bus
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
            stdout=out, stderr=subprocess.STDOUT, env=dict(os.environ, ROUTEYARD_LOG_LEVEL="WARNING", **WAIT),
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


WAIT: dict[str, str] = {}
"""The fetch wait every process of the run uses (``--fetch-wait-ms``)."""

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


async def interleaved(
    paths: Mapping[str, Ask], rate: float, seconds: float
) -> tuple[dict[str, list[float]], dict[str, int]]:
    """``rate`` requests/s for ``seconds``, the paths taking turns request by request: latencies (ms)
    of the requests answered per path, and how many failed (e.g. 429 past the gateway's in-flight
    limits when the pace is beyond what it sustains)."""
    names = list(paths)
    latencies: dict[str, list[float]] = {name: [] for name in names}
    failed = dict.fromkeys(names, 0)

    async def one(name: str) -> None:
        started = time.perf_counter()
        try:
            await paths[name]()
        except (Refused, httpx.HTTPError, TimeoutError):
            failed[name] += 1
            return
        latencies[name].append((time.perf_counter() - started) * 1000)

    tasks, start, n = [], time.perf_counter(), int(rate * seconds)
    for i in range(n):
        delay = start + i / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(names[i % len(names)])))
    await asyncio.gather(*tasks)
    return latencies, failed


def added_ms(mine: list[float], base: list[float], q: float, resamples: int = 400) -> tuple[float, float, float]:
    """pct(mine, q) - pct(base, q), and a 95% bootstrap interval of that difference."""
    rng = random.Random(7)
    diffs = sorted(
        pct(rng.choices(mine, k=len(mine)), q) - pct(rng.choices(base, k=len(base)), q) for _ in range(resamples)
    )
    return pct(mine, q) - pct(base, q), diffs[int(0.025 * resamples)], diffs[int(0.975 * resamples)]


class Refused(Exception):
    """A request the gateway answered with an error status (429 past its in-flight limits)."""


class Connections:
    """Keep-alive HTTP/1.1 connections, lent to one request at a time, speaking just enough HTTP
    for the gateway's non-streamed answers (a request with a body, an answer with Content-Length).
    A general client costs more CPU per request than the gateway it measures (httpx: about 2.5x
    the gateway's time on the event loop, plus an SSL context per client even for http://; one
    shared httpx pool checks every pooled socket on each request), and on a shared machine or loop
    that time is charged to the gateway's latency."""

    def __init__(self, url: str) -> None:
        host, _, port = url.removeprefix("http://").partition(":")
        self.host, self.port = host, int(port)
        self.idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []

    async def post(self, path: str, body: dict[str, Any], headers: dict[str, str]) -> None:
        reader, writer = self.idle.pop() if self.idle else await asyncio.open_connection(self.host, self.port)
        payload = json.dumps(body).encode()
        lines = [f"POST {path} HTTP/1.1", f"Host: {self.host}", "Content-Type: application/json"]
        lines += [f"{k}: {v}" for k, v in headers.items()] + [f"Content-Length: {len(payload)}", "", ""]
        writer.write("\r\n".join(lines).encode() + payload)
        head = await reader.readuntil(b"\r\n\r\n")
        status = int(head.split(b" ", 2)[1])
        length = next(int(line[15:]) for line in head.lower().split(b"\r\n") if line.startswith(b"content-length:"))
        await reader.readexactly(length)
        self.idle.append((reader, writer))
        if status >= 300:
            raise Refused(status)

    async def close(self) -> None:
        for _, writer in self.idle:
            writer.close()


async def bench(args: argparse.Namespace, url: str, env: dict[str, str], bus: Bus | None = None) -> None:
    if bus is None:
        kafka = KafkaSettings(bootstrap=env["ROUTEYARD_KAFKA__BOOTSTRAP"], fetch_max_wait_ms=args.fetch_wait_ms)
        reader = RouteyardClient(kafka, prefix=env["ROUTEYARD_TOPIC_PREFIX"])
    else:
        reader = RouteyardClient(bus=bus, prefix=env["ROUTEYARD_TOPIC_PREFIX"])
    connections = Connections(url)
    async with reader as client, httpx.AsyncClient(base_url=url, timeout=30) as http:

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
        pace = args.fraction * rates["gateway"]
        lat, failed = await interleaved(paths, pace, args.paced_seconds)
        for name in paths:
            p50, p99, n = pct(lat[name], 0.5), pct(lat[name], 0.99), len(lat[name])
            print(f"paced {pace:.0f}/s {name:<8} p50 {p50:7.2f} ms  p99 {p99:7.2f} ms  (n={n}, failed: {failed[name]})")
        where = "memory bus, one process" if bus is not None else f"tansu, gateway: {args.gateway}"
        at = f"{args.fraction:g} x gateway max, paths interleaved ({where})"
        added = {q: added_ms(lat["gateway"], lat["kafka"], q) for q in (0.5, 0.99)}
        text = ", ".join(f"p{round(q * 100)} {d:+.2f} ms [{lo:+.2f}, {hi:+.2f}]" for q, (d, lo, hi) in added.items())
        print(f"gateway adds: {text} at {at}")
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
            env=dict(os.environ, ROUTEYARD_LOG_LEVEL="WARNING", ROUTEYARD_GATEWAY__INSTANCE="bench", **WAIT),
        )  # fmt: skip


async def in_process(args: argparse.Namespace, folder: Path) -> None:
    """The pipeline, the gateway and both clients in this process, on a memory bus (``--bus memory``)."""
    from routeyard.consumers.agents.agent import Agent
    from routeyard.consumers.dev.embedded import EmbeddedValkey
    from routeyard.consumers.dev.server import DEMO_CATALOG, run_pipeline
    from routeyard.consumers.kafka.memory import MemoryBus
    from routeyard.consumers.settings import Settings
    from routeyard.router.catalog import load_catalog

    (folder / "bench_agents.py").write_text(AGENTS_MODULE)
    (folder / "catalog.yaml").write_text(DEMO_CATALOG.read_text().rstrip() + "\n" + STORY_SPEC)
    sys.path.insert(0, str(folder))
    module = __import__("bench_agents")
    agents: list[Agent] = [getattr(module, name) for name in ("weather", "restaurant", "messaging", "story")]
    catalog = load_catalog(folder / "catalog.yaml")
    bus, prefix = MemoryBus(), "bench."
    with EmbeddedValkey() as valkey:
        settings = Settings.model_validate(
            {"topic_prefix": prefix, "kafka": {"bootstrap": bus.bootstrap}, "redis": {"url": valkey.url},
             "router": {"engine": "rules", "catalog": str(folder / "catalog.yaml")}, "gateway": {"port": 0}}
        )  # fmt: skip
        stop, urls = asyncio.Event(), asyncio.Queue[str]()
        run = asyncio.ensure_future(run_pipeline(settings, catalog, agents, stop, gateway=urls.put_nowait, bus=bus))
        try:
            url = await asyncio.wait_for(urls.get(), 60)
            await asyncio.sleep(1.0)  # the memory bus's groups join at once; a moment for the readers to start
            print(f"gateway: in process, memory bus ({url})")
            await bench(args, url, {"ROUTEYARD_TOPIC_PREFIX": prefix}, bus)
        finally:
            stop.set()
            await run


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=10.0, help="seconds per phase and path")
    parser.add_argument("--concurrency", type=int, default=32, help="requests in flight at maximum load")
    parser.add_argument("--fraction", type=float, default=0.5, help="paced load as a fraction of the gateway's max")
    parser.add_argument("--paced-seconds", type=float, default=40.0, help="seconds of the paced phase (both paths)")
    parser.add_argument("--streams", type=int, default=50, help="streamed turns per path for time to first chunk")
    parser.add_argument(
        "--gateway",
        choices=["process", "dev"],
        default="process",
        help="process: `routeyard gateway` in a process of its own beside dev (default; as deployed);"
        " dev: the gateway inside the dev process, sharing one event loop with router, correlator and agents",
    )
    parser.add_argument(
        "--fetch-wait-ms",
        type=int,
        default=KafkaSettings().fetch_max_wait_ms,
        help="ROUTEYARD_KAFKA__FETCH_MAX_WAIT_MS of every process (tansu holds a fetch this long whatever arrives"
        " meanwhile, so each hop of a turn waits up to this: the noise floor of both paths)",
    )
    parser.add_argument(
        "--bus",
        choices=["tansu", "memory"],
        default="tansu",
        help="tansu: routeyard dev's embedded broker, processes as deployed (default); memory: the whole"
        " pipeline in this process on the in-memory bus, without the broker's fetch-wait noise",
    )
    args = parser.parse_args()
    WAIT["ROUTEYARD_KAFKA__FETCH_MAX_WAIT_MS"] = str(args.fetch_wait_ms)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        if args.bus == "memory":
            asyncio.run(in_process(args, folder))
            return
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
