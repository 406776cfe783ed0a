"""The one place that maps an exception to an action.

    classify(exc) -> Action.RETRY        a dependency is down or busy (Redis/broker connection,
                                          timeouts, retriable Kafka errors, DependencyUnavailable):
                                          retry the same work in place with bounded exponential
                                          backoff and full jitter; offsets do not move meanwhile.
                     Action.DEAD_LETTER  anything that is neither retriable nor fatal: raised
                                          while handling records, it is their data's fault
                                          (undecodable bytes, JSON nested too deep, a date out of
                                          range, a record too large to publish, a RouteyardError
                                          that is neither retriable nor fatal...): the batch is
                                          redone record by record and each record that still
                                          fails alone goes to the dead-letter topic with the error.
                     Action.EXIT         fatal: this process cannot go on (RouteyardError.fatal:
                                          EngineDead, CatalogError; Redis auth failures; the Kafka
                                          client's own non-retriable errors): it exits non-zero
                                          without committing; a supervisor restarts it and the
                                          records are redelivered.

Exiting on a record's fault would crash-loop: the restarted process reads the same record and
exits again, and every later record of its partition waits behind it (a poison pill). So only
errors known to be the process's own are fatal; the rest cost one dead letter.

A retriable error that outlasts the retry budget (``Backoff.budget_s``) also ends in EXIT: the
process restarts rather than spinning forever, and nothing was committed.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from routeyard.consumers.kafka.errors import KafkaError, MessageSizeTooLargeError
from routeyard.consumers.metrics import METRICS
from routeyard.consumers.settings import Settings
from routeyard.consumers.stores.connection import failure as redis_failure
from routeyard.router.errors import RouteyardError

log = logging.getLogger(__name__)

T = TypeVar("T")


class Action(enum.Enum):
    RETRY = "retry"
    DEAD_LETTER = "dead_letter"
    EXIT = "exit"


_RETRIABLE: tuple[type[BaseException], ...] = (
    ConnectionError,  # OSError family: refused, reset, broken pipe
    TimeoutError,  # asyncio.TimeoutError is TimeoutError on 3.11
)
_RECORD_FAULT: tuple[type[BaseException], ...] = (MessageSizeTooLargeError,)
"""Kafka errors caused by one record (its outcome is too large to publish), not by the client."""


def classify(exc: BaseException) -> Action:
    if isinstance(exc, RouteyardError):
        if exc.retriable:
            return Action.RETRY
        return Action.EXIT if exc.fatal else Action.DEAD_LETTER
    redis = redis_failure(exc)  # Redis: auth refused -> exit; unreachable, loading, timeout, read-only -> retry
    if redis is not None:
        return Action.EXIT if redis == "denied" else Action.RETRY
    if isinstance(exc, KafkaError) and not isinstance(exc, _RECORD_FAULT):
        return Action.RETRY if getattr(exc, "retriable", False) else Action.EXIT
    if isinstance(exc, _RETRIABLE):
        return Action.RETRY
    return Action.DEAD_LETTER


def is_retriable(exc: BaseException) -> bool:
    return classify(exc) is Action.RETRY


@dataclass(frozen=True)
class Backoff:
    """Exponential backoff with full jitter, each delay capped at ``max_s``, given up after
    ``budget_s`` of retrying (then the error propagates and the process exits)."""

    base_s: float = 0.1
    max_s: float = 5.0
    budget_s: float = 300.0

    def delay(self, attempt: int) -> float:
        return random.uniform(0, min(self.max_s, self.base_s * 2 ** min(attempt, 30)))


DEFAULT_BACKOFF = Backoff()


async def retrying(call: Callable[[], Awaitable[T]], *, what: str, backoff: Backoff = DEFAULT_BACKOFF) -> T:
    """Await ``call()`` until it succeeds; retry while ``classify`` says RETRY and the budget
    lasts; anything else propagates at once."""
    started = time.monotonic()
    attempt = 0
    while True:
        try:
            return await call()
        except Exception as exc:
            if classify(exc) is not Action.RETRY or time.monotonic() - started > backoff.budget_s:
                raise
            delay = backoff.delay(attempt)
            attempt += 1
            METRICS.retries.labels(what=what).inc()
            log.warning("%s failed (%s: %s); retry %d in %.2fs", what, type(exc).__name__, exc, attempt, delay)
            await asyncio.sleep(delay)


def backoff_for(settings: Settings) -> Backoff:
    cfg = settings.lifecycle
    return Backoff(max_s=cfg.retry_max_delay_s, budget_s=cfg.retry_budget_s)
