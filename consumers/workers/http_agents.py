"""``routeyard worker http-agents``: the catalog's agents by URL, each on its task topic.

One process runs every agent of the catalog that has a ``url:`` in the agent runtime (its own
consumer group per agent, as ``routeyard agent`` does), sharing one HTTP client whose connections
are bounded by ``agent.concurrency`` per agent. See ``routeyard.consumers.agents.http`` for the
contract and how failures are answered.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Collection

from routeyard.consumers.agents.http import bearer_tokens, http_agents, http_client, url_agents
from routeyard.consumers.app import run_agent
from routeyard.consumers.kafka.bus import Bus
from routeyard.consumers.settings import Settings
from routeyard.router.catalog import Catalog, CatalogError

__all__ = ["check_http_agents", "run_http_agents"]

log = logging.getLogger(__name__)


def check_http_agents(catalog: Catalog, source: str = "the catalog") -> None:
    """CatalogError unless the catalog has an agent by URL (and every api_key_env is set)."""
    specs = url_agents(catalog)
    if not specs:
        raise CatalogError(f"{source}: no agent has a url: nothing for http-agents to run")
    bearer_tokens(specs)


async def run_http_agents(
    settings: Settings, catalog: Catalog, stop: asyncio.Event, bus: Bus | None = None, skip: Collection[str] = ()
) -> None:
    """Run every agent by URL of ``catalog`` (but those named in ``skip``) until ``stop``."""
    specs = [spec for spec in url_agents(catalog) if spec.name not in skip]
    async with http_client(settings.agent.concurrency * max(1, len(specs))) as client:
        agents = http_agents(specs, client, max_reply_bytes=settings.agent.max_reply_bytes)
        log.info("http agents: %s", ", ".join(f"{s.name} -> {s.url}" for s in specs))
        async with asyncio.TaskGroup() as group:
            for agent in agents:
                group.create_task(run_agent(agent, settings, stop, bus))
