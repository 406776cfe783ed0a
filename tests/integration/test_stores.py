"""The Redis stores of the hot path, on a real Valkey: one script call per batch for context
appends and compare-and-set writes, outbox clears that skip the read unless the state moved,
and the agent runtime's answered-task marks written together."""

from __future__ import annotations

import asyncio
import subprocess
import time
from pathlib import Path

import msgspec
import pytest
import redis.asyncio as redis
from routeyard.consumers.dev.embedded import EmbeddedValkey
from routeyard.consumers.stores.connection import _HiredisPacking, connect_redis
from routeyard.consumers.stores.context import SEEN_TRIM_EVERY, Append, ContextStore
from routeyard.consumers.stores.correlations import CorrelationStore, Outbox, Stored, Write, decode_state
from routeyard.consumers.stores.marks import TaskMarks
from routeyard.router.correlation import Correlation, Effect, start
from routeyard.schemas import Message

pytestmark = pytest.mark.integration


def _state(event_id: str, *effects: Effect) -> Correlation:
    opened = start(
        event_id=event_id,
        conversation_id=f"conv-{event_id}",
        tenant=None,
        mode="parallel",
        agents=[("EchoAgent", "agent.EchoAgent", 60.0)],
        context=[Message(role="user", content="hi")],
        replies_topic="replies",
        response_topic="responses",
        created_at=None,
        metadata={},
        now=time.time(),
    )
    return msgspec.structs.replace(opened.state, outbox=list(effects), outbox_since=time.time())


class _Counting(CorrelationStore):
    reads = 0

    async def get_many(self, keys):  # type: ignore[no-untyped-def]
        self.reads += 1
        return await super().get_many(keys)


class _NoContext:
    async def append_many(self, appends, *, read=False):  # type: ignore[no-untyped-def]
        return []


async def test_one_context_call_appends_a_batch_in_order_once_per_id(redis_client: redis.Redis, prefix: str) -> None:
    store = ContextStore(redis_client, prefix, max_messages=3, ttl_s=600)

    def turn(conversation: str, append_id: str, text: str) -> Append:
        return Append(None, conversation, append_id, [Message(role="user", content=text)])

    batch = [
        turn("a", "a1", "one"),
        turn("b", "b1", "other"),
        turn("a", "a2", "two"),
        turn("a", "a1", "one again"),  # a redelivered id inside the same batch: not appended
        Append(None, "a", "a3", [Message(role="user", content="three"), Message(role="assistant", content="four")]),
    ]
    contexts = await store.append_many(batch, read=True)
    assert [[m.content for m in c] for c in contexts] == [
        ["one"],  # each read sees its own append, not the later ones
        ["other"],
        ["one", "two"],
        ["one", "two"],
        ["two", "three", "four"],  # trimmed to max_messages, oldest first
    ]
    assert await store.append_many(batch[:1]) == []  # without read: nothing decoded, nothing returned
    assert [m.content for m in await store.load(None, "a")] == ["two", "three", "four"]
    assert await redis_client.ttl(store.keys(None, "a")[1]) > 0


async def test_the_seen_ids_stay_compact_and_still_catch_recent_redeliveries(
    redis_client: redis.Redis, prefix: str
) -> None:
    store = ContextStore(redis_client, prefix, max_messages=32, ttl_s=600)
    assert store.seen_kept == 128 and ContextStore(redis_client, prefix, max_messages=100, ttl_s=600).seen_kept == 216
    turns = [Append(None, "long", f"event-{i:04d}", [Message(role="user", content=f"turn {i}")]) for i in range(300)]
    seen = store.keys(None, "long")[1]
    for start_at in range(0, 300, 25):
        await store.append_many(turns[start_at : start_at + 25])
        assert await redis_client.zcard(seen) <= 128
    assert 128 - SEEN_TRIM_EVERY <= await redis_client.zcard(seen) <= 128  # trimmed once per SEEN_TRIM_EVERY ids
    assert await redis_client.object("encoding", seen) == b"listpack"  # compact, not a skiplist
    before = [m.content for m in await store.load(None, "long")]
    await store.append_many(turns[-64:])  # the last 64 turns redelivered: nothing appended again
    assert [m.content for m in await store.load(None, "long")] == before == [f"turn {i}" for i in range(268, 300)]
    assert await redis_client.memory_usage(seen) < 6_000


async def test_one_call_compares_and_sets_a_batch(redis_client: redis.Redis, prefix: str) -> None:
    store = CorrelationStore(redis_client, prefix, ttl_s=600, lease_s=30)
    now = time.time()
    first, second = _state("e1"), _state("e2")
    k1, k2 = store.key(None, "c", "e1"), store.key(None, "c", "e2")
    stored = await store.write_many([Write(k1, None, first), Write(k2, None, second)], now)
    assert stored[0] == await redis_client.get(k1) and stored[1] == await redis_client.get(k2)
    assert all(raw is not None for raw in stored)
    # Absent expected but present; stale bytes expected; the right bytes expected.
    done = msgspec.structs.replace(first, done=True)
    again = await store.write_many([Write(k1, None, done), Write(k2, b"stale", done), Write(k1, stored[0], done)], now)
    assert again[0] is None and again[1] is None and again[2] is not None
    assert decode_state(await redis_client.get(k1)).done
    assert decode_state(await redis_client.get(k2)) == second
    # Waiting on an agent: due in the wake set at its deadline.
    assert await redis_client.zscore(store.wake_key(k2), k2) is not None


async def test_states_are_messagepack_and_json_ones_from_before_still_read_and_update(
    redis_client: redis.Redis, prefix: str
) -> None:
    store = CorrelationStore(redis_client, prefix, ttl_s=600, lease_s=30)
    state = _state("old", Effect(id="task:x", topic="t", value=b'{"task": 1}'))
    key = store.key(None, "c", "old")
    legacy = msgspec.json.encode(state)  # as versions before this one stored it
    await redis_client.set(key, legacy)
    raw = await redis_client.get(key)
    assert decode_state(raw) == state
    (stored,) = await store.write_many([Write(key, raw, msgspec.structs.replace(state, done=True))], time.time())
    assert stored is not None and stored == await redis_client.get(key)
    assert stored[:1] != b"{" and len(stored) < len(legacy)  # now MessagePack, smaller
    assert decode_state(stored) == msgspec.structs.replace(state, done=True)


async def test_outbox_clear_skips_the_read_unless_the_state_moved(redis_client: redis.Redis, prefix: str) -> None:
    store = _Counting(redis_client, prefix, ttl_s=600, lease_s=30)
    outbox = Outbox(store, _NoContext(), producer=None)  # type: ignore[arg-type]
    mine = Effect(id="task:mine", topic="t", value=b"x")
    theirs = Effect(id="response:theirs", topic="t", value=b"y")
    quiet, moved = store.key(None, "c", "quiet"), store.key(None, "c", "moved")
    states = {quiet: _state("quiet", mine), moved: _state("moved", mine)}
    raws = await store.write_many([Write(k, None, s) for k, s in states.items()], time.time())
    items = {k: Stored(s, raw, [mine]) for (k, s), raw in zip(states.items(), raws, strict=True) if raw}
    # Someone else (a correlator) changes one of them first, adding its own effect.
    changed = msgspec.structs.replace(states[moved], outbox=[mine, theirs], late_replies=1)
    assert (await store.write_many([Write(moved, items[moved].raw, changed)], time.time()))[0]

    await outbox.clear(items)

    assert decode_state(await redis_client.get(quiet)).outbox == []
    after = decode_state(await redis_client.get(moved))
    assert after.outbox == [theirs] and after.late_replies == 1  # only my effect removed
    assert store.reads == 1  # one read, for the key that moved only

    store.reads = 0
    await outbox.clear({quiet: items[quiet]})  # already cleared: its bytes moved on, read once, nothing left
    assert store.reads == 1 and decode_state(await redis_client.get(quiet)).outbox == []


async def test_answered_marks_of_one_loop_turn_are_one_write(redis_client: redis.Redis, prefix: str) -> None:
    marks = TaskMarks(redis_client, ttl_s=600)
    calls = 0
    script = marks._script

    async def counted(*args, **kwargs):  # type: ignore[no-untyped-def]
        nonlocal calls
        calls += 1
        return await script(*args, **kwargs)

    marks._script = counted  # type: ignore[assignment]
    keys = [f"{prefix}task:{i}" for i in range(50)]
    await asyncio.gather(*(marks.add(k) for k in keys))
    assert calls == 1
    assert await marks.answered([*keys, f"{prefix}task:none"]) == [True] * 50 + [False]
    assert 0 < await redis_client.ttl(keys[0]) <= 600
    await marks.add(f"{prefix}task:later")
    assert calls == 2


async def test_a_failed_mark_write_reaches_every_waiter() -> None:
    down = redis.Redis(host="127.0.0.1", port=1, socket_connect_timeout=0.5)
    try:
        marks = TaskMarks(down, ttl_s=600)
        results = await asyncio.gather(*(marks.add(f"k{i}") for i in range(5)), return_exceptions=True)
        assert all(isinstance(r, redis.ConnectionError) for r in results), results
    finally:
        await down.aclose()


async def test_workers_pack_commands_with_hiredis_on_tcp_and_unix_sockets(
    redis_client: redis.Redis, valkey: EmbeddedValkey, tmp_path: Path
) -> None:
    """The workers' client packs with hiredis (not redis-py's per-argument Python loop) and a
    batch script with many arguments round-trips byte for byte, also over a unix socket."""
    pool = redis_client.connection_pool
    assert issubclass(pool.connection_class, _HiredisPacking)
    store = CorrelationStore(redis_client, "packing", ttl_s=600, lease_s=30)
    writes = [Write(store.key(None, "c", f"e{i}"), None, _state(f"e{i}")) for i in range(300)]
    stored = await store.write_many(writes, time.time())
    assert stored == await store.get_many([w.key for w in writes])
    assert all(stored)

    socket_path = tmp_path / "valkey.sock"
    binary = valkey._command()[0]
    server = subprocess.Popen(
        [binary, "--port", "0", "--unixsocket", str(socket_path), "--save", "", "--dir", str(tmp_path)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        for _ in range(100):
            if socket_path.exists():
                break
            await asyncio.sleep(0.05)
        client = connect_redis(f"unix://{socket_path}")
        try:
            assert issubclass(client.connection_pool.connection_class, _HiredisPacking)
            await client.set("k", b"\x00\xffvalue")
            assert await client.get("k") == b"\x00\xffvalue"
        finally:
            await client.aclose()
    finally:
        server.terminate()
        server.wait(10)


async def test_an_append_of_thousands_of_messages_keeps_the_newest(redis_client: redis.Redis, prefix: str) -> None:
    """One append larger than Lua's unpack limit (pushed a thousand at a time), trimmed to max_messages."""
    store = ContextStore(redis_client, prefix, max_messages=32, ttl_s=600)
    many = [Message(role="user", content=f"m{i}") for i in range(2500)]
    await store.append_many([Append(None, "big", "one", many)])
    assert [m.content for m in await store.load(None, "big")] == [f"m{i}" for i in range(2468, 2500)]


async def test_a_turns_outbox_is_staged_and_cleared_in_four_operations_none_a_read() -> None:
    """A new correlation is staged with SET NX (the compare of "absent") and cleared with SET GET
    (the write returns the bytes it compares): per key one SET and one ZADD each time, no GET; the
    key keeps ``ttl`` past its agent's deadline and is due then, not at the outbox's lease."""
    with EmbeddedValkey() as server:  # its own server: the operations counted are this test's only
        client = connect_redis(server.url)
        try:
            store = CorrelationStore(client, "ops", ttl_s=600, lease_s=5)
            outbox = Outbox(store, _NoContext(), producer=None)  # type: ignore[arg-type]
            task = Effect(id="task:t", topic="t", value=b"x")
            states = {store.key(None, "c", e): _state(e, task) for e in ("e1", "e2", "e3")}
            await client.config_resetstat()
            raws = await store.write_many([Write(k, None, s) for k, s in states.items()], time.time())
            await outbox.clear(
                {k: Stored(s, raw, [task]) for (k, s), raw in zip(states.items(), raws, strict=True) if raw}
            )
            calls = {k.removeprefix("cmdstat_"): v["calls"] for k, v in (await client.info("commandstats")).items()}
            assert {k: v for k, v in calls.items() if k in ("get", "set", "zadd", "zrem")} == {"set": 6, "zadd": 6}
            for key, state in states.items():
                deadline = state.next_wakeup()
                assert deadline is not None and decode_state(await client.get(key)).outbox == []
                assert await client.zscore(store.wake_key(key), key) == pytest.approx(deadline)
                assert 600 + deadline - time.time() - 2 <= await client.ttl(key) <= 600 + deadline - time.time() + 1
        finally:
            await client.aclose()


async def test_a_clear_that_lost_the_race_leaves_the_winners_bytes_ttl_and_wake(
    redis_client: redis.Redis, prefix: str
) -> None:
    """The clear writes before it compares (SET GET): where the bytes were not the expected ones
    it puts them back as they were, ttl included; a key that is gone stays gone."""
    store = CorrelationStore(redis_client, prefix, ttl_s=600, lease_s=30)
    mine = Effect(id="task:mine", topic="t", value=b"x")
    key, gone = store.key(None, "c", "raced"), store.key(None, "c", "gone")
    first = _state("raced", mine)
    (raw,) = await store.write_many([Write(key, None, first)], time.time())
    assert raw is not None
    winner = msgspec.structs.replace(first, late_replies=1)
    (won,) = await store.write_many([Write(key, raw, winner)], time.time())
    await redis_client.expire(key, 12345)  # a ttl the clear cannot have computed itself
    wake = await redis_client.zscore(store.wake_key(key), key)

    cleared = msgspec.structs.replace(first, outbox=[])
    assert await store.clear_many([Write(key, raw, cleared), Write(gone, raw, cleared)], time.time()) == [None, None]
    assert await redis_client.get(key) == won and await redis_client.ttl(key) == 12345
    assert await redis_client.zscore(store.wake_key(key), key) == wake
    assert not await redis_client.exists(gone) and await redis_client.zscore(store.wake_key(gone), gone) is None
