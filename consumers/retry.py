"""Retry with bounded exponential backoff for errors that say they are retriable.

Redis and broker connection errors are retriable: the batch is retried in place (its offsets
are not committed meanwhile). Anything else propagates and ends the process, so a supervisor
restarts it and the uncommitted records are redelivered.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar

from aiokafka.errors import KafkaError
from redis.exceptions import BusyLoadingError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from consumers.metrics import METRICS

log = logging.getLogger(__name__)

T = TypeVar("T")

RETRIABLE: tuple[type[BaseException], ...] = (
    RedisConnectionError,
    RedisTimeoutError,
    BusyLoadingError,
    ConnectionError,
    asyncio.TimeoutError,
)


def is_retriable(exc: BaseException) -> bool:
    if isinstance(exc, KafkaError):
        return bool(getattr(exc, "retriable", False))
    return isinstance(exc, RETRIABLE)


async def retrying(
    call: Callable[[], Awaitable[T]],
    *,
    what: str,
    attempts: int = 30,
    base_s: float = 0.1,
    max_s: float = 5.0,
) -> T:
    delay = base_s
    for attempt in range(1, attempts + 1):
        try:
            return await call()
        except Exception as exc:
            if not is_retriable(exc) or attempt == attempts:
                raise
            METRICS.retries.labels(what=what).inc()
            log.warning("%s failed (%s: %s); retry %d in %.1fs", what, type(exc).__name__, exc, attempt, delay)
            await asyncio.sleep(delay)
            delay = min(max_s, delay * 2)
    raise AssertionError("unreachable")
