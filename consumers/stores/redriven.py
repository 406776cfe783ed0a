"""The dead letters already re-driven: the Redis set ``{ns}:dlq:redriven`` of their ids.

An id is claimed *before* its letter is published and released again if the publish fails, so
``routeyard dlq replay`` never publishes a letter twice, whoever runs it and however often.
"""

from __future__ import annotations

from collections.abc import Sequence

from redis.asyncio import Redis

REDRIVEN_KEY = "dlq:redriven"


class RedrivenSet:
    def __init__(self, redis: Redis, namespace: str) -> None:
        self._redis = redis
        self.key = f"{namespace}:{REDRIVEN_KEY}"

    async def seen(self, ids: Sequence[str]) -> list[bool]:
        """For each id, whether it was re-driven already."""
        return [bool(x) for x in await self._redis.smismember(self.key, list(ids))] if ids else []

    async def claim(self, letter_id: str) -> bool:
        """Mark ``letter_id`` re-driven; False if it was already."""
        return bool(await self._redis.sadd(self.key, letter_id))

    async def release(self, ids: Sequence[str]) -> None:
        """Forget ``ids`` (their publish failed: they may be re-driven again)."""
        if ids:
            await self._redis.srem(self.key, *ids)
