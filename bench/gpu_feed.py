"""How full the router keeps a (simulated) GPU, and the latency it adds over the ideal.

    python bench/gpu_feed.py [--rounds 2] [--turns 600] [--seconds 8] [--target-ceiling 100]
                             [--loads max,half] [--bus tansu|memory] [--routers here,child]

One process (by default): tansu and Valkey (routeyard.consumers.dev.embedded), the router worker(s) on the
``sim`` engine (Plano-Orchestrator-4B on an H100, decisions by the rules engine inside it), the
correlator and three demo-like agents that answer at once. Each phase gets fresh topics and a
fresh simulated GPU; phases alternate the one-batch-at-a-time worker (``pipeline=off``) and the
pipelined one (``on``), with one and two router workers sharing the GPU, at:

- maximum load: ``--turns`` turns sent at once; decisions/s = turns / (first sent -> last
  decision read), against the simulator's ceiling for the turns' shape (its steady state when
  always full) and against the ideal (the same turns replayed through the simulator's model,
  each submitted the moment it was sent: what the GPU itself allows for this window, its ramp
  and its tail included); busy = the engine's time with a request in flight over that window;
- half load: turns paced at half the ceiling for ``--seconds``. Per turn: end to end = decision
  read here - turn sent; added = end to end - the simulator's latency for the same turn when
  every turn is submitted the moment it is sent (``sim_model.replay``: no batch boundaries, no
  Redis or Kafka in the way). Beside it, a bare relay hop over the same broker at the same rate
  (a consumer forwarding each fetched batch to another topic): the broker's floor. And the
  router's own share: sent -> into the engine plus out of the engine -> decision read. "added"
  also counts what a few milliseconds of that share cost inside a batching GPU: a turn that
  reaches the engine just after a step began waits for the next one (vLLM admits new requests
  at step boundaries), so its p99 tends to one step's time once the router takes over 1% of it.
  That is a floor of the metric itself, so beside the relay hop: relay-through-GPU ("r+GPU"),
  the same turns replayed once more with each arriving one relay hop after it was sent (its own
  relay twin's latency in this phase), minus the ideal finish: what "added" would be for a
  router that adds nothing but one bare relay hop. Its p99 exceeds the relay's by what the
  hops' jitter costs at step boundaries. The last two columns: added p99 minus relay p99 (the
  issue's target: at most 10 ms) and added p99 minus relay-through-GPU p99 (the router's own
  cost, step alignment counted on both sides).

``--bus memory`` runs the same on the in-memory bus, where the relay hop is well under a
millisecond: what the router itself adds, without this machine's tansu floor.

``--routers here,child`` runs every phase twice, interleaved: with the router workers on this
process's event loop (``here``, the default), and in a child process with their simulated GPU
(``child``; tansu only), so that the agents, correlator, relay and reader here no longer delay
them. Two workers in the child share one GPU as they do here. The router share stays measured:
the child notes into/out of the engine on the same wall clock and sends them back at the end.

The GPU is slowed (``ROUTEYARD_SIM__SPEED`` < 1) so that its ceiling is ``--target-ceiling``
decisions/s: this machine's tansu and two shared cores move a few hundred turns/s through the
whole path, so at the H100's own speed (thousands/s for these short prompts) the broker, not the
GPU, would be the bottleneck, and the question here is whether the router keeps the GPU busy.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import multiprocessing
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Sequence
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, NamedTuple

import msgspec

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from routeyard.consumers.agents.agent import Agent, agent  # noqa: E402
from routeyard.consumers.app import build_engine, run_agent, run_correlator, run_router  # noqa: E402
from routeyard.consumers.dev.embedded import EmbeddedBroker, EmbeddedValkey  # noqa: E402
from routeyard.consumers.kafka.aio import KafkaBus  # noqa: E402
from routeyard.consumers.kafka.bus import Bus, Outgoing, Producer, next_offsets  # noqa: E402
from routeyard.consumers.kafka.memory import MemoryBus  # noqa: E402
from routeyard.consumers.settings import Settings  # noqa: E402
from routeyard.router.catalog import AgentSpec, load_catalog  # noqa: E402
from routeyard.router.engines.base import RoutingRequest  # noqa: E402
from routeyard.router.engines.sim import SimEngine, job_for  # noqa: E402
from routeyard.router.engines.sim_model import ceiling, replay  # noqa: E402
from routeyard.router.engines.sim_profiles import PROFILES, Profile, Shape  # noqa: E402
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
    """One engine behind several router workers (one GPU): entered once, outside them. Notes when
    each turn went into the engine and came out, so the router's own share of a turn's latency
    (sent -> into the engine, out of the engine -> decision read) can be told from the GPU's."""

    def __init__(self, engine: Any) -> None:
        self._engine = engine
        self.name = engine.name
        self.entered: dict[str, float] = {}
        self.left: dict[str, float] = {}

    async def decide(self, requests: Sequence[RoutingRequest]) -> list[Any]:
        now = time.time()
        for r in requests:
            self.entered.setdefault(r.event_id, now)
        try:
            return list(await self._engine.decide(requests))
        finally:
            now = time.time()
            for r in requests:
                self.left.setdefault(r.event_id, now)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._engine, name)

    async def __aenter__(self) -> Shared:
        return self

    async def __aexit__(self, *exc: object) -> None:
        return None


class Reading(NamedTuple):
    busy_s: float
    """The engine's time with a request in flight since it started (``SimEngine.busy_seconds``)."""
    ceiling: float


class LocalGpu:
    """The simulated GPU behind router workers on this event loop: read directly."""

    def __init__(self, shared: Shared) -> None:
        sim = shared.engines[0]
        assert isinstance(sim, SimEngine)
        self._shared, self._sim = shared, sim
        self.profile: Profile = sim.profile

    async def reading(self) -> Reading:
        return Reading(self._sim.busy_seconds(), self._sim.ceiling())

    async def times(self) -> tuple[dict[str, float], dict[str, float]]:
        """When each turn went into the engine and came out (wall clock, as ``sent``)."""
        return self._shared.entered, self._shared.left


@contextlib.asynccontextmanager
async def local_routers(settings: Settings, workers: int, stop: asyncio.Event, bus: Bus) -> AsyncIterator[LocalGpu]:
    """``workers`` router workers on this event loop, sharing one simulated GPU, until ``stop``."""
    engine = build_engine(settings)
    async with engine:
        shared = Shared(engine)
        tasks = [asyncio.create_task(run_router(settings, stop, engine=shared, bus=bus)) for _ in range(workers)]
        try:
            yield LocalGpu(shared)
        finally:
            stop.set()
            await asyncio.gather(*tasks, return_exceptions=True)


class ChildGpu:
    """The simulated GPU of router workers in a child process (``serve_routers``), read over a pipe."""

    def __init__(self, conn: Connection, profile: Profile) -> None:
        self._conn, self.profile = conn, profile
        self.finished = False

    async def _ask(self, what: str) -> Any:
        self._conn.send(what)
        return await asyncio.to_thread(self._conn.recv)

    async def reading(self) -> Reading:
        return Reading(*await self._ask("read"))

    async def times(self) -> tuple[dict[str, float], dict[str, float]]:
        """Stops the child's workers and returns their turns' engine times (the same wall clock)."""
        self.finished = True
        entered, left = await self._ask("times")
        return entered, left


@contextlib.asynccontextmanager
async def child_routers(settings: Settings, workers: int) -> AsyncIterator[ChildGpu]:
    """``workers`` router workers sharing one simulated GPU in a process of their own: this
    process's event loop (agents, correlator, relay, reader) no longer delays them."""
    spawn = multiprocessing.get_context("spawn")
    ours, theirs = spawn.Pipe()
    child = spawn.Process(target=serve_routers, args=(theirs, settings, workers), daemon=True)
    child.start()
    theirs.close()  # so that a child that dies is an EOFError here, not a wait for ever
    gpu = ChildGpu(ours, await asyncio.to_thread(ours.recv))
    try:
        yield gpu
    finally:
        if not gpu.finished and child.is_alive():
            ours.send("times")
        await asyncio.to_thread(child.join, 30)
        if child.is_alive():
            child.kill()


def serve_routers(conn: Connection, settings: Settings, workers: int) -> None:
    """The child's life: sends the GPU's profile once started, answers "read" with a ``Reading``
    until "times", then stops its workers and sends when each turn entered and left the engine."""

    async def serve() -> None:
        stop = asyncio.Event()
        async with local_routers(settings, workers, stop, KafkaBus(settings.kafka)) as gpu:
            conn.send(gpu.profile)
            while await asyncio.to_thread(conn.recv) == "read":
                conn.send(tuple(await gpu.reading()))
        conn.send(await gpu.times())

    asyncio.run(serve())


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

    def __init__(self, bus: Bus, topics: Sequence[str]) -> None:
        self.arrived: dict[str, float] = {}
        self._bus, self._topics = bus, topics
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Reader:
        consumer = self._bus.consumer(None)
        await consumer.start()
        parts = []
        for topic in self._topics:
            parts += await consumer.partitions_for(topic)
        consumer.assign(parts)
        await consumer.seek_to_beginning(parts)
        self._task = asyncio.create_task(self._read(consumer))
        return self

    async def _read(self, consumer: Any) -> None:
        try:
            while True:
                for r in await consumer.fetch(max_records=5000, timeout_ms=5):
                    self.arrived.setdefault(_ids.decode(r.value or b"{}").event_id, time.time())
        finally:
            await consumer.stop()

    async def __aexit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task


async def relay(bus: Bus, settings: Settings, source: str, sink: str, stop: asyncio.Event) -> None:
    """The bare hop: fetch a batch, forward it, wait for the acks, commit."""
    consumer, producer = bus.consumer(f"{settings.topic_prefix}relay", [source]), bus.producer()
    await producer.start()
    await consumer.start()
    try:
        while not stop.is_set():
            records = await consumer.fetch(
                max_records=settings.router.max_batch, timeout_ms=settings.router.batch_wait_ms
            )
            if records:
                await producer.publish(
                    [Outgoing(topic=sink, value=r.value or b"", key=r.key.decode() if r.key else None) for r in records]
                )
                await consumer.commit(next_offsets(records))
    finally:
        await consumer.stop()
        await producer.stop()


class Row(msgspec.Struct):
    worker: str
    where: str
    """The router workers' process: "here" (this event loop) or "child" (``child_routers``)."""
    workers: int
    load: str
    rate: float
    ceiling: float
    ideal: float
    """Decisions/s of the same turns with each submitted to the simulator the moment it was sent."""
    busy: float
    e2e: list[float]
    added: list[float]
    router: list[float]
    """Per turn, ms: sent -> into the engine, plus out of the engine -> decision read."""
    relay: list[float]
    relay_gpu: list[float]
    """Per turn, ms: "added" of a router that adds only one relay hop (``through_relay``)."""


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


async def phase(args: argparse.Namespace, n: int, pipeline: str, workers: int, load: str, where: str) -> Row:
    tag = f"gf{n}"
    settings = settings_for(args, tag, pipeline, args.speed)
    stop = asyncio.Event()
    bus: Bus = MemoryBus(partitions=8) if args.bus == "memory" else KafkaBus(settings.kafka)
    relay_in, relay_out = f"{tag}.relay.in", f"{tag}.relay.out"
    topics = (settings.topics.conversations, settings.topics.decisions, relay_in, relay_out)
    await bus.create_topics(dict.fromkeys(topics, 8))
    routers = child_routers(settings, workers) if where == "child" else local_routers(settings, workers, stop, bus)
    async with routers as gpu:
        tasks = [asyncio.create_task(run_correlator(settings, stop, bus))]
        tasks += [
            asyncio.create_task(run_agent(_answering(a), settings, stop, bus))
            for a in ("WeatherAgent", "MessagingAgent", "EchoAgent")
        ]
        if load == "half":
            tasks.append(asyncio.create_task(relay(bus, settings, relay_in, relay_out, stop)))
        producer = bus.producer()
        await producer.start()
        try:
            row = await drive(args, settings, bus, gpu, producer, tag, workers, load, (relay_in, relay_out))
        finally:
            stop.set()
            await producer.stop()
            await asyncio.gather(*tasks, return_exceptions=True)
    return msgspec.structs.replace(row, worker="pipelined" if pipeline == "on" else "one batch", where=where)


async def send(
    producer: Producer,
    topic: str,
    evs: Sequence[ConversationEvent],
    rate: float | None,
    sent: dict[str, float],
    relay_to: str | None = None,
) -> None:
    """At ``rate`` (turns/s): each turn (and its relay twin) published on its own, not awaited, so
    pacing holds while the broker acknowledges; without a rate: all at once, in one publish."""

    def records(e: ConversationEvent) -> list[Outgoing]:
        out = [Outgoing(topic=topic, value=encode(e), key=e.conversation_id)]
        if relay_to is not None:
            twin = msgspec.structs.replace(e, event_id="r" + e.event_id)
            out.append(Outgoing(topic=relay_to, value=encode(twin), key=e.conversation_id))
            sent[twin.event_id] = time.time()
        sent[e.event_id] = time.time()
        return out

    if rate is None:
        await producer.publish([o for e in evs for o in records(e)])
        return
    pending, started = [], time.time()
    for i, e in enumerate(evs):
        if (ahead := started + i / rate - time.time()) > 0:
            await asyncio.sleep(ahead)
        pending += [asyncio.create_task(producer.publish([o])) for o in records(e)]
    await asyncio.gather(*pending)


async def settle(producer: Producer, settings: Settings, reader: Reader, tag: str, relay_in: str | None) -> None:
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


def finishes(
    profile: Profile, evs: Sequence[ConversationEvent], agents: tuple[AgentSpec, ...], arrivals: dict[str, float]
) -> dict[str, float]:
    """When each turn's answer would be done (s, same clock as ``arrivals``) in the simulator's
    model, every turn submitted at its arrival: no batch boundaries, no broker, no router."""
    jobs = {
        e.event_id: job_for(
            RoutingRequest(event_id=e.event_id, conversation=e.messages, agents=agents), arrivals[e.event_id]
        )
        for e in evs
    }
    replay(profile, jobs.values())
    return {i: j.done_at for i, j in jobs.items() if j.done_at is not None}


def through_relay(
    profile: Profile,
    evs: Sequence[ConversationEvent],
    agents: tuple[AgentSpec, ...],
    sent: dict[str, float],
    hops: dict[str, float],
    ideal_done: dict[str, float],
) -> list[float]:
    """Per turn, ms: what a router adding nothing but one bare relay hop would show as "added".

    The same turns replayed again, each arriving one relay hop after it was sent (its own relay
    twin's measured latency; the median hop for a turn whose twin never came back), minus the
    ideal finish. The hop's latency plus what arriving that much later costs at the GPU's step
    boundaries: the floor of "added" for a router as fast as the relay, in the same run."""
    late = statistics.median(hops.values()) if hops else 0.0
    done = finishes(profile, evs, agents, {e.event_id: sent[e.event_id] + hops.get(e.event_id, late) for e in evs})
    return [(done[i] - ideal_done[i]) * 1000 for i in hops if i in done and i in ideal_done]


async def drive(
    args: argparse.Namespace,
    settings: Settings,
    bus: Bus,
    gpu: LocalGpu | ChildGpu,
    producer: Producer,
    tag: str,
    workers: int,
    load: str,
    relay_topics: tuple[str, str],
) -> Row:
    relay_in, relay_out = relay_topics
    half = load == "half"
    async with Reader(bus, [settings.topics.decisions, *([relay_out] if half else [])]) as reader:
        await settle(producer, settings, reader, tag, relay_in if half else None)
        target = (await gpu.reading()).ceiling
        count = args.turns if not half else int(target * 0.5 * args.seconds)
        evs = events(tag, count)
        sent: dict[str, float] = {}
        busy0, t0 = (await gpu.reading()).busy_s, time.time()
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
        end = await gpu.reading()
        entered, left = await gpu.times()
        busy = (end.busy_s - busy0) / (last - t0)
        done = [e for e in evs if e.event_id in reader.arrived]
        e2e = {e.event_id: (reader.arrived[e.event_id] - sent[e.event_id]) * 1000 for e in done}
        agents = load_catalog(args.catalog).agents
        ideal_done = finishes(gpu.profile, done, agents, sent)
        added = [e2e[i] - (t - sent[i]) * 1000 for i, t in ideal_done.items()]
        ideal_last = max(ideal_done.values(), default=last)
        hops = {
            e.event_id: reader.arrived["r" + e.event_id] - sent["r" + e.event_id]
            for e in (evs if half else [])
            if "r" + e.event_id in reader.arrived
        }
        rate, ideal = len(done) / (last - t0), len(ideal_done) / (ideal_last - t0)
        router = [
            ((entered[i] - sent[i]) + (reader.arrived[i] - left[i])) * 1000 for i in e2e if i in entered and i in left
        ]
        relay_gpu = through_relay(gpu.profile, done, agents, sent, hops, ideal_done)
        relayed = [h * 1000 for h in hops.values()]
        return Row(
            "", "", workers, load, rate, end.ceiling, ideal, busy, list(e2e.values()), added, router, relayed, relay_gpu
        )


def show(rows: list[Row]) -> None:
    """One line a phase. Half load adds the relay hop, relay-through-GPU (``through_relay``) and
    added p99 minus each of their p99s (the issue's target: at most 10 over the relay hop)."""
    print(
        f"{'worker':<10} {'where':<5} {'n':>2} {'load':<4} {'dec/s':>7} {'ceiling':>7} {'of ceil':>7} {'ideal':>7} "
        f"{'of ideal':>8} {'busy':>5} {'e2e p50':>8} {'e2e p99':>8} {'added p50':>9} {'added p99':>9} "
        f"{'router p50':>10} {'router p99':>10} {'relay p50':>9} {'relay p99':>9} "
        f"{'r+GPU p50':>9} {'r+GPU p99':>9} {'over relay':>10} {'over r+GPU':>10}"
    )
    for r in rows:
        relay_cols = (
            f"{pct(r.relay, 0.5):9.1f} {pct(r.relay, 0.99):9.1f} "
            f"{pct(r.relay_gpu, 0.5):9.1f} {pct(r.relay_gpu, 0.99):9.1f} "
            f"{pct(r.added, 0.99) - pct(r.relay, 0.99):10.1f} {pct(r.added, 0.99) - pct(r.relay_gpu, 0.99):10.1f}"
            if r.relay
            else ""
        )
        print(
            f"{r.worker:<10} {r.where:<5} {r.workers:>2} {r.load:<4} {r.rate:7.1f} {r.ceiling:7.1f} "
            f"{r.rate / r.ceiling:7.0%} {r.ideal:7.1f} {r.rate / r.ideal:8.0%} {r.busy:5.0%} "
            f"{pct(r.e2e, 0.5):8.1f} {pct(r.e2e, 0.99):8.1f} "
            f"{pct(r.added, 0.5):9.1f} {pct(r.added, 0.99):9.1f} "
            f"{pct(r.router, 0.5):10.1f} {pct(r.router, 0.99):10.1f} {relay_cols}".rstrip(),
            flush=True,
        )


async def bench(args: argparse.Namespace) -> None:
    rows: list[Row] = []
    n = 0
    for _ in range(args.rounds):
        for load in args.loads:
            for workers in (1, 2):
                for pipeline in ("off", "on"):
                    for where in args.routers:
                        n += 1
                        rows.append(row := await phase(args, n, pipeline, workers, load, where))
                        show([row])
    print("\nall rounds:")
    show(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2, help="rounds of the eight phases (interleaved)")
    parser.add_argument("--turns", type=int, default=600, help="turns sent at once at maximum load")
    parser.add_argument("--seconds", type=float, default=8.0, help="seconds of paced sending at half load")
    parser.add_argument("--target-ceiling", type=float, default=100.0, help="the slowed GPU's ceiling (decisions/s)")
    parser.add_argument("--loads", default="max,half", help="which loads to run, comma-separated: max, half")
    parser.add_argument(
        "--bus",
        choices=("tansu", "memory"),
        default="tansu",
        help="the broker: tansu, or the in-memory bus (no broker floor: what the router itself adds)",
    )
    parser.add_argument(
        "--routers",
        default="here",
        help="where the router workers and their simulated GPU run, comma-separated (each phase once per value):"
        " here (this process's event loop) or child (a process of their own; tansu only)",
    )
    args = parser.parse_args()
    args.loads = [x for x in args.loads.split(",") if x]
    if not args.loads or set(args.loads) - {"max", "half"}:
        parser.error("--loads takes max, half or both (comma-separated)")
    args.routers = [x for x in args.routers.split(",") if x]
    if not args.routers or set(args.routers) - {"here", "child"}:
        parser.error("--routers takes here, child or both (comma-separated)")
    if "child" in args.routers and args.bus == "memory":
        parser.error("--routers child needs a broker both processes reach: --bus tansu")
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
