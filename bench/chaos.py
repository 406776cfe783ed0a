"""Chaos run: the whole pipeline as processes, killed with SIGKILL at random, Valkey restarted.

    python bench/chaos.py --conversations 2000 --kills 6 --seed 7

Starts tansu (in-memory storage) and Valkey with AOF persistence, then `routeyard worker router`
(rules engine, consumers/dev/demo/catalog.yaml; ``--engine sim`` or ``--pipeline on``: the
pipelined router worker), `routeyard worker correlator` and one `routeyard agent` process with
the three demo agents (consumers/dev/demo/agents.py), each a child process. It publishes the
conversations at ``--rate`` per second, SIGKILLs the router, the
correlator and the agent process at seeded random moments (each at least once when ``--kills``
>= 3) and starts them again, restarts Valkey once (SIGTERM, a few seconds down, same port and
data dir), waits for every response (``--deadline``), waits one outbox lease more for late
duplicates, and prints: conversations sent, responses received, lost, answered twice,
response records repeated, dead letters, kills, elapsed. Target: 0 lost, 0 answered twice.

Answered twice: an event with two *different* responses (decided or answered again). A
response record repeated byte for byte is at-least-once delivery, not a second answer: a
correlator killed after publishing its responses and before confirming its outbox leaves them
there, and the sweeper publishes the same records again after the lease (same event id, same
bytes; a consumer that keys responses by event id, as ``RouteyardClient`` does, sees one).

Valkey persistence. AOF with ``appendfsync always`` (the default here, ``--fsync``) fsyncs each
write before it is acknowledged, so a crash of Valkey itself loses nothing that a worker saw
succeed. ``everysec`` is much cheaper and is safe for the clean restart done here (SIGTERM
flushes the AOF), but a power loss or SIGKILL of Valkey may drop the last second of writes.

What a Redis *without* persistence loses when it restarts (everything it held):
- Correlation state (``{ns:pN}:{tenant}:corr:{event_id}``) and the wake sets. Turns already routed
  but not yet answered have no correlation: their agents' replies are dead-lettered as
  "no correlation", and since the router committed those events, nothing redoes them. They
  are LOST (never answered).
- The outbox inside each correlation: effects stored but not yet published (a worker that
  died or failed between the write and the publish) are never carried out by a sweeper:
  tasks never sent, responses never published. LOST.
- Dedup memory: finished correlations (kept ``dedup_ttl_s``) and the agents' ``task:`` keys.
  Events redelivered after the restart (the router's uncommitted batch) look new: decided and
  dispatched again, and their responses published again: ANSWERED TWICE. Redelivered tasks
  are handled by the agent again (a second side effect in the agent's world).
- Conversation context: later turns are routed without the earlier ones ("and tomorrow?"
  loses its referent); agents see a truncated history. Not a loss of a response, but wrong
  answers are possible.
So a Redis without persistence is acceptable only if losing in-flight turns on its restart is.
With AOF (or a replica with failover that acknowledges writes) none of the above happens.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from aiokafka import AIOKafkaConsumer, TopicPartition

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from routeyard.consumers.app import create_topics  # noqa: E402
from routeyard.consumers.client import RouteyardClient  # noqa: E402
from routeyard.consumers.dev.embedded import EmbeddedBroker, EmbeddedValkey  # noqa: E402
from routeyard.consumers.settings import Settings  # noqa: E402
from routeyard.router.catalog import load_catalog  # noqa: E402
from routeyard.schemas import response_decoder  # noqa: E402

CATALOG = ROOT / "consumers" / "dev" / "demo" / "catalog.yaml"
AGENTS = [f"routeyard.consumers.dev.demo.agents:{name}" for name in ("weather", "restaurant", "messaging")]
ROLES = {
    "router": ["worker", "router"],
    "correlator": ["worker", "correlator"],
    "agent": ["agent", *AGENTS],
}
TEXTS = [
    "What's the weather in Paris?",
    "Book a table for two tonight",
    "Send a text to Anna: running late",
    "weather in Rome and book a table for dinner",
    "hello there",  # no route
]


@dataclass
class Worker:
    role: str
    env: dict[str, str]
    log: Path
    proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        assert self.exited() is not None or self.proc is None, f"{self.role} is still running"
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "routeyard.consumers.cli", *ROLES[self.role]],
                env=self.env,
                cwd=ROOT,
                stdout=out,
                stderr=subprocess.STDOUT,
            )

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()

    def exited(self) -> int | None:
        return None if self.proc is None else self.proc.poll()


@dataclass
class Tally:
    responses: collections.Counter[str] = field(default_factory=collections.Counter)
    """Response records per event id."""
    variants: dict[str, set[bytes]] = field(default_factory=lambda: collections.defaultdict(set))
    """The distinct response payloads per event id."""
    dead_letters: int = 0


def _env(settings: Settings, catalog: Path, args: argparse.Namespace) -> dict[str, str]:
    return dict(
        os.environ,
        PYTHONPATH=str(ROOT),
        ROUTEYARD_TOPIC_PREFIX=settings.topic_prefix,
        ROUTEYARD_KAFKA__BOOTSTRAP=settings.kafka.bootstrap,
        ROUTEYARD_KAFKA__PARTITIONS=str(settings.kafka.partitions),
        ROUTEYARD_KAFKA__SESSION_TIMEOUT_MS="6000",
        ROUTEYARD_KAFKA__HEARTBEAT_INTERVAL_MS="1000",
        ROUTEYARD_REDIS__URL=settings.redis.url.get_secret_value(),
        ROUTEYARD_ROUTER__CATALOG=str(catalog),
        ROUTEYARD_ROUTER__ENGINE=args.engine,
        ROUTEYARD_ROUTER__PIPELINE=args.pipeline,
        ROUTEYARD_SIM__SPEED=str(args.sim_speed),
        ROUTEYARD_ROUTER__MAX_BATCH="64",
        ROUTEYARD_LIFECYCLE__RETRY_MAX_DELAY_S="1",
        ROUTEYARD_LOG_LEVEL="WARNING",
    )


async def _read(settings: Settings, tally: Tally, stop: asyncio.Event) -> None:
    """Count every response (by event id) and dead letter, from the beginning of the topics."""
    topics = settings.topics
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka.bootstrap, fetch_max_wait_ms=25)
    await consumer.start()
    try:
        parts = [
            TopicPartition(t, p)
            for t in (topics.responses, topics.dead_letters)
            for p in range(settings.kafka.partitions)
        ]
        consumer.assign(parts)
        await consumer.seek_to_beginning(*parts)
        while not stop.is_set():
            for tp, records in (await consumer.getmany(timeout_ms=200, max_records=1000)).items():
                for r in records:
                    if tp.topic == topics.responses:
                        event_id = response_decoder.decode(r.value).event_id
                        tally.responses[event_id] += 1
                        tally.variants[event_id].add(r.value)
                    else:
                        tally.dead_letters += 1
    finally:
        await consumer.stop()


async def _send(client: RouteyardClient, ids: list[str], rate: float) -> None:
    chunk = max(1, int(rate / 20))
    for i in range(0, len(ids), chunk):
        events = [
            client.event(f"conv-{n % 500}", TEXTS[n % len(TEXTS)], event_id=ids[n])
            for n in range(i, min(i + chunk, len(ids)))
        ]
        await client.publish(events)
        await asyncio.sleep(chunk / rate)


async def _chaos(workers: dict[str, Worker], valkey: EmbeddedValkey, args: argparse.Namespace, span: float) -> int:
    rng = random.Random(args.seed)
    roles = list(ROLES)
    plan = [roles[i % len(roles)] for i in range(args.kills)]
    rng.shuffle(plan)
    moments = sorted(rng.uniform(3, span) for _ in plan)
    valkey_at = rng.uniform(3, span)
    started, kills, valkey_done = time.monotonic(), 0, False
    for role, at in zip(plan, moments, strict=True):
        if not valkey_done and valkey_at < at:
            await _sleep_until(started + valkey_at)
            await _restart_valkey(valkey, rng)
            valkey_done = True
        await _sleep_until(started + at)
        workers[role].kill()
        kills += 1
        print(f"  t={time.monotonic() - started:5.1f}s SIGKILL {role}", flush=True)
    if not valkey_done:
        await _sleep_until(started + valkey_at)
        await _restart_valkey(valkey, rng)
    return kills


async def _supervise(workers: dict[str, Worker], stop: asyncio.Event, restarts: collections.Counter[str]) -> None:
    """What systemd or Kubernetes would do: start again, within a second, a worker that exited:
    the ones SIGKILLed here, and one that started while Valkey was down and gave up (exit 1)."""
    while not stop.is_set():
        for role, w in workers.items():
            if w.exited() is not None:
                restarts[role] += 1
                print(f"  {role} exited with {w.exited()}; restarting", flush=True)
                w.start()
        await asyncio.sleep(1.0)


async def _restart_valkey(valkey: EmbeddedValkey, rng: random.Random) -> None:
    down = rng.uniform(2, 5)
    print(f"  Valkey down for {down:.1f}s", flush=True)
    valkey.terminate()
    await asyncio.sleep(down)
    valkey.start()


async def _sleep_until(moment: float) -> None:
    await asyncio.sleep(max(0.0, moment - time.monotonic()))


async def main(args: argparse.Namespace) -> int:
    workdir = Path(tempfile.mkdtemp(prefix="routeyard-chaos-"))
    with EmbeddedBroker() as broker, EmbeddedValkey(appendonly=True, fsync=args.fsync) as valkey:
        settings = Settings.model_validate(
            {
                "topic_prefix": "chaos.",
                "kafka": {"bootstrap": broker.bootstrap, "partitions": args.partitions},
                "redis": {"url": valkey.url},
            }
        )
        await create_topics(settings, load_catalog(CATALOG))
        router = settings.router.model_copy(update={"engine": args.engine, "pipeline": args.pipeline})
        print(f"router: engine={args.engine} pipeline={args.pipeline} (pipelined worker: {router.pipelined()})")
        env = _env(settings, CATALOG, args)
        workers = {role: Worker(role, env, workdir / f"{role}.log") for role in ROLES}
        for w in workers.values():
            w.start()
        tally, stop = Tally(), asyncio.Event()
        reader = asyncio.create_task(_read(settings, tally, stop))
        restarts: collections.Counter[str] = collections.Counter()
        supervisor = asyncio.create_task(_supervise(workers, stop, restarts))
        ids = [f"chaos-{args.seed}-{n}" for n in range(args.conversations)]
        span = args.conversations / args.rate + 10
        started = time.monotonic()
        try:
            async with RouteyardClient(settings.kafka, prefix=settings.topic_prefix) as client:
                sending = asyncio.create_task(_send(client, ids, args.rate))
                kills = await _chaos(workers, valkey, args, span)
                await sending
            await _wait_all(tally, ids, started + args.deadline)
            answered_at = time.monotonic() - started
            await asyncio.sleep(args.settle)  # late duplicates (an outbox lease) would show up now
        finally:
            stop.set()
            await reader
            await supervisor
            for w in workers.values():
                w.kill()
        _report(tally, ids, kills, answered_at, workdir)
        print(f"| supervisor restarts (exits) | {sum(restarts.values())} {dict(restarts)} |")
        lost = sum(1 for i in ids if tally.responses[i] == 0)
        twice = sum(1 for i in ids if len(tally.variants[i]) > 1)
        return 0 if lost == 0 and twice == 0 else 1


async def _wait_all(tally: Tally, ids: list[str], deadline: float) -> None:
    while time.monotonic() < deadline and any(tally.responses[i] == 0 for i in ids):
        await asyncio.sleep(0.5)


def _report(tally: Tally, ids: list[str], kills: int, elapsed: float, workdir: Path) -> None:
    lost = [i for i in ids if tally.responses[i] == 0]
    twice = [i for i in ids if len(tally.variants[i]) > 1]
    repeated = [i for i in ids if tally.responses[i] > len(tally.variants[i])]
    rows = [
        ("conversations sent", len(ids)),
        ("responses received", sum(tally.responses[i] for i in ids)),
        ("lost", len(lost)),
        ("answered twice (different responses)", len(twice)),
        ("response records repeated (same bytes)", len(repeated)),
        ("dead letters", tally.dead_letters),
        ("kills performed", kills),
        ("valkey restarts", 1),
        ("elapsed (all answered)", f"{elapsed:.1f}s"),
    ]
    print("\n| metric | value |\n|---|---|")
    for name, value in rows:
        print(f"| {name} | {value} |")
    if lost or twice or repeated:
        print(f"examples lost={lost[:5]} twice={twice[:5]} repeated={repeated[:5]}; worker logs in {workdir}")


def _args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--conversations", type=int, default=2000)
    parser.add_argument("--kills", type=int, default=6, help="SIGKILLs in total, spread over router/correlator/agent")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--rate", type=float, default=100.0, help="conversations published per second")
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--fsync", choices=["always", "everysec"], default="always")
    parser.add_argument("--deadline", type=float, default=600.0, help="seconds to wait for every response")
    parser.add_argument("--settle", type=float, default=15.0, help="seconds to watch for duplicates afterwards")
    parser.add_argument("--engine", choices=["rules", "sim"], default="rules", help="the router's engine")
    parser.add_argument(
        "--pipeline",
        choices=["auto", "on", "off"],
        default="auto",
        help="the pipelined router worker (auto: on for sim)",
    )
    parser.add_argument("--sim-speed", type=float, default=1.0, help="with --engine sim: times faster than its GPU")
    return parser.parse_args()


if __name__ == "__main__":
    sys.exit(asyncio.run(main(_args())))
