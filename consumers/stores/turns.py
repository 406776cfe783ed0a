"""The gateway's kept turns: ``{ns}:{tenant}:turn:{event_id}`` keys, kept ``ttl_s``, and beside
each ``...:decision``, the turn's routing decision.

A turn asked for with ``Prefer: respond-async`` is recorded as pending (an empty value) before
its event is published, and so is a synchronous turn that was not answered in time (its client
got a 504 naming the event id and may fetch it later). The gateway's reader replaces the value
with the response's bytes when the response arrives, but only where a pending record exists
(``SET ... XX``), so responses of answered synchronous turns leave nothing behind; a decision is
kept only beside an existing record too. The tenant is part of the key: a tenant can only find
its own turns (no tenant: ``_``, as in routeyard.consumers.stores.context).
"""

from __future__ import annotations

from collections.abc import Sequence

from redis.asyncio import Redis
from routeyard.consumers.stores import slots

PENDING = b""

_FINISH = """
for i = 1, #KEYS do redis.call('SET', KEYS[i], ARGV[i + 1], 'XX', 'EX', ARGV[1]) end
return #KEYS
"""


class TurnStore:
    def __init__(self, redis: Redis, namespace: str, ttl_s: int) -> None:
        self._redis = redis
        self._namespace = namespace
        self._ttl = ttl_s
        self._finish = redis.register_script(_FINISH)

    def key(self, tenant: str | None, event_id: str) -> str:
        return f"{self._namespace}:{tenant or '_'}:turn:{event_id}"

    async def pending(self, tenant: str | None, event_id: str) -> None:
        """Record a turn as waiting for its response (before its event is published)."""
        await self._redis.set(self.key(tenant, event_id), PENDING, ex=self._ttl, nx=True)

    async def finish(self, responses: Sequence[tuple[str | None, str, bytes]]) -> None:
        """Store each (tenant, event id, response bytes) whose turn is pending, in one call."""
        if responses:
            keys = [self.key(tenant, event_id) for tenant, event_id, _ in responses]

            async def one(group: list[int]) -> list[None]:  # one call per hash slot on a cluster
                values = [responses[i][2] for i in group]
                await self._finish(keys=[keys[i] for i in group], args=[self._ttl, *values])
                return [None] * len(group)

            await slots.per_slot(self._redis, keys, one)

    async def decide(self, tenant: str | None, event_id: str, decision: bytes) -> None:
        """Keep the turn's decision (its bytes) beside its record, if it has one. Two commands,
        not a script: the two keys may sit in different slots of a cluster. Should the record
        expire between them, the decision is kept alone until it expires too (``ttl_s``)."""
        key = self.key(tenant, event_id)
        if await self._redis.exists(key):
            await self._redis.set(f"{key}:decision", decision, ex=self._ttl)

    async def get(self, tenant: str | None, event_id: str) -> tuple[bytes, bytes | None] | None:
        """(the response's bytes or ``PENDING`` while it has not come, the decision's bytes or
        None); None: no such turn of this tenant."""
        key = self.key(tenant, event_id)
        value, decision = await slots.mget(self._redis, [key, f"{key}:decision"])
        if value is None:
            return None
        return _bytes(value), None if decision is None else _bytes(decision)


def _bytes(value: bytes | str) -> bytes:
    return value.encode() if isinstance(value, str) else value
