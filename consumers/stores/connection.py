"""The Redis connection: the client every store uses, and what Redis's exceptions mean.

``connect_redis`` / ``redis_client`` create the client (the composition root calls them);
``failure`` says what a Redis exception means, so that ``routeyard.consumers.retry`` and the
command's exit map decide on it without importing redis themselves: only ``stores/`` does.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any, Literal, cast

from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.connection import AbstractConnection, Connection, SSLConnection, UnixDomainSocketConnection
from redis.connection import HiredisRespSerializer
from redis.exceptions import AuthenticationError, AuthorizationError, BusyLoadingError, ReadOnlyError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.utils import HIREDIS_AVAILABLE
from routeyard.consumers.settings import Settings

__all__ = ["Failure", "Redis", "connect_redis", "failure", "redis_client"]

Failure = Literal["denied", "unreachable", "busy"]
"""``denied``: the credentials are refused (retrying cannot help); ``unreachable``: the connection
failed or was lost (including a restarted server still loading its AOF); ``busy``: a timeout, or a
replica that is read-only a moment before its promotion."""


def failure(exc: BaseException) -> Failure | None:
    """What ``exc`` means if it is a Redis error; None if it is not one of these."""
    if isinstance(exc, AuthenticationError | AuthorizationError):  # AuthenticationError is a ConnectionError
        return "denied"
    if isinstance(exc, RedisConnectionError | BusyLoadingError):
        return "unreachable"
    if isinstance(exc, RedisTimeoutError | ReadOnlyError):
        return "busy"
    return None


class _HiredisPacking:
    """Commands packed by hiredis with their arguments as they are. redis-py's asyncio
    connections (8.2, as installed) pack with hiredis too, but encode each argument in Python first: a
    batch's script call has hundreds of arguments, and that loop was the router's and the
    correlator's largest single CPU cost; handing them to hiredis as they are is faster
    (``bench/redis_packing.py``; figures in bench/README.md)."""

    _serializer = HiredisRespSerializer()  # type: ignore[no-untyped-call]

    def pack_command(self, *args: Any) -> list[bytes]:
        packed: list[bytes] = self._serializer.pack(*args)
        return packed


class _HiredisConnection(_HiredisPacking, Connection):
    pass


class _HiredisSSLConnection(_HiredisPacking, SSLConnection):
    pass


class _HiredisUnixConnection(_HiredisPacking, UnixDomainSocketConnection):
    pass


_PACKING: dict[type[AbstractConnection], type[AbstractConnection]] = {
    Connection: _HiredisConnection,
    SSLConnection: _HiredisSSLConnection,
    UnixDomainSocketConnection: _HiredisUnixConnection,
}


def connect_redis(url: str, *, cluster: bool = False, **options: Any) -> Redis:
    """``Redis.from_url``, with commands packed by hiredis where it is installed; a Redis Cluster
    client where ``cluster`` is set or the url's scheme says ``redis+cluster://`` (``rediss+cluster://``)."""
    scheme, sep, rest = url.partition("://")
    if cluster or scheme.endswith("+cluster"):
        node_url = f"{scheme.removesuffix('+cluster')}{sep}{rest}"
        # the same commands, routed by hash slot: the stores keep each call in one slot (stores/slots.py)
        return cast(Redis, RedisCluster.from_url(node_url, **options))
    client = Redis.from_url(url, **options)
    pool = client.connection_pool  # the url picks the class (tcp, TLS, unix socket); no connection made yet
    if HIREDIS_AVAILABLE and pool.connection_class in _PACKING:
        pool.connection_class = _PACKING[pool.connection_class]
    return client


@contextlib.asynccontextmanager
async def redis_client(settings: Settings) -> AsyncIterator[Redis]:
    """A client of ``settings.redis``, pinged before use and closed after."""
    client = connect_redis(
        settings.redis.url.get_secret_value(),
        socket_timeout=10,
        socket_connect_timeout=5,
        cluster=settings.redis.is_cluster,
        **settings.redis.client_options(),
    )
    try:
        await client.ping()
        yield client
    finally:
        await client.aclose()
