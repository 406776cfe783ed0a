"""The whole path as processes, against a bare aiokafka relay over as many hops on the same broker.

    python bench/pipeline.py [--conversations 20000] [--rounds 3] [--active 10000] [--partitions 8]
                             [--loads 0.5,0.1] [--paced-seconds 10] [--profile DIR]

Starts tansu (in-memory) and Valkey, then two pipelines side by side, every stage its own process:

- routeyard: `routeyard worker router` (rules engine, a one-agent catalog in a temp file),
  `routeyard agent bench.pipeline:echo` and `routeyard worker correlator`, default settings;
- relay: three `python bench/pipeline.py relay` processes (conversations -> agent topic, the echo
  agent topic -> replies, replies -> responses), each a plain aiokafka consumer in a group that
  forwards each fetched batch to the next topic and commits: the least a hop can do. Its clients
  come from the same factories and settings (fetch wait, batch size, linger, acks) as routeyard's,
  so it is this machine's ceiling for three hops.

This process publishes the conversations (one turn each, a new conversation id each) and reads
both responses topics all the time. After a warm-up (consumer groups joined) it measures, in order:

1. memory at ``--active`` conversations: the router worker's RSS (/proc/<pid>/status) and Redis
   used_memory before and after that many conversations, and MEMORY USAGE of sampled keys by kind;
2. context bounds: 100 turns to one conversation, its context list and seen-set after each 10;
3. maximum load, ``--rounds`` rounds, the two pipelines alternating first: every conversation sent
   as fast as possible; throughput = completed / (first send -> last response read); end-to-end
   latency = send -> response read, in this process. Median over rounds; ratio per round;
4. paced load: both pipelines paced at each of ``--loads`` x routeyard's median maximum (0.5,
   where the target is, and 0.1: what the router adds on a machine that is not busy) for
   ``--paced-seconds``, then hop 1 read back from the topics: the agent-task record's CreateTime minus the
   conversation record's CreateTime, matched by event id (the same for relay hop 1; it includes
   the broker's delivery); and the time the worker itself holds each record (batch fetched ->
   outcome published): the router's routeyard_held_seconds{stage="route"} from its /metrics, and
   the same histogram kept by relay hop 1, each read before and after the phase; and how long each
   step of the router's batches took (routeyard_batch_phase_seconds{stage="route"}: decode, Redis
   reads, engine, Redis compare-and-set, publish acknowledged).

Also prints each process's CPU use during the last maximum-load round, tansu and Valkey included
(who is the bottleneck; on a small machine the sum is the ceiling). ``--profile DIR`` runs the
routeyard processes under cProfile (DIR/router.prof, ...): the figures then are not comparable.
Targets: routeyard >= 0.5 x relay throughput; router-added p99 < 10 ms at half load.
ROUTEYARD_* variables exported before the run reach every child (e.g. ROUTEYARD_AGENT__CONCURRENCY=256
to lift the echo agent's in-flight limit of 16; ROUTEYARD_ROUTER__CONTEXT_MAX_MESSAGES, default 32 here).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import msgspec

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from aiokafka import AIOKafkaConsumer, TopicPartition  # noqa: E402
from prometheus_client.parser import text_string_to_metric_families  # noqa: E402
from routeyard.consumers.agents.agent import agent  # noqa: E402
from routeyard.consumers.kafka.bus import fetch, make_consumer, make_producer  # noqa: E402
from routeyard.consumers.metrics import HELD_BUCKETS  # noqa: E402
from routeyard.consumers.settings import KafkaSettings, Settings  # noqa: E402
from routeyard.schemas import AgentTask, ConversationEvent, Message, Topics, encode  # noqa: E402

PREFIX, RELAY_PREFIX, NAMESPACE = "bench.", "relay.", "bench"
CATALOG = """agents:
  - name: EchoAgent
    description: Repeats the user's latest message back
    default: true
    timeout: 120s
    rules:
      keywords: [echo]
"""


@agent("EchoAgent", "Repeats the user's latest message back")
async def echo(task: AgentTask) -> str:
    return task.messages[-1].content


class _Id(msgspec.Struct):
    """What the reader needs of any record here (events, tasks, responses all carry event_id)."""

    event_id: str
    status: str | None = None


_ids = msgspec.json.Decoder(_Id)


def pct(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


# --- the relay: one hop, a separate process ---------------------------------------------------


async def relay(source: str, sink: str, group: str, port: str) -> None:
    from prometheus_client import Histogram, start_http_server

    held = Histogram("relay_held_seconds", "batch fetched -> forwarded and acknowledged", buckets=HELD_BUCKETS)
    start_http_server(int(port), addr="127.0.0.1")
    settings = Settings()  # the same ROUTEYARD_* environment as the routeyard workers
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        asyncio.get_running_loop().add_signal_handler(sig, stop.set)
    consumer, producer = make_consumer(settings.kafka, [source], group), make_producer(settings.kafka)
    await producer.start()
    await consumer.start()
    try:
        while not stop.is_set():
            records = await fetch(
                consumer, max_records=settings.router.max_batch, timeout_ms=settings.router.batch_wait_ms
            )
            if records:
                fetched = time.perf_counter()
                futures = [await producer.send(sink, r.value, key=r.key) for r in records]
                await asyncio.gather(*futures)
                took = time.perf_counter() - fetched
                for _ in records:
                    held.observe(took)
                await consumer.commit()
    finally:
        await consumer.stop()
        await producer.stop()


# --- child processes ---------------------------------------------------------------------------


def _die_with_parent() -> None:
    ctypes.CDLL(None).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG: no orphan if this process dies


def _ticks(pid: int) -> float:
    """CPU seconds (user + system) a process has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


@dataclass
class Processes:
    logs: Path
    pids: dict[str, int] = field(default_factory=dict)
    children: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def start(self, name: str, argv: list[str], env: dict[str, str]) -> None:
        with (self.logs / f"{name}.log").open("ab") as log:
            child = subprocess.Popen(
                argv,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                preexec_fn=_die_with_parent,
            )
        self.children.append(child)
        self.pids[name] = child.pid

    def cpu(self) -> dict[str, float]:
        return {name: _ticks(pid) for name, pid in self.pids.items()} | {"driver": time.process_time()}

    def check(self) -> None:
        dead = [c.args for c in self.children if c.poll() is not None]
        if dead:
            raise RuntimeError(f"a child process exited: {dead}; logs in {self.logs}")

    def stop(self) -> None:
        for child in self.children:
            if child.poll() is None:
                child.terminate()
        for child in self.children:
            try:
                child.wait(15)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()
        self.children.clear()

    def tails(self) -> str:
        return "\n".join(
            f"--- {p.name}\n" + "\n".join(p.read_text().splitlines()[-15:]) for p in self.logs.glob("*.log")
        )


def worker_env(bootstrap: str, redis_url: str, catalog: Path, partitions: int) -> dict[str, str]:
    return dict(
        os.environ,
        PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
        ROUTEYARD_TOPIC_PREFIX=PREFIX,
        ROUTEYARD_KAFKA__BOOTSTRAP=bootstrap,
        ROUTEYARD_KAFKA__PARTITIONS=str(partitions),
        ROUTEYARD_KAFKA__SESSION_TIMEOUT_MS="6000",
        ROUTEYARD_KAFKA__HEARTBEAT_INTERVAL_MS="1000",
        ROUTEYARD_REDIS__URL=redis_url,
        ROUTEYARD_ROUTER__CATALOG=str(catalog),
        ROUTEYARD_ROUTER__ENGINE="rules",
        ROUTEYARD_ROUTER__CONTEXT_MAX_MESSAGES=os.environ.get("ROUTEYARD_ROUTER__CONTEXT_MAX_MESSAGES", "32"),
        ROUTEYARD_LIFECYCLE__SHUTDOWN_TIMEOUT_S="5",
        ROUTEYARD_LOG_LEVEL="WARNING",
    )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_pipelines(procs: Processes, env: dict[str, str], profile: Path | None = None) -> dict[str, str]:
    """Starts both pipelines; returns the /metrics address of the router and of relay hop 1."""
    scrape = {"routeyard": free_port(), "relay": free_port()}

    def cli(name: str) -> list[str]:
        if profile is None:
            return [sys.executable, "-m", "routeyard.consumers.cli"]
        return [sys.executable, "-m", "cProfile", "-o", str(profile / f"{name}.prof"), "-m", "routeyard.consumers.cli"]

    router_env = env | {"ROUTEYARD_OBSERVABILITY__PORT": str(scrape["routeyard"])}
    procs.start("router", [*cli("router"), "worker", "router"], router_env)
    procs.start("agent", [*cli("agent"), "agent", "bench.pipeline:echo"], env)
    procs.start("correlator", [*cli("correlator"), "worker", "correlator"], env)
    ry, rl = Topics(prefix=PREFIX), Topics(prefix=RELAY_PREFIX)
    hops = [(rl.conversations, rl.agent("EchoAgent")), (rl.agent("EchoAgent"), rl.replies), (rl.replies, rl.responses)]
    for i, (source, sink) in enumerate(hops, 1):
        port = str(scrape["relay"] if i == 1 else free_port())
        procs.start(f"relay{i}", [sys.executable, __file__, "relay", source, sink, f"relay.hop{i}", port], env)
    assert ry.conversations != rl.conversations
    return {name: f"http://127.0.0.1:{port}/metrics" for name, port in scrape.items()}


HELD_SERIES = {"routeyard": ("routeyard_held_seconds", {"stage": "route"}), "relay": ("relay_held_seconds", {})}
STEPS = ("decode", "read", "decide", "store", "publish")
"""The router worker's batch steps (routeyard_batch_phase_seconds{stage="route"})."""


def scrape_text(url: str) -> str:
    return urllib.request.urlopen(url, timeout=5).read().decode()


def buckets(text: str, name: str, labels: dict[str, str]) -> list[tuple[float, float]]:
    """(upper bound, cumulative count) of one histogram series in a /metrics page (zeros where absent)."""
    values = {float(b): 0.0 for b in (*HELD_BUCKETS, float("inf"))}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == f"{name}_bucket" and all(sample.labels.get(k) == v for k, v in labels.items()):
                values[float(sample.labels["le"])] = sample.value
    return sorted(values.items())


def held_buckets(url: str, pipe: str) -> list[tuple[float, float]]:
    """(upper bound, cumulative count) of the hop-1 worker's held-time histogram, now."""
    return buckets(scrape_text(url), *HELD_SERIES[pipe])


def step_buckets(url: str) -> dict[str, list[tuple[float, float]]]:
    text = scrape_text(url)
    return {s: buckets(text, "routeyard_batch_phase_seconds", {"stage": "route", "phase": s}) for s in STEPS}


def quantile(before: list[tuple[float, float]], after: list[tuple[float, float]], q: float) -> float:
    """``q``'s value in ms from the change of a cumulative histogram, interpolated in its bucket
    as Prometheus's histogram_quantile does."""
    counts = [(bound, a - z) for (bound, a), (_, z) in zip(after, before, strict=True)]
    total = counts[-1][1]
    if total <= 0:
        return float("nan")
    rank, lower, below = q * total, 0.0, 0.0
    for bound, cumulative in counts:
        if cumulative >= rank:
            if bound == float("inf"):
                return lower * 1000
            return (lower + (bound - lower) * (rank - below) / max(cumulative - below, 1e-9)) * 1000
        lower, below = bound, cumulative
    return lower * 1000


# --- the driver: send, read responses, measure -------------------------------------------------


@dataclass(frozen=True)
class Pipe:
    name: str
    topics: Topics

    @property
    def hop1(self) -> tuple[str, str]:
        return self.topics.conversations, self.topics.agent("EchoAgent")


@dataclass
class Run:
    sent: int
    completed: int
    per_s: float
    latencies_ms: list[float]
    cpu: dict[str, float]
    wall_s: float
    ids: set[str]
    first: float


def make_events(tag: str, count: int, conversation: str | None = None, pad: int = 0) -> list[tuple[str, str, bytes]]:
    out = []
    for i in range(count):
        cid = conversation or f"{tag}-c{i}"
        text = f"echo hello {i} " + "x" * pad
        event = ConversationEvent(
            event_id=f"{tag}-{i}", conversation_id=cid, messages=[Message(role="user", content=text)]
        )
        out.append((event.event_id, cid, encode(event)))
    return out


class Driver:
    def __init__(self, bootstrap: str, procs: Processes, partitions: int) -> None:
        self.kafka = KafkaSettings(bootstrap=bootstrap)
        self.procs = procs
        self.partitions = partitions
        self.producer = make_producer(self.kafka)
        self.sent: dict[str, float] = {}
        self.arrived: dict[str, float] = {}
        self.statuses: dict[str, int] = {}
        self.waiting: set[str] = set()
        self._reader: asyncio.Task[None] | None = None

    async def start(self, pipes: Sequence[Pipe]) -> None:
        await self.producer.start()
        consumer = await _assigned(self.kafka, [p.topics.responses for p in pipes])
        self._reader = asyncio.create_task(self._read(consumer))

    async def stop(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
        await self.producer.stop()

    async def _read(self, consumer: AIOKafkaConsumer) -> None:
        try:
            while True:
                for record in await fetch(consumer, max_records=2000, timeout_ms=self.kafka.fetch_max_wait_ms):
                    now = time.time()
                    rid = _ids.decode(record.value or b"")
                    self.arrived.setdefault(rid.event_id, now)
                    self.waiting.discard(rid.event_id)
                    if rid.status is not None:
                        self.statuses[rid.status] = self.statuses.get(rid.status, 0) + 1
        finally:
            await consumer.stop()

    async def send(self, topic: str, events: Sequence[tuple[str, str, bytes]], rate: float | None = None) -> None:
        futures, started = [], time.time()
        for n, (eid, cid, value) in enumerate(events):
            if rate is not None and (ahead := started + n / rate - time.time()) > 0:
                await asyncio.sleep(ahead)
            self.sent[eid] = time.time()
            futures.append(await self.producer.send(topic, value, key=cid.encode()))
        await asyncio.gather(*futures)

    async def load(self, pipe: Pipe, events: Sequence[tuple[str, str, bytes]], rate: float | None = None) -> Run:
        cpu0, ids = self.procs.cpu(), [e[0] for e in events]
        self.waiting = set(ids)
        sending = asyncio.create_task(self.send(pipe.topics.conversations, events, rate))
        deadline = time.time() + 60 + len(events) / 100
        while (self.waiting or not sending.done()) and time.time() < deadline:
            self.procs.check()
            await asyncio.sleep(0.02)
        await sending
        cpu1 = self.procs.cpu()
        done = [i for i in ids if i in self.arrived]
        first, last = min(self.sent[i] for i in ids), max((self.arrived[i] for i in done), default=time.time())
        lat = [(self.arrived[i] - self.sent[i]) * 1000 for i in done]
        cpu = {k: cpu1[k] - cpu0.get(k, cpu1[k]) for k in cpu1}
        return Run(len(ids), len(done), len(done) / (last - first), lat, cpu, last - first, set(ids), first)


async def _assigned(kafka: KafkaSettings, topics: Sequence[str]) -> AIOKafkaConsumer:
    """A group-less consumer on every partition of ``topics``, from the beginning (tansu's
    ListOffsets is unreliable, so never seek to the end; event ids tell runs apart)."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=kafka.bootstrap,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        fetch_max_wait_ms=kafka.fetch_max_wait_ms,
    )
    await consumer.start()
    await consumer.topics()
    parts = [TopicPartition(t, p) for t in topics for p in sorted(consumer.partitions_for_topic(t) or [])]
    consumer.assign(parts)
    await consumer.seek_to_beginning(*parts)
    return consumer


async def timestamps(kafka: KafkaSettings, topic: str, ids: set[str]) -> dict[str, int]:
    """Each of ``ids``' record CreateTime (ms) on ``topic``, read from the beginning."""
    consumer = await _assigned(kafka, [topic])
    found: dict[str, int] = {}
    try:
        while len(found) < len(ids):
            batch = await consumer.getmany(timeout_ms=1000, max_records=5000)
            if not batch:
                break
            for record in (r for records in batch.values() for r in records):
                eid = _ids.decode(record.value or b"").event_id
                if eid in ids:
                    found.setdefault(eid, record.timestamp)
    finally:
        await consumer.stop()
    return found


async def hop_ms(kafka: KafkaSettings, pipe: Pipe, ids: set[str]) -> list[float]:
    source, sink = pipe.hop1
    before, after = await timestamps(kafka, source, ids), await timestamps(kafka, sink, ids)
    return [float(after[i] - before[i]) for i in ids if i in before and i in after]


# --- the phases ----------------------------------------------------------------------------------


def key_kind(key: bytes) -> str:
    parts = key.decode().split(":")  # {ns}:{tenant}:{kind}:{id}, or {ns}:{kind}[:...]
    return parts[2] if len(parts) >= 4 else parts[1]


async def redis_keys(redis, sample: int = 200) -> dict[str, tuple[int, float]]:  # type: ignore[no-untyped-def]
    """Per kind of key: how many, and their mean MEMORY USAGE over up to ``sample`` of them."""
    counts: dict[str, int] = {}
    sizes: dict[str, list[int]] = {}
    async for key in redis.scan_iter(match=f"{NAMESPACE}:*", count=2000):
        kind = key_kind(key)
        counts[kind] = counts.get(kind, 0) + 1
        if len(sizes.setdefault(kind, [])) < sample:
            sizes[kind].append(await redis.memory_usage(key) or 0)
    return {k: (counts[k], statistics.fmean(sizes[k])) for k in sorted(counts)}


async def memory_phase(driver: Driver, redis, pipe: Pipe, active: int) -> dict:  # type: ignore[no-untyped-def]
    router = driver.procs.pids["router"]
    used0, rss0 = (await redis.info("memory"))["used_memory"], rss_mib(router)
    run = await driver.load(pipe, make_events("active", active))
    await asyncio.sleep(1.0)
    used1, rss1 = (await redis.info("memory"))["used_memory"], rss_mib(router)
    return {"run": run, "rss": (rss0, rss1), "per_conv": (used1 - used0) / active, "keys": await redis_keys(redis)}


async def context_phase(driver: Driver, redis, pipe: Pipe, turns: int = 100, step: int = 10) -> list[tuple]:  # type: ignore[no-untyped-def]
    cid = "long-conversation"
    ctx, seen = f"{NAMESPACE}:_:ctx:{cid}", f"{NAMESPACE}:_:seen:{cid}"
    events, rows = make_events("long", turns, conversation=cid, pad=100), []
    for k in range(0, turns, step):
        run = await driver.load(pipe, events[k : k + step])
        sizes = (
            await redis.llen(ctx),
            await redis.memory_usage(ctx),
            await redis.zcard(seen),
            await redis.memory_usage(seen),
        )
        rows.append((k + step, run.completed, *sizes))
    return rows


async def max_rounds(driver: Driver, pipes: Sequence[Pipe], count: int, rounds: int) -> dict[str, list[Run]]:
    runs: dict[str, list[Run]] = {p.name: [] for p in pipes}
    for r in range(rounds):
        for pipe in pipes if r % 2 == 0 else list(reversed(pipes)):
            run = await driver.load(pipe, make_events(f"{pipe.name}-max{r}", count))
            runs[pipe.name].append(run)
            print(f"  round {r + 1} {pipe.name}: {run.per_s:,.0f} conv/s ({run.completed}/{run.sent})", flush=True)
            await asyncio.sleep(1.0)  # let the stragglers' commits settle before the other side runs
    return runs


@dataclass
class Half:
    run: Run
    hop_ms: list[float]
    held_ms: tuple[float, float]
    """p50, p99 of the hop-1 worker's held time (its own histogram, read before and after)."""
    steps_ms: dict[str, tuple[float, float]] = field(default_factory=dict)
    """routeyard only: p50, p99 of each step of the router worker's batches."""


async def half_load(
    driver: Driver, pipes: Sequence[Pipe], rate: float, seconds: float, scrape: dict[str, str]
) -> dict[str, Half]:
    out = {}
    for pipe in pipes:
        events = make_events(f"{pipe.name}-paced{rate:.0f}", max(100, int(rate * seconds)))
        url = scrape[pipe.name]
        before, steps_before = held_buckets(url, pipe.name), step_buckets(url) if pipe.name == "routeyard" else {}
        run = await driver.load(pipe, events, rate)
        after, steps_after = held_buckets(url, pipe.name), step_buckets(url) if pipe.name == "routeyard" else {}
        held = (quantile(before, after, 0.5), quantile(before, after, 0.99))
        steps = {
            s: (quantile(steps_before[s], a, 0.5), quantile(steps_before[s], a, 0.99)) for s, a in steps_after.items()
        }
        out[pipe.name] = Half(run, await hop_ms(driver.kafka, pipe, {e[0] for e in events}), held, steps)
        print(f"  paced {pipe.name}: {run.completed}/{run.sent} at {rate:,.0f}/s", flush=True)
    return out


# --- the report ----------------------------------------------------------------------------------


def print_max(runs: dict[str, list[Run]]) -> float:
    print("\nmaximum load (all sent at once; median over rounds)")
    print("| pipeline | conv/s | per round | e2e p50 ms | e2e p99 ms | completed |")
    print("|---|---:|---|---:|---:|---:|")
    for name, rs in runs.items():
        rounds = ", ".join(f"{r.per_s:,.0f}" for r in rs)
        p50, p99 = (
            statistics.median(pct(r.latencies_ms, 0.5) for r in rs),
            statistics.median(pct(r.latencies_ms, 0.99) for r in rs),
        )
        done = f"{sum(r.completed for r in rs)}/{sum(r.sent for r in rs)}"
        print(
            f"| {name} | {statistics.median(r.per_s for r in rs):,.0f} | {rounds} | {p50:,.0f} | {p99:,.0f} | {done} |"
        )
    ratios = [a.per_s / b.per_s for a, b in zip(runs["routeyard"], runs["relay"], strict=True)]
    each = ", ".join(f"{x:.2f}" for x in ratios)
    print(f"routeyard / relay: {statistics.median(ratios):.2f} (per round {each}; target >= 0.5)")
    return statistics.median(r.per_s for r in runs["routeyard"])


def print_cpu(runs: dict[str, list[Run]]) -> None:
    print("\nCPU per process during the last maximum-load round (ms per conversation, % of one core)")
    print("| process | routeyard ms/conv | routeyard % | relay ms/conv | relay % |")
    print("|---|---:|---:|---:|---:|")
    ry, rl = runs["routeyard"][-1], runs["relay"][-1]
    for name in [*ry.cpu, "total"]:
        used = [r.cpu[name] if name != "total" else sum(r.cpu.values()) for r in (ry, rl)]
        cells = [f"{u * 1000 / r.sent:.3f} | {u * 100 / r.wall_s:.0f}" for u, r in zip(used, (ry, rl), strict=True)]
        print(f"| {name} | {' | '.join(cells)} |")


async def stages(kafka: KafkaSettings, pipe: Pipe, run: Run) -> list[tuple[str, float, float]]:
    """When each topic of ``pipe`` got the first and the last record of ``run`` (s after the first send)."""
    t = pipe.topics
    out = []
    for topic in (t.conversations, t.agent("EchoAgent"), t.replies, t.responses):
        stamps = (await timestamps(kafka, topic, run.ids)).values()
        out.append((topic, min(stamps) / 1000 - run.first, max(stamps) / 1000 - run.first))
    return out


def print_stages(rows: dict[str, list[tuple[str, float, float]]]) -> None:
    print("\nwhere the last maximum-load round's time went: each topic's first/last record CreateTime, s after start")
    print("| topic | first s | last s |")
    print("|---|---:|---:|")
    for pipe_rows in rows.values():
        for topic, first, last in pipe_rows:
            print(f"| {topic} | {first:.2f} | {last:.2f} |")


def print_half(half: dict[str, Half], rate: float, fraction: float = 0.5) -> None:
    load = "half load" if fraction == 0.5 else f"{fraction:g} x load"
    print(f"\n{load}: both paced at {rate:,.0f} conv/s ({fraction:g} x routeyard's maximum)")
    print(
        "| pipeline | hop 1 p50 ms | hop 1 p99 ms | hop 1 max ms | matched | held p50 ms | held p99 ms "
        "| e2e p50 ms | e2e p99 ms | completed |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for name, h in half.items():
        hop = f"{pct(h.hop_ms, 0.5):.0f} | {pct(h.hop_ms, 0.99):.0f} | {max(h.hop_ms, default=0):.0f} | {len(h.hop_ms)}"
        held = f"{h.held_ms[0]:.1f} | {h.held_ms[1]:.1f}"
        e2e = f"{pct(h.run.latencies_ms, 0.5):.1f} | {pct(h.run.latencies_ms, 0.99):.1f}"
        print(f"| {name} | {hop} | {held} | {e2e} | {h.run.completed}/{h.run.sent} |")
    print("hop 1 = the router worker's hop: agent-task CreateTime - conversation CreateTime (relay: its hop 1);")
    print("  it includes the broker's delivery (produce, then a fetch; tansu does not wake a waiting fetch).")
    print("held = per record, its batch fetched -> the batch's outcome published (routeyard_held_seconds{stage=route};")
    print("  the relay's own histogram): the time the worker itself adds. Target: router-added p99 < 10 ms.")
    steps = half.get("routeyard")
    if steps is not None and steps.steps_ms:
        print(f"\nthe router worker's batch steps at {load} (routeyard_batch_phase_seconds{{stage=route}}), per batch")
        print("| step | p50 ms | p99 ms |")
        print("|---|---:|---:|")
        for name, (p50, p99) in steps.steps_ms.items():
            print(f"| {name} | {p50:.1f} | {p99:.1f} |")
        print("read = correlations, context and circuits (one round trip); decide = engine and decisions;")
        print("store = correlations compare-and-set; publish = tasks and decisions acknowledged by the broker.")


def print_memory(memory: dict, context: list[tuple], max_messages: str) -> None:
    rss0, rss1 = memory["rss"]
    active = memory["run"].sent
    print(f"\nmemory at {active:,} active conversations ({memory['run'].completed:,} answered)")
    print(f"router worker RSS: {rss0:.1f} MiB before, {rss1:.1f} MiB after")
    print(f"Redis used_memory delta: {memory['per_conv']:,.0f} bytes per conversation")
    print("| key kind | keys | mean MEMORY USAGE bytes |")
    print("|---|---:|---:|")
    for kind, (count, size) in memory["keys"].items():
        print(f"| {kind} | {count:,} | {size:,.0f} |")
    turns = context[-1][0]
    print(f"\ncontext of one conversation over {turns} turns (ROUTEYARD_ROUTER__CONTEXT_MAX_MESSAGES={max_messages})")
    print("| turns | answered | ctx LLEN | ctx bytes | seen ZCARD | seen bytes |")
    print("|---:|---:|---:|---:|---:|---:|")
    for row in context:
        print("| " + " | ".join(f"{v:,}" for v in row) + " |")


# --- main ----------------------------------------------------------------------------------------


async def bench(args: argparse.Namespace, bootstrap: str, redis_url: str, procs: Processes, catalog: Path) -> None:
    from redis.asyncio import Redis
    from routeyard.consumers.kafka.admin import ensure_topics

    pipes = [Pipe("routeyard", Topics(prefix=PREFIX)), Pipe("relay", Topics(prefix=RELAY_PREFIX))]
    names = [t for p in pipes for t in (*p.topics.core(), p.topics.agent("EchoAgent"))]
    await ensure_topics(bootstrap, dict.fromkeys(names, args.partitions))
    env = worker_env(bootstrap, redis_url, catalog, args.partitions)
    if args.profile:
        args.profile.mkdir(parents=True, exist_ok=True)
    scrape = start_pipelines(procs, env, args.profile)
    driver, redis = Driver(bootstrap, procs, args.partitions), Redis.from_url(redis_url)
    await driver.start(pipes)
    try:
        for pipe in pipes:  # warm-up: every consumer group joined before timing
            warm = await driver.load(pipe, make_events(f"{pipe.name}-warm", 20))
            if warm.completed < warm.sent:
                raise RuntimeError(f"{pipe.name} did not answer its warm-up:\n{procs.tails()}")
        print("warmed up; measuring", flush=True)
        memory = await memory_phase(driver, redis, pipes[0], args.active)
        context = await context_phase(driver, redis, pipes[0])
        runs = await max_rounds(driver, pipes, args.conversations, args.rounds)
        maximum = statistics.median(r.per_s for r in runs["routeyard"])
        paced = []
        for fraction in args.loads:
            await asyncio.sleep(2.0)  # what the previous phase left (outbox clears, commits) settles first
            paced.append((fraction, await half_load(driver, pipes, fraction * maximum, args.paced_seconds, scrape)))
        print_max(runs)
        print_cpu(runs)
        print_stages({p.name: await stages(driver.kafka, p, runs[p.name][-1]) for p in pipes})
        for fraction, half in paced:
            print_half(half, fraction * maximum, fraction)
        print_memory(memory, context, env["ROUTEYARD_ROUTER__CONTEXT_MAX_MESSAGES"])
        print(f"\nroutes' response statuses: {driver.statuses}")
        print("RSS MiB now: " + ", ".join(f"{n} {rss_mib(p):.0f}" for n, p in procs.pids.items()))
    finally:
        await driver.stop()
        await redis.aclose()


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main() -> None:
    if sys.argv[1:2] == ["relay"]:
        asyncio.run(relay(*sys.argv[2:6]))
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--conversations", type=int, default=20_000, help="per maximum-load round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--active", type=int, default=10_000, help="conversations for the memory figures")
    parser.add_argument("--paced-seconds", type=float, default=10.0, help="per paced phase and pipeline")
    parser.add_argument(
        "--loads",
        type=lambda text: [float(f) for f in text.split(",")],
        default=[0.5, 0.1],
        help="paced phases, as fractions of routeyard's maximum (the target is at 0.5)",
    )
    parser.add_argument("--partitions", type=int, default=8)
    parser.add_argument(
        "--profile", type=Path, help="run routeyard's processes under cProfile, writing DIR/<process>.prof at exit"
    )
    args = parser.parse_args()
    from routeyard.consumers.dev.embedded import EmbeddedBroker, EmbeddedValkey

    signal.signal(signal.SIGTERM, _interrupt)
    print(f"machine: {os.cpu_count()} CPUs ({len(os.sched_getaffinity(0))} usable), load average {os.getloadavg()}")
    print(f"{args.conversations:,} conversations x {args.rounds} rounds, {args.partitions} partitions", flush=True)
    work = Path(tempfile.mkdtemp(prefix="routeyard-bench-"))
    procs, broker, valkey = Processes(work), EmbeddedBroker(), EmbeddedValkey()
    ok = False
    try:
        broker.start()
        valkey.start()
        for name, server in (("tansu", broker), ("valkey", valkey)):  # shared: in the CPU table too
            if server.pid is not None:
                procs.pids[name] = server.pid
        (catalog := work / "agents.yaml").write_text(CATALOG)
        asyncio.run(bench(args, broker.bootstrap, valkey.url, procs, catalog))
        ok = True
    finally:
        procs.stop()
        valkey.stop()
        broker.stop()
        print(f"load average at the end {os.getloadavg()}")
        if ok:
            shutil.rmtree(work, ignore_errors=True)
        else:
            print(f"logs kept in {work}", file=sys.stderr)


if __name__ == "__main__":
    main()
