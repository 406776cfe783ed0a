"""The catalog a worker decides with, checked between batches (never mid-batch).

    StaticSource   a catalog given in code (tests, embedding): never changes
    FileSource     ``ROUTEYARD_ROUTER__CATALOG=path``: reloaded when the file's mtime or size
                   changes and its text hash differs; a bad edit is logged and the old catalog kept
    TopicSource    ``ROUTEYARD_ROUTER__CATALOG=topic:``: the last valid version on ``<prefix>catalog``
    LiveCatalog    a source plus the registered agents alive now (``ROUTEYARD_REGISTRY__ENABLED``)

``refresh()`` costs a ``stat`` (file) or a look at what the consumer already fetched (topic): the
topic's consumer fetches in the background, so a published version is in effect from the first
batch that starts after it arrived.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Protocol

from routeyard.consumers.catalogs.published import CatalogReader, catalog_topic
from routeyard.consumers.catalogs.registry import RegistryReader
from routeyard.consumers.kafka.bus import Bus
from routeyard.consumers.settings import Settings
from routeyard.router.catalog import Catalog, CatalogError, catalog_from_text
from routeyard.router.registry import merge

log = logging.getLogger(__name__)

TOPIC = "topic:"
"""The ``router.catalog`` value that reads the catalog topic."""


class CatalogSource(Protocol):
    kind: str
    catalog: Catalog
    version: str

    async def start(self) -> None: ...
    async def stop(self) -> None: ...
    async def refresh(self) -> bool:
        """Take a newer catalog if there is one; True when the catalog changed."""


class StaticSource:
    kind = "file"

    def __init__(self, catalog: Catalog) -> None:
        self.catalog = catalog
        self.version = catalog.version

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        return None

    async def refresh(self) -> bool:
        return False


class FileSource:
    kind = "file"

    def __init__(self, path: Path) -> None:
        self.path = path
        self._seen: tuple[int, int] | None = None
        self._digest = ""
        self.catalog: Catalog
        self.version = ""

    async def start(self) -> None:
        if not await self.refresh():  # at boot a bad catalog is fatal, with every problem listed
            raise CatalogError(f"cannot read agent catalog {self.path}")

    async def stop(self) -> None:
        return None

    async def refresh(self) -> bool:
        try:
            stat = self.path.stat()
            if (stat.st_mtime_ns, stat.st_size) == self._seen:
                return False
            self._seen = (stat.st_mtime_ns, stat.st_size)
            text = self.path.read_text(encoding="utf-8")
        except OSError as exc:
            if not self.version:
                raise CatalogError(f"cannot read agent catalog {self.path}: {exc.strerror}") from None
            log.warning("catalog %s unreadable, keeping version %s: %s", self.path, self.version, exc.strerror)
            return False
        digest = hashlib.sha256(text.encode()).hexdigest()
        if digest == self._digest:
            return False
        try:
            catalog = catalog_from_text(text, source=str(self.path))
        except CatalogError as exc:
            if not self.version:
                raise
            log.warning(
                "catalog %s changed but is invalid, keeping version %s: %s",
                self.path,
                self.version,
                str(exc).replace("\n", "; "),
            )
            return False
        self._digest, self.catalog, self.version = digest, catalog, catalog.version
        return True


class TopicSource:
    kind = "topic"

    def __init__(self, bus: Bus, prefix: str) -> None:
        self._reader = CatalogReader(bus, catalog_topic(prefix))
        self.catalog: Catalog
        self.version = ""

    async def start(self) -> None:
        await self._reader.start()
        found = await self._reader.catch_up()
        if found is None:
            await self._reader.stop()
            raise CatalogError(
                f"no valid catalog published on {self._reader.topic}: run 'routeyard catalog publish FILE' first"
            )
        self.catalog, self.version = found.catalog, found.version

    async def stop(self) -> None:
        await self._reader.stop()

    async def refresh(self) -> bool:
        found = await self._reader.poll()
        if found is None or found.version == self.version:
            return False
        self.catalog, self.version = found.catalog, found.version
        return True


def source_for(settings: Settings, bus: Bus, catalog: Catalog | None = None) -> CatalogSource:
    if catalog is not None:
        return StaticSource(catalog)
    if str(settings.router.catalog) == TOPIC:
        return TopicSource(bus, settings.topic_prefix)
    return FileSource(settings.router.catalog)


Prepare = Callable[[Catalog], Awaitable[None]]
"""What a process does before a new catalog takes effect (the router: create its agents' topics);
when it fails, the old catalog stays in effect and the next refresh tries again."""


class LiveCatalog:
    """``catalog``: the source's catalog plus the allowed registered agents seen; ``unavailable``:
    the registered ones whose instances all stopped heartbeating."""

    def __init__(
        self, source: CatalogSource, registry: RegistryReader | None = None, prepare: Prepare | None = None
    ) -> None:
        self.source = source
        self._registry = registry
        self._prepare = prepare
        self.catalog: Catalog
        self.version = ""
        self._base: Catalog
        self.registered: tuple[str, ...] = ()
        self.unavailable: frozenset[str] = frozenset()
        self._merged_from: tuple[str, int] = ("", -1)
        self._failed = ""

    async def start(self) -> None:
        await self.source.start()
        self._base, self.version = self.source.catalog, self.source.version
        if self._registry is not None:
            await self._registry.start()
            await self._registry.poll(timeout_ms=200)
        self._merge()

    async def stop(self) -> None:
        if self._registry is not None:
            await self._registry.stop()
        await self.source.stop()

    async def refresh(self) -> None:
        """Between batches: a newer catalog version, and the registry's news."""
        await self.source.refresh()
        if self.source.version != self.version:
            await self._take(self.source.catalog, self.source.version)
        if self._registry is not None:
            await self._registry.poll()
        self._merge()

    async def _take(self, catalog: Catalog, version: str) -> None:
        try:
            if self._prepare is not None:
                await self._prepare(catalog)
        except Exception as exc:  # the catalog in effect stays; the next batch tries again
            if self._failed != version:
                log.warning("catalog version %s not taken, keeping %s: %s", version, self.version, exc)
            self._failed = version
            return
        self._base, self.version = catalog, version
        log.info("catalog version %s in effect (%s, %d agents)", version, self.source.kind, len(catalog.agents))

    def _merge(self) -> None:
        roster = self._registry.roster if self._registry is not None else None
        key = (self.version, roster.revision if roster is not None else 0)
        if key != self._merged_from:
            try:
                self.catalog, self.registered = merge(self._base, roster.specs if roster else {})
            except ValueError as exc:  # registered agents that cannot join: the catalog alone
                log.warning("registered agents not merged: %s", exc)
                self.catalog, self.registered = self._base, ()
            self._merged_from = key
        alive = roster.alive(time.time()) if roster is not None else frozenset()
        self.unavailable = frozenset(name for name in self.registered if name not in alive)


async def follow(
    source: CatalogSource, on_change: Callable[[Catalog], None], stop: asyncio.Event, interval_s: float = 1.0
) -> None:
    """For processes without batches (the gateway): check ``source`` every ``interval_s`` until
    ``stop``; ``on_change`` gets each newer catalog."""
    while not stop.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), interval_s)
        try:
            if not stop.is_set() and await source.refresh():
                log.info("catalog version %s in effect (%s)", source.version, source.kind)
                on_change(source.catalog)
        except Exception as exc:  # the catalog in effect stays; try again next time
            log.warning("catalog not refreshed, keeping version %s: %s", source.version, exc)
