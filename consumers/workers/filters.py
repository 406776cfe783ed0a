"""``routeyard worker filters [MODULE:OBJ ...]``: the catalog's filters, each on its task topic.

One process runs the ``@filter`` objects given (kind ``python``) and every filter of the catalog
with a ``url`` (kind ``http``, sharing one HTTP client), each in the agent runtime with its own
consumer group on ``<prefix>filter.<name>``. Filters run here, never in the router's engine batch:
a slow filter delays only its own turns.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

from routeyard.consumers.agents.http import http_client
from routeyard.consumers.app import run_runner
from routeyard.consumers.filters.filter import Filter, FilterRunner
from routeyard.consumers.filters.http import filter_tokens, http_filters
from routeyard.consumers.kafka.bus import Bus, Consumer, Producer
from routeyard.consumers.settings import Settings
from routeyard.consumers.stores.marks import TaskMarks
from routeyard.router.catalog import Catalog, CatalogError

__all__ = ["check_filters", "run_filter", "run_filters"]

log = logging.getLogger(__name__)


def check_filters(catalog: Catalog, given: Sequence[Filter], source: str = "the catalog") -> None:
    """CatalogError (one line) when there is nothing to run, a given filter is not a python filter
    of the catalog, or an http filter's api_key_env is unset. Python filters of the catalog not
    given here are only warned about (another filter worker may run them)."""
    python = {f.name for f in catalog.filters if f.kind == "python"}
    unknown = [f.name for f in given if f.name not in python]
    if unknown:
        raise CatalogError(f"{source}: no python filter named {', '.join(unknown)} in the catalog's filters")
    http = [f for f in catalog.filters if f.kind == "http"]
    if not given and not http:
        raise CatalogError(f"{source}: no http filter and no @filter given: nothing for the filter worker to run")
    filter_tokens(http)
    missing = sorted(python - {f.name for f in given})
    if missing:
        log.warning("python filters not run by this worker (run them elsewhere): %s", ", ".join(missing))


async def run_filter(flt: Filter, settings: Settings, stop: asyncio.Event, bus: Bus | None = None) -> None:
    def make(consumer: Consumer, producer: Producer, marks: TaskMarks) -> FilterRunner:
        return FilterRunner(flt, settings=settings, consumer=consumer, producer=producer, marks=marks)

    await run_runner(make, f"filter.{flt.name}", flt.topic or settings.topics.filter(flt.name), settings, stop, bus)


async def run_filters(
    settings: Settings, catalog: Catalog, given: Sequence[Filter], stop: asyncio.Event, bus: Bus | None = None
) -> None:
    """Run the filters given and the catalog's http filters until ``stop``."""
    specs = [f for f in catalog.filters if f.kind == "http"]
    async with http_client(settings.agent.concurrency * max(1, len(specs))) as client:
        filters = [*given, *http_filters(specs, client, max_bytes=settings.agent.max_reply_bytes)]
        log.info("filters: %s", ", ".join(f.name for f in filters))
        async with asyncio.TaskGroup() as group:
            for flt in filters:
                group.create_task(run_filter(flt, settings, stop, bus))
