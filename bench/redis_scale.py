"""Redis operations and bytes per turn, and turns/s of the Redis part of the pipeline: the stores
as they were before partition-aligned keys (a git revision, loaded as modules) against now, on one
Valkey and on a 3-primary Valkey cluster, in one run.

    python bench/redis_scale.py [--turns 2000] [--batch 32] [--partitions 8] [--before dda2dad]

``--before`` takes any revision: one with partition-aligned keys runs on the cluster too.

A turn is the store calls the router and the correlator make for it, driven directly (no broker):
the user message admitted into its context (guarded by its correlation key), the correlation
staged with its decision and task, the outbox carried out and cleared; then the agent's reply
read, recorded with its response staged, its text appended to the context, the outbox cleared to
a done marker. Each of ``partitions`` loops drives batches of ``batch`` conversations of its own
partition, all at once, as router workers and correlators do. Operations are Valkey's ``INFO
commandstats`` calls (commands run inside scripts included), summed over the nodes; bytes are
``total_net_input_bytes`` / ``total_net_output_bytes``. The old stores cannot run on a cluster
(a call's keys span slots: CROSSSLOT); that row says so.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import inspect
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import ModuleType
from typing import Any

from redis.asyncio import Redis
from routeyard.consumers.dev.embedded import EmbeddedValkey
from routeyard.consumers.kafka.records import partition_of
from routeyard.consumers.stores import context as new_context
from routeyard.consumers.stores import correlations as new_correlations
from routeyard.consumers.stores.connection import connect_redis
from routeyard.router.correlation import Effect, Target, on_reply, stage, start
from routeyard.schemas import AgentReply, AgentTask, Message, task_decoder

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.integration.cluster import EmbeddedValkeyCluster

IGNORED = {"info", "config|resetstat", "config", "cluster|slots", "cluster|shards", "cluster", "ping", "script|load",
           "script", "command", "client|setinfo", "client", "hello", "readonly"}  # fmt: skip
TARGET = Target(agent="EchoAgent", topic="agent.echo", timeout_s=30)


class NullProducer:
    async def publish(self, records: list[Any]) -> None:
        return None


def old_modules(rev: str) -> tuple[ModuleType, ModuleType]:
    """``context`` and ``correlations`` of the stores at ``rev``, imported under other names."""
    folder = Path(tempfile.mkdtemp(prefix="redis-scale-"))
    loaded = []
    for name in ("context", "correlations"):
        text = subprocess.run(
            ["git", "show", f"{rev}:consumers/stores/{name}.py"], capture_output=True, text=True, check=True
        ).stdout
        text = text.replace("routeyard.consumers.stores.context", "old_context")
        (folder / f"old_{name}.py").write_text(text)
        spec = importlib.util.spec_from_file_location(f"old_{name}", folder / f"old_{name}.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[f"old_{name}"] = module
        spec.loader.exec_module(module)
        loaded.append(module)
    return loaded[0], loaded[1]


class Stores:
    def __init__(self, client: Redis, ns: str, ctx_mod: ModuleType, corr_mod: ModuleType, partitions: int) -> None:
        self.new = "partitions" in inspect.signature(ctx_mod.ContextStore).parameters  # partition-aligned keys
        extra = {"partitions": partitions} if self.new else {}
        self.context = ctx_mod.ContextStore(client, ns, max_messages=32, ttl_s=3600, **extra)
        self.store = corr_mod.CorrelationStore(client, ns, ttl_s=3600, lease_s=30, **extra)
        self.outbox = corr_mod.Outbox(self.store, self.context, NullProducer())
        self.mod = corr_mod

    def key(self, conversation: str, event_id: str) -> str:
        return self.store.key(None, conversation, event_id) if self.new else self.store.key(None, event_id)


TEXT = "what is the weather in Oslo tomorrow, and can you book a table for two?"


async def turns(s: Stores, conversations: list[str], n: int) -> None:
    """One batch of turns (one per conversation), routed and answered, through the stores."""
    ids = [f"{c}-{n}" for c in conversations]
    keys = [s.key(c, e) for c, e in zip(conversations, ids, strict=True)]
    tasks = await route(s, conversations, ids, keys)
    await answer(s, keys, tasks)


async def route(s: Stores, conversations: list[str], ids: list[str], keys: list[str]) -> list[AgentTask]:
    """The router worker's calls: admit, stage, carry out (and clear). Returns the tasks sent."""
    message = [Message(role="user", content=TEXT)]
    appends = [new_context.Append(None, c, e, message, k) for c, e, k in zip(conversations, ids, keys, strict=True)]
    admitted = await s.context.admit_many(appends)
    now = time.time()
    writes, effects = [], []
    for c, e, k, (_, ctx) in zip(conversations, ids, keys, admitted, strict=True):
        opened = start(
            event_id=e, conversation_id=c, tenant=None, mode="parallel", agents=[TARGET], context=ctx,
            replies_topic="replies", response_topic="responses", created_at=None, metadata={}, now=now,
        )  # fmt: skip
        fx = [Effect(id=f"decision:{e}", topic="decisions", key=c, value=b"{}" * 200), *opened.effects]
        writes.append(s.mod.Write(k, None, stage(opened.state, fx, now)))
        effects.append(fx)
    await carry_out(s, writes, effects, await s.store.write_many(writes, now))
    return [task_decoder.decode(next(x.value for x in fx if x.id.startswith("task:"))) for fx in effects]


async def answer(s: Stores, keys: list[str], tasks: list[AgentTask]) -> None:
    """The correlator's calls for each task's reply: read, record (response staged), carry out."""
    raws = await s.store.get_many(keys)
    now = time.time()
    writes, effects = [], []
    for key, raw, task in zip(keys, raws, tasks, strict=True):
        state = s.mod.decode_state(raw)
        reply = AgentReply(
            task_id=task.task_id, token=task.token, event_id=task.event_id,
            conversation_id=task.conversation_id, agent="EchoAgent", content="sunny, 18C",
        )  # fmt: skip
        transition, outcome = on_reply(state, reply, now)
        assert outcome == "recorded", outcome
        fresh = [x for x in transition.effects if x not in state.outbox]
        writes.append(s.mod.Write(key, raw, stage(transition.state, fresh, now)))
        effects.append(transition.effects)
    await carry_out(s, writes, effects, await s.store.write_many(writes, now))


async def carry_out(s: Stores, writes: list[Any], effects: list[list[Effect]], stored: list[bytes | None]) -> None:
    items = {w.key: s.mod.Stored(w.state, raw, fx) for w, raw, fx in zip(writes, stored, effects, strict=True)}
    await s.outbox.carry_out(items)
    await s.outbox.settle()


def conversations_by_partition(partitions: int, per: int, run: str) -> list[list[str]]:
    """``per`` conversation ids for each partition (as Kafka's partitioner puts them)."""
    out: list[list[str]] = [[] for _ in range(partitions)]
    i = 0
    while any(len(c) < per for c in out):
        cid = f"{run}-c{i}"
        p = partition_of(cid.encode(), partitions)
        if len(out[p]) < per:
            out[p].append(cid)
        i += 1
    return out


async def stats(nodes: list[Redis]) -> tuple[int, int, int]:
    """Commands (not this bench's own bookkeeping), bytes in, bytes out, summed over ``nodes``."""
    calls = inb = outb = 0
    for node in nodes:
        info = await node.info("commandstats")
        calls += sum(v["calls"] for k, v in info.items() if k.removeprefix("cmdstat_") not in IGNORED)
        net = await node.info("stats")
        inb += int(net["total_net_input_bytes"])
        outb += int(net["total_net_output_bytes"])
    return calls, inb, outb


async def measure(url: str, node_urls: list[str], mods: tuple[ModuleType, ModuleType], args: argparse.Namespace,
                  run: str) -> tuple[float, float, float, float] | str:  # fmt: skip
    """(ops/turn, bytes in/turn, bytes out/turn, turns/s) of one store version on one Redis."""
    client = connect_redis(url)
    nodes = [connect_redis(u) for u in node_urls]
    s = Stores(client, f"bench{run}", *mods, args.partitions)
    groups = conversations_by_partition(args.partitions, args.batch, run)
    rounds = max(1, args.turns // (args.partitions * args.batch))
    try:
        await asyncio.gather(*(turns(s, g, -1) for g in groups))  # warm: scripts loaded, pools open
        for node in nodes:
            await node.config_resetstat()
        before = await stats(nodes)
        started = time.perf_counter()
        for n in range(rounds):
            await asyncio.gather(*(turns(s, g, n) for g in groups))
        wall = time.perf_counter() - started
        after = await stats(nodes)
    except Exception as exc:  # the old stores on a cluster: CROSSSLOT
        return f"fails: {type(exc).__name__}: {str(exc)[:60]}"
    finally:
        await client.aclose()
        for node in nodes:
            await node.aclose()
    done = rounds * args.partitions * args.batch
    ops, inb, outb = (a - b for a, b in zip(after, before, strict=True))
    return ops / done, inb / done, outb / done, done / wall


async def main(args: argparse.Namespace) -> None:
    versions = {f"before ({args.before})": old_modules(args.before), "after": (new_context, new_correlations)}
    rows: list[tuple[str, str, tuple[float, float, float, float] | str]] = []
    with EmbeddedValkey() as single, EmbeddedValkeyCluster() as cluster:
        redises = {
            "1 Valkey": (single.url, [single.url]),
            "3-primary cluster": (cluster.url, [n.url for n in cluster.nodes]),
        }
        for round_ in range(args.rounds):  # interleaved: the machine is shared and noisy
            for version, mods in versions.items():
                for where, (url, node_urls) in redises.items():
                    result = await measure(url, node_urls, mods, args, f"r{round_}{len(rows)}")
                    rows.append((version, where, result))
    print(f"{args.turns} turns per cell, batches of {args.batch}, {args.partitions} partitions, {args.rounds} rounds")
    print(f"| stores | Redis | ops/turn | bytes in/turn | bytes out/turn | turns/s (best of {args.rounds}) |")
    print("|---|---|---:|---:|---:|---:|")
    for version in versions:
        for where in redises:
            cells = [r for v, w, r in rows if v == version and w == where]
            ok = [c for c in cells if not isinstance(c, str)]
            if not ok:
                print(f"| {version} | {where} | {cells[0]} | | | |")
                continue
            best = max(ok, key=lambda c: c[3])
            print(f"| {version} | {where} | {best[0]:.1f} | {best[1]:.0f} | {best[2]:.0f} | {best[3]:.0f} |")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--turns", type=int, default=2048, help="turns per measurement")
    parser.add_argument("--batch", type=int, default=32, help="conversations per batch (per partition)")
    parser.add_argument("--partitions", type=int, default=8, help="conversation partitions (one loop each)")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds")
    parser.add_argument("--before", default="dda2dad", help="git revision of the stores before")
    asyncio.run(main(parser.parse_args()))
