"""A gateway for a flow test: ``run_gateway`` as a task on the test's stack, on a free port."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

from routeyard.consumers.gateway import run_gateway
from routeyard.consumers.settings import Settings
from routeyard.router.catalog import Catalog

from tests.integration.stack import bus_for

KEYS = {"key-acme-0001": "acme", "key-beta-0002": "beta"}


def with_gateway(settings: Settings, **gateway: Any) -> Settings:
    """``settings`` with a gateway section: the two test keys, a free port, and ``gateway``."""
    keys = ",".join(f"{k}:{t}" for k, t in KEYS.items())
    cfg = {"port": 0, "api_keys": keys, "instance": "t1"} | gateway
    return settings.model_copy(update={"gateway": type(settings.gateway).model_validate(cfg)})


@contextlib.asynccontextmanager
async def gateway(settings: Settings, catalog: Catalog) -> AsyncIterator[str]:
    """The gateway's base URL while it runs."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    url: asyncio.Future[str] = loop.create_future()
    task = asyncio.create_task(run_gateway(settings, stop, catalog, bus=bus_for(settings), started=url.set_result))
    await asyncio.wait([task, url], return_when=asyncio.FIRST_COMPLETED)
    if task.done():
        task.result()
    try:
        yield url.result()
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)
