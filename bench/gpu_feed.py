"""How full the router keeps a (simulated) GPU, and the latency it adds over the ideal.

    python bench/gpu_feed.py [--rounds 2] [--turns 600] [--seconds 8] [--target-ceiling 100]

One process: tansu and Valkey (routeyard.consumers.dev.embedded), the router worker(s) on the
``sim`` engine (Plano-Orchestrator-4B on an H100, decisions by the rules engine inside it), the
correlator and three demo-like agents that answer at once. Each phase gets fresh topics and a
fresh simulated GPU; phases alternate the one-batch-at-a-time worker (``pipeline=off``) and the
pipelined one (``on``), with one and two router workers sharing the GPU, at:

- maximum load: ``--turns`` turns sent at once; decisions/s = turns / (first sent -> last
  decision read), against the simulator's ceiling for the turns' shape; busy = the engine's
  time with a request in flight over that window;
- half load: turns paced at half the ceiling for ``--seconds``. Per turn: end to end = decision
  read here - turn sent; added = end to end - the simulator's latency for the same turn when
  every turn is submitted the moment it is sent (``sim_model.replay``: no batch boundaries, no
  Redis or Kafka in the way). Beside it, a bare relay hop over the same broker at the same rate
  (an aiokafka consumer forwarding each fetched batch to another topic): the broker's floor.

The GPU is slowed (``ROUTEYARD_SIM__SPEED`` < 1) so that its ceiling is ``--target-ceiling``
decisions/s: this machine's tansu and two shared cores move a few hundred turns/s through the
whole path, so at the H100's own speed (thousands/s for these short prompts) the broker, not the
GPU, would be the bottleneck, and the question here is whether the router keeps the GPU busy.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import msgspec

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from aiokafka import AIOKafkaConsumer, TopicPartition  # noqa: E402
from routeyard.consumers.agents.agent import Agent, agent  # noqa: E402
from routeyard.consumers.app import build_engine, run_agent, run_correlator, run_router  # noqa: E402
from routeyard.consumers.dev.embedded import EmbeddedBroker, EmbeddedValkey  # noqa: E402
from routeyard.consumers.kafka.aio import KafkaBus  # noqa: E402
from routeyard.consumers.kafka.bus import fetch, make_consumer, make_producer  # noqa: E402
from routeyard.consumers.settings import Settings  # noqa: E402
from routeyard.router.catalog import load_catalog  # noqa: E402
from routeyard.router.engines.base import RoutingRequest  # noqa: E402
from routeyard.router.engines.sim import SimEngine, job_for  # noqa: E402
from routeyard.router.engines.sim_model import ceiling, replay  # noqa: E402
from routeyard.router.engines.sim_profiles import PROFILES, Shape  # noqa: E402
from routeyard.schemas import AgentTask, ConversationEvent, Message, encode  # noqa: E402

CATALOG = """agents:
  - name: WeatherAgent
    description: Current weather and forecasts for a city
    rules: {keywords: [weather, forecast]}
  - name: MessagingAgent
    description: Sends a text message to a contact
    rules: {keywords: [text, message]}
  - name: EchoAgent
    description: Repeats the user's latest message back
    default: true
    rules: {keywords: [echo]}
"""
TEXTS = ("What's the weather in Paris tomorrow?", "text Anna that I am late", "echo hello there")


def _answering(name: str) -> Agent:
    @agent(name, "answers at once")
    async def answer(task: AgentTask) -> str:
        return task.messages[-1].content

    return answer


class _Id(msgspec.Struct):
    event_id: str


_ids = msgspec.json.Decoder(_Id)


def pct(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


class Shared:
    """One engine behind several router workers (one GPU): entered once, outside them."""

    def __init__(self, engine: Any) -> None:
        self._engine = engine
        self.name = engine.name

    def __getattr__(self, name: str) -> Any:
        return getattr(self._engine, name)

    async def __aenter__(self) -> Shared:
        return self

    async def __aexit__(self, *exc: object) -> None:
        return None


def events(tag: str, count: int) -> list[ConversationEvent]:
    return [
        ConversationEvent(
            event_id=f"{tag}-{i}", conversation_id=f"{tag}-c{i}", messages=[Message(role="user", content=TEXTS[i % 3])]
        )
        for i in range(count)
    ]


def speed_for(catalog_path: Path, target: float) -> tuple[float, float]:
    """The speed that puts the 4B profile's ceiling at ``target`` for these turns, and the ceiling at 1."""
    agents = load_catalog(catalog_path).agents
    jobs = [
        job_for(RoutingRequest(event_id=e.event_id, conversation=e.messages, agents=agents), 0.0)
        for e in events("s", 30)
    ]
    shape = Shape(
        statistics.mean(j.prompt for j in jobs),
        statistics.mean(j.prefix for j in jobs),
        statistics.mean(j.answer for j in jobs),
    )
    full = ceiling(PROFILES["plano-4b-h100"], shape)
    return target / full, full


class Reader:
    """Reads topics from their beginning (group-less) and notes when each event id arrives."""

    def __init__(self, bootstrap: str, topics: Sequence[str]) -> None:
        self.arrived: dict[str, float] = {}
        self._bootstrap, self._topics = bootstrap, topics
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Reader:
        consumer = AIOKafkaConsumer(bootstrap_servers=self._bootstrap, enable_auto_commit=False, fetch_max_wait_ms=5)
        await consumer.start()
        parts = []
        for topic in self._topics:
            for _ in range(50):
                found = consumer.partitions_for_topic(topic)
                if found:
                    break
                await consumer.topics()
                await asyncio.sleep(0.1)
            parts += [TopicPartition(topic, p) for p in sorted(found or ())]
        consumer.assign(parts)
        await consumer.seek_to_beginning(*parts)
        self._task = asyncio.create_task(self._read(consumer))
        return self

    async def _read(self, consumer: AIOKafkaConsumer) -> None:
        try:
            while True:
                for r in await fetch(consumer, max_records=5000, timeout_ms=5):
                    self.arrived.setdefault(_ids.decode(r.value or b"{}").event_id, time.time())
        finally:
            await consumer.stop()

    async def __aexit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task


async def relay(settings: Settings, source: str, sink: str, stop: asyncio.Event) -> None:
    """The bare hop: fetch a batch, forward it, wait for the acks, commit."""
    consumer, producer = make_consumer(settings.kafka, [source], "relay"), make_producer(settings.kafka)
    await producer.start()
    await consumer.start()
    try:
        while not stop.is_set():
            records = await fetch(
                consumer, max_records=settings.router.max_batch, timeout_ms=settings.router.batch_wait_ms
            )
            if records:
                await asyncio.gather(*[await producer.send(sink, r.value, key=r.key) for r in records])
                await consumer.commit()
    finally:
        await consumer.stop()
        await producer.stop()


class Row(msgspec.Struct):
    worker: str
    workers: int
    load: str
    rate: float
    ceiling: float
    busy: float
    e2e: list[float]
    added: list[float]
    relay: list[float]


def settings_for(args: argparse.Namespace, tag: str, pipeline: str, speed: float) -> Settings:
    return Settings.model_validate(
        {
            "topic_prefix": f"{tag}.",
            "namespace": tag,
            "kafka": {"bootstrap": args.bootstrap, "partitions": 8},
            "redis": {"url": args.redis},
            "router": {"catalog": str(args.catalog), "engine": "sim", "pipeline": pipeline},
            "sim": {"profile": "plano-4b-h100", "speed": speed},
        }
    )


async def phase(args: argparse.Namespace, n: int, pipeline: str, workers: int, load: str) -> Row:
    tag = f"gf{n}"
    settings = settings_for(args, tag, pipeline, args.speed)
    engine = build_engine(settings)
    sim = engine.engines[0]
    assert isinstance(sim, SimEngine)
    stop = asyncio.Event()
    async with engine:
        shared: Any = Shared(engine)
        tasks = [asyncio.create_task(run_router(settings, stop, engine=shared)) for _ in range(workers)]
        tasks.append(asyncio.create_task(run_correlator(settings, stop)))
        tasks += [
            asyncio.create_task(run_agent(_answering(a), settings, stop))
            for a in ("WeatherAgent", "MessagingAgent", "EchoAgent")
        ]
        relay_in, relay_out = f"{tag}.relay.in", f"{tag}.relay.out"
        topics = (settings.topics.conversations, settings.topics.decisions, relay_in, relay_out)
        await KafkaBus(settings.kafka).create_topics(dict.fromkeys(topics, 8))
        if load == "half":
            tasks.append(asyncio.create_task(relay(settings, relay_in, relay_out, stop)))
        producer = make_producer(settings.kafka)
        await producer.start()
        try:
            row = await drive(args, settings, sim, producer, tag, workers, load, (relay_in, relay_out))
        finally:
            stop.set()
            await producer.stop()
            await asyncio.gather(*tasks, return_exceptions=True)
    return msgspec.structs.replace(row, worker="pipelined" if pipeline == "on" else "one batch")


async def send(
    producer: Any,
    topic: str,
    evs: Sequence[ConversationEvent],
    rate: float | None,
    sent: dict[str, float],
    relay_to: str | None = None,
) -> None:
    futures, started = [], time.time()
    for i, e in enumerate(evs):
        if rate is not None and (ahead := started + i / rate - time.time()) > 0:
            await asyncio.sleep(ahead)
        sent[e.event_id] = time.time()
        futures.append(await producer.send(topic, encode(e), key=e.conversation_id.encode()))
        if relay_to is not None:
            sent["r" + e.event_id] = time.time()
            futures.append(
                await producer.send(
                    relay_to,
                    encode(msgspec.structs.replace(e, event_id="r" + e.event_id)),
                    key=e.conversation_id.encode(),
                )
            )
    await asyncio.gather(*futures)


async def settle(producer: Any, settings: Settings, reader: Reader, tag: str, relay_in: str | None) -> None:
    """Warm-up: turns (and relay records) until every worker is in its group and answering."""
    sent: dict[str, float] = {}
    for k in range(60):
        warm = events(f"{tag}w{k}", 16)
        await send(producer, settings.topics.conversations, warm, None, sent, relay_in)
        await asyncio.sleep(1.0)
        if all(e.event_id in reader.arrived for e in warm) and (
            relay_in is None or all("r" + e.event_id in reader.arrived for e in warm)
        ):
            return
    raise RuntimeError("the pipeline did not answer the warm-up turns in a minute")


async def drive(
    args: argparse.Namespace,
    settings: Settings,
    sim: SimEngine,
    producer: Any,
    tag: str,
    workers: int,
    load: str,
    relay_topics: tuple[str, str],
) -> Row:
    relay_in, relay_out = relay_topics
    half = load == "half"
    async with Reader(args.bootstrap, [settings.topics.decisions, *([relay_out] if half else [])]) as reader:
        await settle(producer, settings, reader, tag, relay_in if half else None)
        target = sim.ceiling()
        count = args.turns if not half else int(target * 0.5 * args.seconds)
        evs = events(tag, count)
        sent: dict[str, float] = {}
        busy0, t0 = sim.busy_seconds(), time.time()
        await send(
            producer,
            settings.topics.conversations,
            evs,
            target * 0.5 if half else None,
            sent,
            relay_in if half else None,
        )
        deadline = time.time() + 120
        while time.time() < deadline and not all(e.event_id in reader.arrived for e in evs):
            await asyncio.sleep(0.01)
        last = max(reader.arrived.get(e.event_id, time.time()) for e in evs)
        busy = (sim.busy_seconds() - busy0) / (last - t0)
        done = [e for e in evs if e.event_id in reader.arrived]
        e2e = {e.event_id: (reader.arrived[e.event_id] - sent[e.event_id]) * 1000 for e in done}
        agents = load_catalog(args.catalog).agents
        jobs = {
            e.event_id: job_for(
                RoutingRequest(event_id=e.event_id, conversation=e.messages, agents=agents), sent[e.event_id]
            )
            for e in done
        }
        replay(sim.profile, jobs.values())
        added = [e2e[i] - (j.done_at - j.arrival) * 1000 for i, j in jobs.items() if j.done_at is not None]
        relayed = (
            [
                (reader.arrived["r" + e.event_id] - sent["r" + e.event_id]) * 1000
                for e in evs
                if "r" + e.event_id in reader.arrived
            ]
            if half
            else []
        )
        return Row("", workers, load, len(done) / (last - t0), sim.ceiling(), busy, list(e2e.values()), added, relayed)


def show(rows: list[Row]) -> None:
    print(
        f"{'worker':<10} {'n':>2} {'load':<4} {'dec/s':>7} {'ceiling':>7} {'of ceil':>7} {'busy':>5} "
        f"{'e2e p50':>8} {'e2e p99':>8} {'added p50':>9} {'added p99':>9} {'relay p50':>9} {'relay p99':>9}"
    )
    for r in rows:
        relay_cols = f"{pct(r.relay, 0.5):9.1f} {pct(r.relay, 0.99):9.1f}" if r.relay else f"{'':>9} {'':>9}"
        print(
            f"{r.worker:<10} {r.workers:>2} {r.load:<4} {r.rate:7.1f} {r.ceiling:7.1f} "
            f"{r.rate / r.ceiling:7.0%} {r.busy:5.0%} {pct(r.e2e, 0.5):8.1f} {pct(r.e2e, 0.99):8.1f} "
            f"{pct(r.added, 0.5):9.1f} {pct(r.added, 0.99):9.1f} {relay_cols}",
            flush=True,
        )


async def bench(args: argparse.Namespace) -> None:
    rows: list[Row] = []
    n = 0
    for _ in range(args.rounds):
        for load in ("max", "half"):
            for workers in (1, 2):
                for pipeline in ("off", "on"):
                    n += 1
                    rows.append(row := await phase(args, n, pipeline, workers, load))
                    show([row])
    print("\nall rounds:")
    show(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2, help="rounds of the eight phases (interleaved)")
    parser.add_argument("--turns", type=int, default=600, help="turns sent at once at maximum load")
    parser.add_argument("--seconds", type=float, default=8.0, help="seconds of paced sending at half load")
    parser.add_argument("--target-ceiling", type=float, default=100.0, help="the slowed GPU's ceiling (decisions/s)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, EmbeddedBroker() as broker, EmbeddedValkey() as valkey:
        args.catalog = Path(tmp) / "agents.yaml"
        args.catalog.write_text(CATALOG)
        args.speed, full = speed_for(args.catalog, args.target_ceiling)
        print(
            f"4B on an H100 at full speed: {full:.0f} decisions/s for these turns; simulated at speed {args.speed:.4f}"
        )
        args.bootstrap, args.redis = broker.bootstrap, valkey.url
        asyncio.run(bench(args))


if __name__ == "__main__":
    main()
