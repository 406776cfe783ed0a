"""Correlation state in Redis, written with compare-and-set, and the outbox that carries out
its effects.

Keys (``{ns:pN}``: the conversation's hash tag, its partition; routeyard.consumers.stores.slots):
    {ns:pN}:{tenant}:corr:{event_id}  the Correlation (MessagePack), kept ``ttl`` after its next
                                      wake-up; once it is done and its outbox cleared, only a ``Done``
                                      marker (under 200 bytes) for ``ttl`` (and what was left of its
                                      outbox's lease): enough to recognise a redelivery
    {ns:pN}:wake                      sorted set: correlation key -> when a sweeper must look at it
                                      (one per partition; the sweeper visits all of them)
    {ns}:sent:{digest}                a record published once per identity (dead letters, rejected
                                      responses), kept ``ttl``: a redone batch does not send it again

A compare-and-set names the bytes it expects by their SHA-1 (the script compares
``redis.sha1hex`` of the stored value): a state's bytes cross the wire once per write, not twice.
Where it expects the key absent (a new turn), SET NX is the compare; where it only clears an
outbox, SET GET writes and returns the bytes it compares (put back where they were not the
expected ones): neither reads the key first, so a turn's two writes and two clears take three
operations fewer than a GET before each (bench/redis_scale.py).

Every write stores the new state *with the effects it implies in its outbox*, then the effects
are carried out (context appended, records published), then removed from the outbox. A
process that dies in between leaves the outbox full and the key due in its wake set after a
lease; a sweeper then carries the effects out again. Effects have stable ids, so doing one
twice is harmless. This is how a response is never lost.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import logging
import time
from collections.abc import Sequence

import msgspec
from redis.asyncio import Redis
from redis.commands.core import AsyncScript
from routeyard.consumers.kafka.bus import Outgoing, Producer, fits
from routeyard.consumers.retry import retrying
from routeyard.consumers.stores import slots
from routeyard.consumers.stores.context import Append, ContextStore, tenant_part
from routeyard.router.correlation import Correlation, Effect, response_status
from routeyard.schemas import ResponseStatus

log = logging.getLogger(__name__)

_WAKE = """
local function wake(wake_key, key, at)
  if at == '' then redis.call('ZREM', wake_key, key) else redis.call('ZADD', wake_key, at, key) end
end
"""
"""Where a stored state is due next (its wake set entry), shared by the two scripts below."""

_CAS = _WAKE + """
local out = {}
for i = 1, #KEYS, 2 do
  local a, key, wake_key = (i - 1) * 2, KEYS[i], KEYS[i + 1]
  local expected, set = ARGV[a + 1], false
  if expected == '' then  -- "absent": SET NX is the compare, no GET
    set = redis.call('SET', key, ARGV[a + 2], 'NX', 'EX', ARGV[a + 3])
  else
    local cur = redis.call('GET', key)
    if cur and redis.sha1hex(cur) == expected then set = redis.call('SET', key, ARGV[a + 2], 'EX', ARGV[a + 3]) end
  end
  if not set then
    out[#out + 1] = 0
  else
    wake(wake_key, key, ARGV[a + 4])
    out[#out + 1] = 1
  end
end
return out
"""
"""Compare-and-set a batch in one call: KEYS = per write its correlation key and its wake set;
ARGV = per key (SHA-1 hex of the expected bytes or '' for "absent", new bytes, ttl seconds, wake
time or '' for none)."""

_CLEAR = _WAKE + """
local out = {}
for i = 1, #KEYS, 2 do
  local a, key, wake_key = (i - 1) / 2 * 3, KEYS[i], KEYS[i + 1]
  -- SET GET writes and returns the old bytes in one operation; where they were not the expected
  -- ones they are put back (a script is atomic: no one saw ours). KEEPTTL: see clear_many.
  local old = redis.call('SET', key, ARGV[a + 2], 'XX', 'KEEPTTL', 'GET')
  if not (old and redis.sha1hex(old) == ARGV[a + 1]) then
    if old then redis.call('SET', key, old, 'KEEPTTL') end
    out[#out + 1] = 0
  else
    wake(wake_key, key, ARGV[a + 3])
    out[#out + 1] = 1
  end
end
return out
"""
"""Compare-and-set a batch of outbox clears in one call: KEYS as ``_CAS``; ARGV = per key (SHA-1
hex of the expected bytes, new bytes, wake time or '' for none)."""

_CLAIM = """
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, ARGV[3])
for _, key in ipairs(due) do redis.call('ZADD', KEYS[1], ARGV[2], key) end
return due
"""


class Done(msgspec.Struct, frozen=True, array_like=True):
    """What is left of a finished correlation: who it belonged to and how it ended. A MessagePack
    array (a state is a map), so one read tells them apart. Keeping the full state, with its copy of
    the context, for ``dedup_ttl_s`` cost many times more (bench/redis_bytes.py); this stays under
    200 bytes."""

    event_id: str
    conversation_id: str
    tenant: str | None
    status: ResponseStatus
    late_replies: int = 0


_decoder = msgspec.msgpack.Decoder(Correlation)
_done_decoder = msgspec.msgpack.Decoder(Done)
_encoder = msgspec.msgpack.Encoder()
_json_decoder = msgspec.json.Decoder(Correlation)


class Write(msgspec.Struct, frozen=True):
    key: str
    expected: bytes | None
    state: Correlation | Done


class CorrelationStore:
    def __init__(
        self,
        redis: Redis,
        namespace: str,
        *,
        ttl_s: int,
        lease_s: float,
        partitions: int = slots.DEFAULT_PARTITIONS,
    ) -> None:
        self._redis = redis
        self._ns = namespace
        self._ttl = ttl_s
        self._partitions = partitions
        self.lease_s = lease_s
        self.wake_keys = [f"{t}:wake" for t in slots.tags(namespace, partitions)]
        self._cas = redis.register_script(_CAS)
        self._clear = redis.register_script(_CLEAR)
        self._claim = redis.register_script(_CLAIM)

    def key(self, tenant: str | None, conversation_id: str, event_id: str) -> str:
        """A turn's correlation key, in its conversation's hash slot."""
        return f"{slots.tag(self._ns, conversation_id, self._partitions)}:{tenant_part(tenant)}:corr:{event_id}"

    @staticmethod
    def wake_key(key: str) -> str:
        """The wake set of the partition a correlation key belongs to."""
        return f"{key[: key.index('}') + 1]}:wake"

    async def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        if not keys:
            return []
        return await slots.mget(self._redis, keys)  # bytes: the client does not decode responses

    async def write_many(self, writes: Sequence[Write], now: float) -> list[bytes | None]:
        """Compare-and-set each state (one script call for the batch): the bytes stored where it
        stuck, None where someone else changed it first (the bytes let a later compare-and-set
        skip reading the key again). Each key is kept ``ttl`` past the state's next wake-up, also
        while its outbox makes it due sooner: its clear keeps that ttl (``clear_many``)."""
        return await self._compare_and_set(self._cas, writes, now, with_ttl=True)

    async def clear_many(self, writes: Sequence[Write], now: float) -> list[bytes | None]:
        """``write_many`` for states whose outbox only shrank (``Outbox.clear``), one operation less
        per key: the compare reads the old bytes as the write returns them (SET GET, put back where
        they were not the expected ones), and the key keeps the ttl its write gave it, as a clear
        changes no slot and so no wake-up that ttl was set past."""
        return await self._compare_and_set(self._clear, writes, now, with_ttl=False)

    async def _compare_and_set(
        self, script: AsyncScript, writes: Sequence[Write], now: float, *, with_ttl: bool
    ) -> list[bytes | None]:
        if not writes:
            return []
        encoded = [_encoder.encode(w.state) for w in writes]

        async def one(group: list[int]) -> list[int]:
            keys: list[str] = []
            args: list[bytes | str | int | float] = []
            for i in group:
                w, wake = writes[i], self._wake(writes[i].state, now)
                expected = "" if w.expected is None else hashlib.sha1(w.expected).hexdigest()
                keys += [w.key, self.wake_key(w.key)]
                args += [expected, encoded[i], *([self._ttl_s(w.state, wake, now)] if with_ttl else [])]
                args.append("" if wake is None else wake)
            return list(await script(keys=keys, args=args))

        results = await slots.per_slot(self._redis, [w.key for w in writes], one)
        return [raw if ok else None for raw, ok in zip(encoded, results, strict=True)]

    def _ttl_s(self, state: Correlation | Done, wake: float | None, now: float) -> int:
        """``ttl`` past the state's next wake-up (agents may take hours, and retries longer), or past
        ``wake`` where its outbox's lease makes that later."""
        later = [t for t in (wake, None if isinstance(state, Done) else state.next_wakeup()) if t is not None]
        return self._ttl + (max(0, int(max(later) - now)) if later else 0)

    def sent_key(self, *identity: str | int | None) -> str:
        """The key of a "published once" marker (a dead letter, a rejection); hashed, since
        ``identity`` may hold anything a hostile record carried."""
        digest = hashlib.sha256("\0".join(str(part) for part in identity).encode()).hexdigest()[:32]
        return f"{self._ns}:sent:{digest}"

    async def sent(self, keys: Sequence[str]) -> list[bool]:
        """Which markers exist: their records were published already."""
        return [raw is not None for raw in await self.get_many(keys)] if keys else []

    async def mark_sent(self, keys: Sequence[str]) -> None:
        """Remember for ``ttl`` that these records were published."""
        if keys:
            async with self._redis.pipeline(transaction=False) as pipe:
                for key in keys:
                    pipe.set(key, b"1", ex=self._ttl)
                await pipe.execute()

    async def claim_due(self, now: float, limit: int = 200, *, due: float | None = None) -> list[str]:
        """Keys whose wake time is at or before ``due`` (default ``now``), from every partition's wake
        set (up to ``limit`` from each); each is pushed one lease past ``now``, so one sweeper has it."""
        until = now if due is None else min(due, now)
        claimed = await asyncio.gather(
            *(self._claim(keys=[wake], args=[until, now + self.lease_s, limit]) for wake in self.wake_keys)
        )
        return [k.decode() if isinstance(k, bytes) else k for keys in claimed for k in keys]

    async def pending(self) -> int:
        """Correlations still waiting on agents or on their outbox."""
        async with self._redis.pipeline(transaction=False) as pipe:
            for wake in self.wake_keys:
                pipe.zcard(wake)
            return sum(int(n) for n in await pipe.execute())

    def _wake(self, state: Correlation | Done, now: float) -> float | None:
        if isinstance(state, Done):
            return None
        wake = state.next_wakeup()
        if state.outbox:
            lease = now + self.lease_s
            wake = lease if wake is None else min(wake, lease)
        return wake


def decode_state(raw: bytes) -> Correlation | Done:
    """A stored state, or the ``Done`` marker of a finished one (a MessagePack array: first byte
    0x90-0x9f). States are MessagePack: a fifth smaller than JSON with an outbox (whose
    records are bytes, base64 in JSON) and encoded twice as fast. JSON states, as versions before
    this one wrote them, still decode, so correlations in flight survive an upgrade (a MessagePack
    map never starts with ``{``)."""
    if raw[:1] == b"{":
        return _json_decoder.decode(raw)
    if 0x90 <= raw[0] <= 0x9F:
        return _done_decoder.decode(raw)
    return _decoder.decode(raw)


def finished(state: Correlation) -> Done:
    """The marker kept once ``state`` is done and nothing is left to carry out."""
    return Done(
        event_id=state.event_id,
        conversation_id=state.conversation_id,
        tenant=state.tenant,
        status=response_status(state.slots),
        late_replies=state.late_replies,
    )


def shrunk(state: Correlation) -> Correlation | Done:
    """What to store after its outbox changed: the marker once nothing more can happen to it."""
    return finished(state) if state.done and not state.outbox else state


class Stored(msgspec.Struct, frozen=True):
    """A state as just stored (``raw``: its bytes in Redis) with the effects its writer added."""

    state: Correlation
    raw: bytes
    effects: list[Effect]


def _publishable(effects: list[tuple[Correlation, Effect]]) -> list[Outgoing]:
    """The records to publish. Records are bounded where they are made (replies, responses,
    headers); one that is too large anyway is left out with an error log rather than raised:
    it is stored in an outbox, so raising would fail every sweep that carries it out again."""
    out = []
    for state, e in effects:
        if e.topic is None or e.value is None:
            continue
        record = Outgoing(topic=e.topic, value=e.value, key=e.key, headers=e.headers)
        if fits(record):
            out.append(record)
        else:
            log.error(
                "effect %s of event %s is too large to publish (%d bytes); left out", e.id, state.event_id, len(e.value)
            )
    return out


class Outbox:
    """Carries out stored effects, then removes them from the stored states.

    The removal runs in the background, overlapping the caller's next batch: the effects are
    already published, so it only spares a sweeper from publishing them again after the lease
    (harmless, ids are stable, but wasted). ``settle`` waits for it; ``carry_out`` settles the
    previous removal first, so at most one per caller is in flight.
    """

    def __init__(self, store: CorrelationStore, context: ContextStore, producer: Producer) -> None:
        self._store = store
        self._context = context
        self._producer = producer
        self._clearing: set[asyncio.Task[None]] = set()

    async def carry_out(self, items: dict[str, Stored]) -> None:
        """``items``: key -> the stored state and the effects this caller added to its outbox.

        Effects run (context appends first, then publishes); their removal from the outbox is
        started and not waited for. A caller carries out only its own effects; a sweeper passes
        the whole outbox.
        """
        await self.settle()
        effects = [(item.state, e) for item in items.values() for e in item.effects]
        if not effects:
            return
        await self._context.append_many(
            [
                Append(state.tenant, state.conversation_id, e.id, e.context)
                for state, e in effects
                if e.context is not None
            ]
        )
        await self._producer.publish(_publishable(effects))
        # Retried in place: redoing the whole batch would find the states stored and leave the
        # outbox to a sweeper, which would publish it all again after the lease.
        task = asyncio.create_task(retrying(functools.partial(self.clear, items), what="outbox clear"))
        self._clearing.add(task)
        task.add_done_callback(self._clearing.discard)

    async def settle(self) -> None:
        """Wait for the outbox removals in flight; raises if one failed for good."""
        if self._clearing:
            await asyncio.gather(*self._clearing)

    async def clear(self, items: dict[str, Stored], attempts: int = 8) -> None:
        """Remove each item's effects from its stored outbox. The first compare-and-set expects
        the bytes just stored (no read); where the state changed since, it is read and retried."""
        pending = {key: {e.id for e in item.effects} for key, item in items.items() if item.effects}
        known = {key: (items[key].raw, items[key].state) for key in pending}
        for _ in range(attempts):
            if not pending:
                return
            keys = [k for k in pending if k not in known]
            raws = dict(zip(keys, await self._store.get_many(keys), strict=True)) if keys else {}
            writes = []
            for key in list(pending):
                raw, stored = known.pop(key) if key in known else (raws[key], None)
                if raw is None:
                    pending.pop(key)
                    continue
                state = stored if stored is not None else decode_state(raw)
                if isinstance(state, Done):  # already finished and shrunk
                    pending.pop(key)
                    continue
                kept = [e for e in state.outbox if e.id not in pending[key]]
                writes.append(Write(key, raw, shrunk(msgspec.structs.replace(state, outbox=kept))))
            results = await self._store.clear_many(writes, time.time())
            for w, ok in zip(writes, results, strict=True):
                if ok is not None:
                    pending.pop(w.key)
        if pending:
            log.warning("outbox of %d correlations not cleared; a sweeper will retry", len(pending))
