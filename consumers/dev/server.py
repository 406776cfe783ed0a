"""``routeyard dev``: the whole pipeline on one machine, no infrastructure needed.

Starts the embedded broker (tansu) and Valkey on loopback ports (free ones, or the fixed
``--kafka-port`` / ``--redis-port``), creates the topics, and runs the router worker, the
correlator and the agents in this process until Ctrl-C. Each turn is logged at INFO (one line:
ids, routes, status, milliseconds) and each agent timeout too (``Settings.log_turns``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from routeyard.consumers.agents.agent import Agent
from routeyard.consumers.app import create_topics, run_agent, run_correlator, run_router
from routeyard.consumers.cli.attach import one_failure
from routeyard.consumers.dev.embedded import EmbeddedBroker, EmbeddedValkey
from routeyard.consumers.dev.envfile import check_port
from routeyard.consumers.filters.filter import Filter
from routeyard.consumers.kafka.bus import Bus
from routeyard.consumers.settings import KafkaSettings, RedisSettings, RouterSettings, Settings
from routeyard.consumers.workers.filters import run_filters
from routeyard.consumers.workers.http_agents import run_http_agents
from routeyard.router.catalog import Catalog, load_catalog

log = logging.getLogger(__name__)

DEMO_CATALOG = Path(__file__).parent / "demo" / "catalog.yaml"


def demo_agents() -> list[Agent]:
    from routeyard.consumers.dev.demo.agents import AGENTS

    return AGENTS


@contextlib.contextmanager
def embedded_servers(
    settings: Settings, *, kafka_port: int | None = None, redis_port: int | None = None
) -> Iterator[Settings]:
    """Start tansu and Valkey (on these ports; None: free ones); yield the settings pointing at them."""
    check_port(kafka_port, "--kafka-port")
    check_port(redis_port, "--redis-port")
    with EmbeddedBroker(kafka_port) as broker, EmbeddedValkey(redis_port) as valkey:
        yield settings.model_copy(
            update={
                "kafka": settings.kafka.model_copy(update={"bootstrap": broker.bootstrap}),
                "redis": settings.redis.model_copy(update={"url": RedisSettings(url=valkey.url).url}),
            }
        )


async def run_pipeline(
    settings: Settings,
    catalog: Catalog,
    agents: Sequence[Agent],
    stop: asyncio.Event,
    ready: asyncio.Event | None = None,
    gateway: Callable[[str], None] | None = None,
    bus: Bus | None = None,
    watch: bool = False,
    filters: Sequence[Filter] = (),
) -> None:
    """Router, correlator and agents as tasks of one process, until ``stop``; the catalog's agents
    by URL too (those not given as Python ``agents``); with ``gateway`` the HTTP gateway too
    (``gateway`` gets its URL once it listens). ``bus``: one to use instead of the broker the
    settings name (the memory bus of an in-process benchmark). ``watch``: the router reloads
    ``settings.router.catalog`` when it changes, and missing or unknown agents are warned about."""
    await create_topics(settings, catalog, bus=bus)
    with one_failure():  # one worker's failure as itself, for the command's exit map
        async with asyncio.TaskGroup() as group:
            group.create_task(run_router(settings, stop, None if watch else catalog, bus=bus))
            if watch:
                from routeyard.consumers.dev.watch import watch_catalog

                group.create_task(watch_catalog(settings, [a.name for a in agents], stop))
            group.create_task(run_correlator(settings, stop, bus=bus))
            for agent in agents:
                group.create_task(run_agent(agent, settings, stop, bus=bus))
            if any(spec.url and spec.name not in {a.name for a in agents} for spec in catalog.agents):
                group.create_task(run_http_agents(settings, catalog, stop, skip={a.name for a in agents}))
            if filters or any(f.kind == "http" for f in catalog.filters):  # the filter worker (issue 17)
                group.create_task(run_filters(settings, catalog, filters, stop, bus=bus))
            if gateway is not None:
                from routeyard.consumers.gateway import run_gateway

                group.create_task(run_gateway(settings, stop, None if watch else catalog, bus=bus, started=gateway))
            if ready is not None:
                group.create_task(_signal_ready(ready, stop))


async def _signal_ready(ready: asyncio.Event, stop: asyncio.Event) -> None:
    # The consumer groups' first join takes ~3 s on tansu and Kafka; give them a moment.
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), 4.0)
    ready.set()


def dev_settings(settings: Settings, catalog_path: Path | None) -> tuple[Settings, Catalog]:
    path = catalog_path or DEMO_CATALOG
    catalog = load_catalog(path)
    router = settings.router.model_copy(update={"catalog": path})
    router = RouterSettings.model_validate(router.model_dump())
    return settings.model_copy(update={"router": router, "log_turns": True}), catalog


__all__ = ["DEMO_CATALOG", "KafkaSettings", "demo_agents", "dev_settings", "embedded_servers", "run_pipeline"]
