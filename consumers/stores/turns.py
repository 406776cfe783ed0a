"""The gateway's async turns: ``{ns}:{tenant}:turn:{event_id}`` keys, kept ``ttl_s``.

A turn asked for with ``Prefer: respond-async`` is recorded as pending (an empty value) before
its event is published; the gateway's reader replaces the value with the response's bytes when
the response arrives, but only where a pending record exists (``SET ... XX``), so responses of
synchronous turns leave nothing behind. The tenant is part of the key: a tenant can only find its
own turns (no tenant: ``_``, as in routeyard.consumers.stores.context).
"""

from __future__ import annotations

from collections.abc import Sequence

from redis.asyncio import Redis

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
            await self._finish(keys=keys, args=[self._ttl, *(value for _, _, value in responses)])

    async def get(self, tenant: str | None, event_id: str) -> bytes | None:
        """The response's bytes; ``PENDING`` while it has not come; None: no such turn of this tenant."""
        value = await self._redis.get(self.key(tenant, event_id))
        return value.encode() if isinstance(value, str) else value
