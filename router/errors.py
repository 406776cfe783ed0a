"""The error tree: every routeyard error says whether retrying can help.

    RouteyardError                  retriable=False, fatal=False: the input is at fault -> dead letter
    |-- InvalidEvent                (routeyard.consumers.workers.router) decoded but cannot be routed
    |-- CatalogError                (routeyard.router.catalog) an impossible catalog; raised at boot   fatal
    |-- EngineDead                  (routeyard.router.engines.base) the engine is gone for good               fatal
    |   '-- VllmEngineDead
    |-- EncoderUnavailable          (routeyard.router.engines.embedding) model or library missing               fatal
    '-- DependencyUnavailable       Redis or the broker cannot be reached for now             retriable

``routeyard.consumers.retry.classify`` is the one place that turns any exception (these, and the Redis,
Kafka and msgspec ones) into an action: retry with backoff, dead-letter, or exit the process.
"""

from __future__ import annotations

from typing import ClassVar

__all__ = ["DependencyUnavailable", "RouteyardError"]


class RouteyardError(Exception):
    """Base of routeyard's own errors.

    ``retriable``: the same work may succeed later (retry it in place with backoff).
    ``fatal``: this process cannot go on (exit; a supervisor restarts it, uncommitted work is
    redelivered). Neither: the input itself is at fault (dead-letter it).
    """

    retriable: ClassVar[bool] = False
    fatal: ClassVar[bool] = False


class DependencyUnavailable(RouteyardError):
    """A dependency (Redis, the broker) did not answer; retrying later may succeed."""

    retriable = True
