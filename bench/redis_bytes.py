"""Redis bytes kept per finished turn: the whole correlation (as before issue 13) against its done
marker (now), for a short and a long conversation.

    python bench/redis_bytes.py [--short 50] [--long 5000] [--size 200]

Each turn goes through the stores as the pipeline drives them: the user message appended to the
context (guarded by its correlation key), a correlation opened with one agent and that context,
the agent's reply recorded, its text appended; then the finished state is kept either whole (its
outbox cleared) or as a ``Done`` marker. Runs on an embedded Valkey; counts ``MEMORY USAGE`` of
every key of the conversation (context, seen set, correlations) after the last turn, and prints
bytes per turn and per byte sent. The Kafka side is left out: it does not change what Redis keeps.
"""

from __future__ import annotations

import argparse
import asyncio
import time

import msgspec
import redis.asyncio as redis
from routeyard.consumers.dev.embedded import EmbeddedValkey
from routeyard.consumers.stores.context import Append, ContextStore
from routeyard.consumers.stores.correlations import CorrelationStore, Write, finished
from routeyard.router.correlation import Target, on_reply, start
from routeyard.schemas import AgentReply, Message

DAY = 24 * 3600


async def conversation(client: redis.Redis, ns: str, turns: int, size: int, *, marker: bool) -> int:
    context = ContextStore(client, ns, max_messages=32, ttl_s=7 * DAY)
    store = CorrelationStore(client, ns, ttl_s=DAY, lease_s=10)
    target = Target(agent="EchoAgent", topic="agent.echo", timeout_s=10)
    for n in range(turns):
        event_id = f"e{n}"
        key = store.key("acme", "c", event_id)
        text = f"{n:06d}" + "x" * (size - 6)
        turn = Append("acme", "c", event_id, [Message(role="user", content=text)], key)
        ((_, seen),) = await context.admit_many([turn])
        now = time.time()
        opened = start(
            event_id=event_id, conversation_id="c", tenant="acme", mode="parallel", agents=[target], context=seen,
            replies_topic="replies", response_topic="responses", created_at=None, metadata={}, now=now,
        )  # fmt: skip
        (stored,) = await store.write_many([Write(key, None, opened.state)], now)
        task_id = opened.state.slots[0].task_id
        reply = AgentReply(task_id=task_id, event_id=event_id, conversation_id="c", agent="EchoAgent", content=text)
        done, _ = on_reply(opened.state, reply, now)
        await context.append_many([Append("acme", "c", f"ctx:{event_id}", [Message(role="assistant", content=text)])])
        kept = finished(done.state) if marker else msgspec.structs.replace(done.state, outbox=[])
        await store.write_many([Write(key, stored, kept)], now)
    total = 0
    async for key in client.scan_iter(match=f"*{ns}*", count=1000):
        total += await client.memory_usage(key) or 0
    return total


async def main(short: int, long: int, size: int) -> None:
    with EmbeddedValkey() as valkey:
        client = redis.Redis.from_url(valkey.url)
        try:
            print(f"{'turns':>6} {'kept':>8} {'bytes':>12} {'per turn':>9} {'per byte sent':>14}")
            for turns in (short, long):
                for marker in (False, True):
                    ns = f"bench{turns}{marker}"
                    total = await conversation(client, ns, turns, size, marker=marker)
                    kept = "marker" if marker else "whole"
                    print(f"{turns:>6} {kept:>8} {total:>12,} {total / turns:>9,.0f} {total / (turns * size):>14.1f}")
        finally:
            await client.aclose()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--short", type=int, default=50)
    parser.add_argument("--long", type=int, default=5000)
    parser.add_argument("--size", type=int, default=200, help="bytes of each user message (and reply)")
    args = parser.parse_args()
    asyncio.run(main(args.short, args.long, args.size))
