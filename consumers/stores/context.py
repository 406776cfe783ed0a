"""Conversation context in Redis: the last messages of each conversation, appended once per id.

Keys (``ns`` = namespace, tenant ``_`` when none):
    {ns:pN}:{tenant}:ctx:{conversation_id}   list of JSON messages, trimmed to ``max_messages`` and
                                             ``max_bytes`` (oldest dropped first; the newest stays)
    {ns:pN}:{tenant}:seen:{conversation_id}  sorted set of the last applied append ids (bounded,
                                             scored in order of application)

``{ns:pN}`` is the conversation's hash tag (routeyard.consumers.stores.slots): its partition.

An append carries an id (the event id for a user turn, ``ctx:<event>`` for agents' replies);
appending the same id twice is a no-op, so redelivered events never duplicate a turn. A user
turn's append is also *guarded* by its correlation key: where that key exists (the event was
decided before, or its id is another conversation's), nothing is appended, however long ago it
left the seen set. The check and the append are one script call, so one round trip per batch.

Tenants are isolated by key: every key of a conversation carries its tenant, so a turn of tenant A
never reads or extends tenant B's context, even with the same conversation id. Tenant names never
contain ``:`` and never are ``_`` (the router worker rejects such events).
"""

from __future__ import annotations

from collections.abc import Sequence

import msgspec
from redis.asyncio import Redis
from routeyard.consumers.stores import slots
from routeyard.schemas import Message

SEEN_IDS_KEPT = 128
"""Append ids remembered per conversation (at least twice ``max_messages``). 128 is Redis's
``zset-max-listpack-entries``: up to it the sorted set keeps its compact encoding; past it, a
skiplist, bigger than the context it guards (figures: bench/README.md). 128
ids cover the last 64 turns (a user turn and its agents' replies are one id each), while a
redelivered event comes back within seconds or minutes."""
SEEN_TRIM_EVERY = 16
"""The seen set is trimmed once per this many new ids (not on every append: one operation less per
append), to its newest ``kept - SEEN_TRIM_EVERY``: it remembers at least that many."""
DEFAULT_MAX_BYTES = 512 * 1024
"""Bytes of stored messages kept per conversation (JSON as stored)."""

_APPEND = """
local max, ttl, kept = tonumber(ARGV[1]), ARGV[2], tonumber(ARGV[3])
local read, budget, out, a = ARGV[4] == '1', tonumber(ARGV[5]), {}, 6
for k = 1, #KEYS, 3 do
  local ctx, seen, guard, id, n = KEYS[k], KEYS[k + 1], KEYS[k + 2], ARGV[a], tonumber(ARGV[a + 1])
  local held, items = false, nil
  if guard ~= ctx then held = redis.call('GET', guard) end
  if not held and not redis.call('ZSCORE', seen, id) then
    -- scores count up by one per id; every EVERY-th id the set is cut to its newest kept - EVERY,
    -- so it never holds more than ``kept`` (its compact encoding) and is trimmed once per EVERY ids
    local last = redis.call('ZRANGE', seen, -1, -1, 'WITHSCORES')
    local score = (tonumber(last[2]) or 0) + 1
    redis.call('ZADD', seen, score, id)
    if score % EVERY == 0 then redis.call('ZREMRANGEBYSCORE', seen, '-inf', score - kept + EVERY) end
    local len = 0
    for i = a + 2, a + 1 + n, 1000 do  -- one RPUSH per thousand messages (Lua's unpack limit)
      len = redis.call('RPUSH', ctx, unpack(ARGV, i, math.min(i + 999, a + 1 + n)))
    end
    if len > max then redis.call('LTRIM', ctx, -max, -1) end
    items = redis.call('LRANGE', ctx, 0, -1)
    local bytes, keep = 0, #items
    for i = #items, 1, -1 do
      bytes = bytes + string.len(items[i])
      if bytes > budget then keep = math.max(1, #items - i) break end
    end
    if keep < #items then
      redis.call('LTRIM', ctx, -keep, -1)
      local rest = {}
      for i = #items - keep + 1, #items do rest[#rest + 1] = items[i] end
      items = rest
    end
  end
  redis.call('EXPIRE', ctx, ttl)
  redis.call('EXPIRE', seen, ttl)
  if read then
    -- the list as just trimmed: no second LRANGE
    if held then out[#out + 1] = {held, {}} else out[#out + 1] = {'', items or redis.call('LRANGE', ctx, 0, -1)} end
  end
  a = a + 2 + n
end
return out
""".replace("EVERY", str(SEEN_TRIM_EVERY))
"""Appends of a batch in one call. KEYS: (ctx, seen, guard) per append (guard: the correlation key
that must be absent for the append to happen; the ctx key itself for no guard); ARGV: max
messages, ttl, seen ids kept, read ('1' returns per append the guard's value, or '' and the
context after the append), max bytes, then per append its id, its message count and the messages."""

_CLAIM = """
local out = {}
for i = 1, #KEYS do out[i] = redis.call('SET', KEYS[i], ARGV[i + 1], 'NX', 'GET', 'EX', ARGV[1]) or '' end
return out
"""
"""Claim event ids for their conversations: KEYS = claim keys, ARGV = ttl, then each claim's value;
per key, the value that was there ('' where the claim is new)."""

_message_decoder = msgspec.json.Decoder(Message)
_encoder = msgspec.json.Encoder()


class Append(msgspec.Struct, frozen=True):
    tenant: str | None
    conversation_id: str
    append_id: str
    messages: list[Message]
    guard: str | None = None
    """A key that must not exist for the append to happen (a user turn's correlation key)."""


def tenant_part(tenant: str | None) -> str:
    return tenant or "_"


class ContextStore:
    def __init__(
        self,
        redis: Redis,
        namespace: str,
        *,
        max_messages: int,
        ttl_s: int,
        max_bytes: int = DEFAULT_MAX_BYTES,
        partitions: int = slots.DEFAULT_PARTITIONS,
        claim_ttl_s: int | None = None,
    ) -> None:
        self._redis = redis
        self._partitions = partitions
        self._claim_ttl = claim_ttl_s or ttl_s
        self._claim = redis.register_script(_CLAIM)
        self._ns = namespace
        self._max = max_messages
        self._max_bytes = max_bytes
        self._ttl = ttl_s
        self.seen_kept = max(SEEN_IDS_KEPT, 2 * max_messages + SEEN_TRIM_EVERY)
        self._script = redis.register_script(_APPEND)

    def keys(self, tenant: str | None, conversation_id: str) -> list[str]:
        base = f"{slots.tag(self._ns, conversation_id, self._partitions)}:{tenant_part(tenant)}"
        return [f"{base}:ctx:{conversation_id}", f"{base}:seen:{conversation_id}"]

    async def append_many(self, appends: Sequence[Append], *, read: bool = False) -> list[list[Message]]:
        """Append each batch of messages once (by id); with ``read``, return each context after."""
        results = await self._run(appends, read=read)
        return [context for _, context in results]

    async def admit_many(self, appends: Sequence[Append]) -> list[tuple[bytes | None, list[Message]]]:
        """Per append: the value of its ``guard`` key if that exists (then nothing was appended, and
        no context is read), else None and the context after the append.

        A guarded append first claims its id for its conversation (``claim_key``): the guard lives
        in the conversation's slot, so it cannot see another conversation (of another partition)
        that used the same event id; the claim, in the event id's own slot, does. Where another
        conversation holds the claim, its value (a done marker naming that conversation) comes
        back as the guard's, and nothing is appended."""
        held = await self._claim_ids(appends)
        fresh = [i for i, h in enumerate(held) if h is None]
        admitted = await self._run([appends[i] for i in fresh], read=True)
        out: list[tuple[bytes | None, list[Message]]] = [(h, []) for h in held]
        for i, result in zip(fresh, admitted, strict=True):
            out[i] = result
        return out

    def claim_key(self, tenant: str | None, event_id: str) -> str:
        """Which conversation used an event id first, in the event id's own slot."""
        return f"{slots.tag(self._ns, 'event:' + event_id, self._partitions)}:{tenant_part(tenant)}:event:{event_id}"

    async def _claim_ids(self, appends: Sequence[Append]) -> list[bytes | None]:
        """Per append: None where its id is (now) claimed by its own conversation; else the claim."""
        guarded = [i for i, a in enumerate(appends) if a.guard is not None]
        keys = [self.claim_key(appends[i].tenant, appends[i].append_id) for i in guarded]

        async def one(group: list[int]) -> list[bytes]:
            values = [_claim(appends[guarded[i]]) for i in group]
            return list(await self._claim(keys=[keys[i] for i in group], args=[self._claim_ttl, *values]))

        found = await slots.per_slot(self._redis, keys, one) if keys else []
        held: list[bytes | None] = [None] * len(appends)
        for i, raw in zip(guarded, found, strict=True):
            if raw and _claimant(raw) != appends[i].conversation_id:
                held[i] = raw
        return held

    async def _run(self, appends: Sequence[Append], *, read: bool) -> list[tuple[bytes | None, list[Message]]]:
        """One script call for the batch; on a cluster, one per hash slot (per partition)."""
        if not appends:
            return []
        ctx_keys = [self.keys(a.tenant, a.conversation_id)[0] for a in appends]

        async def one(group: list[int]) -> list[tuple[bytes | None, list[Message]]]:
            return await self._call([appends[i] for i in group], read=read) or [(None, [])] * len(group)

        results = await slots.per_slot(self._redis, ctx_keys, one)
        return results if read else []

    async def _call(self, appends: Sequence[Append], *, read: bool) -> list[tuple[bytes | None, list[Message]]]:
        keys: list[str] = []
        args: list[bytes | str | int | float] = [
            self._max,
            self._ttl,
            self.seen_kept,
            "1" if read else "0",
            self._max_bytes,
        ]
        for a in appends:
            ctx, seen = self.keys(a.tenant, a.conversation_id)
            keys += [ctx, seen, a.guard or ctx]
            args += [a.append_id, len(a.messages), *(_encoder.encode(m) for m in a.messages)]
        results = await self._script(keys=keys, args=args)
        if not read:
            return []
        return [(held or None, [_message_decoder.decode(raw) for raw in context]) for held, context in results]

    async def load(self, tenant: str | None, conversation_id: str) -> list[Message]:
        raw = await self._redis.lrange(self.keys(tenant, conversation_id)[0], 0, -1)
        return [_message_decoder.decode(r) for r in raw]


def _claim(a: Append) -> bytes:
    """A claim's value: shaped as a done marker (routeyard.consumers.stores.correlations.Done), so
    the router reads it as it reads a guard's value."""
    return _claim_encoder.encode((a.append_id, a.conversation_id, a.tenant, "complete", 0))


def _claimant(raw: bytes) -> str | None:
    try:
        value = msgspec.msgpack.decode(raw)
        return str(value[1])
    except (msgspec.DecodeError, IndexError, TypeError):
        return None


_claim_encoder = msgspec.msgpack.Encoder()
