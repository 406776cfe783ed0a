"""``routeyard dev`` watches its catalog: the router worker reloads the file between batches
(``FileSource``), and this task says, at start and after each change, what does not add up:

- a catalog agent with no running consumer (nobody in its ``<prefix>agent.<name>`` group): its
  turns would wait for their timeout;
- an agent running here, or registered and alive, that the catalog does not name (never routed,
  unless the registry admits it).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence

from routeyard.consumers.catalogs.live import FileSource
from routeyard.consumers.kafka.admin import group_members
from routeyard.consumers.settings import Settings
from routeyard.router.catalog import Catalog, CatalogError

log = logging.getLogger(__name__)

SETTLE_S = 5.0
"""Consumer groups take ~3 s to form on tansu: look after this long."""


async def watch_catalog(
    settings: Settings, running: Sequence[str], stop: asyncio.Event, *, interval_s: float = 1.0
) -> None:
    """Until ``stop``: reload the catalog file when it changes and warn about what does not add up.
    ``running``: the agents this process runs (by name)."""
    source = FileSource(settings.router.catalog)
    try:
        await source.start()
    except CatalogError as exc:
        log.warning("%s", exc)
        return
    if await _stopped(stop, SETTLE_S):
        return
    await check_agents(settings, source.catalog, running)
    while not await _stopped(stop, interval_s):
        if await source.refresh():
            print(f"routeyard dev: catalog {source.path} reloaded (version {source.version})", flush=True)
            await check_agents(settings, source.catalog, running)


async def check_agents(settings: Settings, catalog: Catalog, running: Sequence[str]) -> list[str]:
    """Log (WARNING) and return one line per catalog agent without a consumer and per running
    agent the catalog does not name."""
    groups = {f"{settings.topic_prefix}agent.{spec.name}": spec.name for spec in catalog.agents if spec.url is None}
    try:
        members = await group_members(settings.kafka, groups)
    except Exception as exc:  # a check, not a worker: say why and go on
        log.warning("cannot check the agents' consumer groups: %s", exc)
        members = {}
    lines = [
        f"catalog agent {name} has no running consumer (nobody in group {group}): its turns will time out"
        for group, name in groups.items()
        if members.get(group, 1) == 0
    ]
    lines += [
        f"agent {name} is running but not in the catalog: it gets no turns" for name in running if name not in catalog
    ]
    for line in lines:
        log.warning("%s", line)
    return lines


async def _stopped(stop: asyncio.Event, seconds: float) -> bool:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)
    return stop.is_set()
