"""``routeyard gateway``'s composition root: the producer, the reply reader, Redis and the HTTP
server (uvicorn) of one gateway process, started and stopped in order."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterator

import uvicorn
from routeyard.consumers.app import create_topics, make_bus
from routeyard.consumers.catalogs.live import CatalogSource, follow, source_for
from routeyard.consumers.errors import CannotReach
from routeyard.consumers.gateway.access import Keys
from routeyard.consumers.gateway.app import Gateway
from routeyard.consumers.gateway.replies import Replies
from routeyard.consumers.gateway.turns import RouterLimits, Turns
from routeyard.consumers.kafka.bus import Bus
from routeyard.consumers.settings import Settings
from routeyard.consumers.stores.connection import redis_client
from routeyard.consumers.stores.turns import TurnStore
from routeyard.router.catalog import Catalog
from routeyard.router.validation import gateway_topic

log = logging.getLogger(__name__)

__all__ = ["run_gateway"]


async def run_gateway(
    settings: Settings,
    stop: asyncio.Event,
    catalog: Catalog | None,
    bus: Bus | None = None,
    started: Callable[[str], None] | None = None,
) -> None:
    """Serve until ``stop``; ``started`` gets the gateway's URL once it listens. ``catalog``: this
    one for good; None: ``router.catalog`` (a file or ``topic:``), followed while it serves."""
    bus = bus or make_bus(settings)
    source = source_for(settings, bus, catalog)
    await source.start()
    try:
        await _run(settings, stop, source, bus, started)
    finally:
        await source.stop()


async def _run(
    settings: Settings,
    stop: asyncio.Event,
    source: CatalogSource,
    bus: Bus,
    started: Callable[[str], None] | None,
) -> None:
    cfg = settings.gateway
    await create_topics(settings, bus=bus)
    keys = Keys(cfg.tenants_by_key())
    if keys.open:
        log.warning("GATEWAY IS OPEN: no API keys (ROUTEYARD_GATEWAY__API_KEYS), anyone can send turns. Dev only.")
    allowed = settings.router.tenants
    strays = sorted(set(cfg.tenants_by_key().values()) - allowed) if allowed is not None else []
    if strays:
        log.warning("gateway keys of tenants not in router.tenants (their requests get 403): %s", ", ".join(strays))
    topic = gateway_topic(settings.topics, cfg.instance)
    async with redis_client(settings) as redis:
        store = TurnStore(redis, settings.namespace, cfg.async_ttl_s)
        replies = Replies(
            bus,
            topic,
            settings.topics.decisions,
            topic,
            store,
            settings.kafka.fetch_max_wait_ms,
            streams_topic=settings.topics.streams,
            keep_s=cfg.async_ttl_s,
        )
        producer = bus.producer()
        await producer.start()
        try:
            await replies.start()
            try:
                limits = RouterLimits(settings.router.tenants, settings.router.max_event_bytes)
                turns = Turns(cfg, settings.topics, list(source.catalog.names), producer, replies, store, limits)

                def swap(catalog: Catalog) -> None:  # the model names a request may use
                    turns.agents[:] = catalog.names

                following = asyncio.create_task(follow(source, swap, stop))
                try:
                    await _serve(Gateway(turns, keys), cfg.host, cfg.port, stop, started)
                finally:
                    following.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await following
            finally:
                await replies.stop()
        finally:
            await producer.stop()


class _Server(uvicorn.Server):
    """uvicorn's server without its signal handlers: the process's own (``run_until_signal``)
    set ``stop``, which stops the gateway with the rest of the process."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


async def _serve(
    gateway: Gateway, host: str, port: int, stop: asyncio.Event, started: Callable[[str], None] | None
) -> None:
    # keep-alive past a load balancer's idle timeout (60 s is common): a connection closed by the gateway
    # while the balancer (or a pooled client) reuses it is a failed request
    config = uvicorn.Config(
        gateway.app(),
        host=host,
        port=port,
        log_level="warning",
        lifespan="off",
        access_log=False,
        timeout_keep_alive=75,
    )
    server = _Server(config)
    serving = asyncio.create_task(server.serve())
    try:
        while not server.started:
            if serving.done():
                with contextlib.suppress(SystemExit):  # uvicorn's way of saying it could not bind
                    serving.result()
                raise CannotReach(
                    "gateway",
                    f"could not listen on {host}:{port} (in use? set ROUTEYARD_GATEWAY__PORT; dev: --gateway-port)",
                )
            await asyncio.sleep(0.02)
        bound = server.servers[0].sockets[0].getsockname()[1]
        url = f"http://{host}:{bound}"
        gateway.ready = True
        log.info("gateway up on %s (reply topic %s)", url, gateway.turns.replies.topic)
        if started is not None:
            started(url)
        await asyncio.wait([serving, asyncio.ensure_future(stop.wait())], return_when=asyncio.FIRST_COMPLETED)
    finally:
        gateway.ready = False
        server.should_exit = True
        await serving
