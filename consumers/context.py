"""Conversation context in Redis: the last messages of each conversation, appended once per id.

Keys (``ns`` = namespace, tenant ``_`` when none):
    {ns}:{tenant}:ctx:{conversation_id}   list of JSON messages, trimmed to ``max_messages`` and
                                          ``max_bytes`` (oldest dropped first; the newest stays)
    {ns}:{tenant}:seen:{conversation_id}  sorted set of applied append ids (bounded)

An append carries an id (the event id for a user turn, ``ctx:<event>`` for agents' replies);
appending the same id twice is a no-op, so redelivered events never duplicate a turn.

Tenants are isolated by key: every key of a conversation carries its tenant, so a turn of tenant A
never reads or extends tenant B's context, even with the same conversation id. Tenant names never
contain ``:`` and never are ``_`` (the router worker rejects such events).
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import msgspec
from redis.asyncio import Redis

from schemas import Message

SEEN_IDS_KEPT = 512
DEFAULT_MAX_BYTES = 512 * 1024
"""Bytes of stored messages kept per conversation (JSON as stored)."""

_APPEND = """
local fresh = redis.call('ZADD', KEYS[2], 'NX', ARGV[4], ARGV[1])
if fresh == 1 then
  for i = 8, #ARGV do redis.call('RPUSH', KEYS[1], ARGV[i]) end
  redis.call('LTRIM', KEYS[1], -tonumber(ARGV[2]), -1)
  local items = redis.call('LRANGE', KEYS[1], 0, -1)
  local budget, bytes, keep = tonumber(ARGV[7]), 0, #items
  for i = #items, 1, -1 do
    bytes = bytes + string.len(items[i])
    if bytes > budget then keep = math.max(1, #items - i) break end
  end
  if keep < #items then redis.call('LTRIM', KEYS[1], -keep, -1) end
  redis.call('ZREMRANGEBYRANK', KEYS[2], 0, -tonumber(ARGV[5]) - 1)
end
redis.call('EXPIRE', KEYS[1], ARGV[3])
redis.call('EXPIRE', KEYS[2], ARGV[3])
if ARGV[6] == '0' then return {} end
return redis.call('LRANGE', KEYS[1], 0, -1)
"""

_message_decoder = msgspec.json.Decoder(Message)
_encoder = msgspec.json.Encoder()


class Append(msgspec.Struct, frozen=True):
    tenant: str | None
    conversation_id: str
    append_id: str
    messages: list[Message]


def tenant_part(tenant: str | None) -> str:
    return tenant or "_"


class ContextStore:
    def __init__(
        self, redis: Redis, namespace: str, *, max_messages: int, ttl_s: int, max_bytes: int = DEFAULT_MAX_BYTES
    ) -> None:
        self._redis = redis
        self._ns = namespace
        self._max = max_messages
        self._max_bytes = max_bytes
        self._ttl = ttl_s
        self._script = redis.register_script(_APPEND)

    def keys(self, tenant: str | None, conversation_id: str) -> list[str]:
        base = f"{self._ns}:{tenant_part(tenant)}"
        return [f"{base}:ctx:{conversation_id}", f"{base}:seen:{conversation_id}"]

    async def append_many(self, appends: Sequence[Append], *, read: bool = False) -> list[list[Message]]:
        """Append each batch of messages once (by id); with ``read``, return each context after."""
        if not appends:
            return []
        now = time.time()
        async with self._redis.pipeline(transaction=False) as pipe:
            for a in appends:
                args: list[bytes | str | int | float] = [
                    a.append_id,
                    self._max,
                    self._ttl,
                    now,
                    SEEN_IDS_KEPT,
                    "1" if read else "0",
                    self._max_bytes,
                ]
                args += [_encoder.encode(m) for m in a.messages]
                await self._script(keys=self.keys(a.tenant, a.conversation_id), args=args, client=pipe)
            results = await pipe.execute()
        return [[_message_decoder.decode(raw) for raw in result] for result in results]

    async def load(self, tenant: str | None, conversation_id: str) -> list[Message]:
        raw = await self._redis.lrange(self.keys(tenant, conversation_id)[0], 0, -1)
        return [_message_decoder.decode(r) for r in raw]
