"""Correlation state in Redis, written with compare-and-set, and the outbox that carries out
its effects.

Keys:
    {ns}:{tenant}:corr:{event_id}   the Correlation (JSON), kept ``ttl`` after its next wake-up
                                    (or after it is done)
    {ns}:wake                       sorted set: correlation key -> when a sweeper must look at it

Every write stores the new state *with the effects it implies in its outbox*, then the effects
are carried out (context appended, records published), then removed from the outbox. A
process that dies in between leaves the outbox full and the key due in ``{ns}:wake`` after a
lease; a sweeper then carries the effects out again. Effects have stable ids, so doing one
twice is harmless. This is how a response is never lost.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence

import msgspec
from aiokafka import AIOKafkaProducer
from redis.asyncio import Redis

from consumers.bus import Outgoing, publish
from consumers.context import Append, ContextStore, tenant_part
from consumers.retry import retrying
from router.correlation import Correlation, Effect

log = logging.getLogger(__name__)

_CAS = """
local cur = redis.call('GET', KEYS[1])
if ARGV[1] == '' then
  if cur then return 0 end
elseif cur ~= ARGV[1] then
  return 0
end
redis.call('SET', KEYS[1], ARGV[2], 'EX', ARGV[3])
if ARGV[4] == '' then redis.call('ZREM', KEYS[2], KEYS[1]) else redis.call('ZADD', KEYS[2], ARGV[4], KEYS[1]) end
return 1
"""

_CLAIM = """
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, ARGV[3])
for _, key in ipairs(due) do redis.call('ZADD', KEYS[1], ARGV[2], key) end
return due
"""

_decoder = msgspec.json.Decoder(Correlation)
_encoder = msgspec.json.Encoder()


class Write(msgspec.Struct, frozen=True):
    key: str
    expected: bytes | None
    state: Correlation


class CorrelationStore:
    def __init__(self, redis: Redis, namespace: str, *, ttl_s: int, lease_s: float) -> None:
        self._redis = redis
        self._ns = namespace
        self._ttl = ttl_s
        self.lease_s = lease_s
        self.wake_key = f"{namespace}:wake"
        self._cas = redis.register_script(_CAS)
        self._claim = redis.register_script(_CLAIM)

    def key(self, tenant: str | None, event_id: str) -> str:
        return f"{self._ns}:{tenant_part(tenant)}:corr:{event_id}"

    async def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        if not keys:
            return []
        async with self._redis.pipeline(transaction=False) as pipe:
            for key in keys:
                pipe.get(key)
            return list(await pipe.execute())

    async def write_many(self, writes: Sequence[Write], now: float) -> list[bool]:
        """Compare-and-set each state; False where someone else changed it first."""
        if not writes:
            return []
        async with self._redis.pipeline(transaction=False) as pipe:
            for w in writes:
                wake = self._wake(w.state, now)
                # kept ``ttl`` past its next wake-up: agents may take hours (and retries longer)
                ttl = self._ttl + (0 if wake is None else max(0, int(wake - now)))
                args = [w.expected or b"", _encoder.encode(w.state), ttl, "" if wake is None else wake]
                await self._cas(keys=[w.key, self.wake_key], args=args, client=pipe)
            return [bool(r) for r in await pipe.execute()]

    async def claim_due(self, now: float, limit: int = 200) -> list[str]:
        """Keys whose wake time has passed; each is pushed one lease ahead, so one sweeper has it."""
        keys = await self._claim(keys=[self.wake_key], args=[now, now + self.lease_s, limit])
        return [k.decode() if isinstance(k, bytes) else k for k in keys]

    async def pending(self) -> int:
        """Correlations still waiting on agents or on their outbox."""
        return int(await self._redis.zcard(self.wake_key))

    def _wake(self, state: Correlation, now: float) -> float | None:
        wake = state.next_wakeup()
        if state.outbox:
            lease = now + self.lease_s
            wake = lease if wake is None else min(wake, lease)
        return wake


def decode_state(raw: bytes) -> Correlation:
    return _decoder.decode(raw)


class Outbox:
    """Carries out stored effects, then removes them from the stored states."""

    def __init__(self, store: CorrelationStore, context: ContextStore, producer: AIOKafkaProducer) -> None:
        self._store = store
        self._context = context
        self._producer = producer

    async def carry_out(self, items: dict[str, tuple[Correlation, list[Effect]]]) -> None:
        """``items``: key -> (stored state, the effects this caller added to its outbox).

        Effects run (context appends first, then publishes), then are cleared from the outbox.
        A caller carries out only its own effects; a sweeper passes the whole outbox.
        """
        effects = [(state, e) for state, added in items.values() for e in added]
        if not effects:
            return
        await self._context.append_many(
            [
                Append(state.tenant, state.conversation_id, e.id, e.context)
                for state, e in effects
                if e.context is not None
            ]
        )
        await publish(
            self._producer,
            [
                Outgoing(topic=e.topic, value=e.value, key=e.key, headers=e.headers)
                for _, e in effects
                if e.topic is not None and e.value is not None
            ],
        )
        done = {key: {e.id for e in added} for key, (_, added) in items.items()}
        # Retried here: redoing the whole batch would find the states stored and leave the outbox
        # to a sweeper, which would publish it all again after the lease.
        await retrying(lambda: self.clear(done), what="outbox clear")

    async def clear(self, ids: dict[str, set[str]], attempts: int = 8) -> None:
        pending = {k: v for k, v in ids.items() if v}
        for _ in range(attempts):
            if not pending:
                return
            keys = list(pending)
            raws = await self._store.get_many(keys)
            writes = []
            for key, raw in zip(keys, raws, strict=True):
                if raw is None:
                    pending.pop(key)
                    continue
                state = decode_state(raw)
                kept = [e for e in state.outbox if e.id not in pending[key]]
                writes.append(Write(key, raw, msgspec.structs.replace(state, outbox=kept)))
            results = await self._store.write_many(writes, time.time())
            for w, ok in zip(writes, results, strict=True):
                if ok:
                    pending.pop(w.key)
        if pending:
            log.warning("outbox of %d correlations not cleared; a sweeper will retry", len(pending))
