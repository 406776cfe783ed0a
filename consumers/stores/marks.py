"""Which agent tasks were answered: ``{ns}:{tenant}:task:{task_id}`` keys, kept ``dedup_ttl_s``.

Read for a fetched batch at once; written for every task that finished in the same turn of the
event loop with one call (each caller waits for it), so a redelivered task is skipped.
"""

from __future__ import annotations

from redis.asyncio import Redis
from routeyard.consumers.coalesced import Coalesced
from routeyard.consumers.stores import slots

_MARK = """
for i = 1, #KEYS do redis.call('SET', KEYS[i], '1', 'EX', ARGV[1]) end
return #KEYS
"""


class TaskMarks(Coalesced[str]):
    """Which tasks were answered: read for a fetched batch at once; written for every task that
    finished in the same turn of the event loop with one call (each caller waits for it)."""

    def __init__(self, redis: Redis, ttl_s: int) -> None:
        super().__init__(self._mark)
        self._redis = redis
        self._ttl = ttl_s
        self._script = redis.register_script(_MARK)

    async def answered(self, keys: list[str]) -> list[bool]:
        return [raw is not None for raw in await slots.mget(self._redis, keys)]

    async def _mark(self, keys: list[str]) -> None:
        async def one(group: list[int]) -> list[None]:  # one call per hash slot on a cluster
            await self._script(keys=[keys[i] for i in group], args=[self._ttl])
            return [None] * len(group)

        await slots.per_slot(self._redis, keys, one)
