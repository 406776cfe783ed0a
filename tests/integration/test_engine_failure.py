"""A dead engine stops the router worker without committing: the turn is answered after a restart."""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Sequence

import pytest

from consumers.app import run_router
from router.engine import EngineBase, EngineDead, EngineResult, RoutingRequest
from router.fallback import FallbackEngine
from router.rules import RulesEngine
from schemas import response_decoder
from tests.integration.stack import Recorder, catalog, make_settings, read_all, running, spec

pytestmark = pytest.mark.integration

CATALOG = catalog(spec("WeatherAgent", "weather"))


class DiesOnFirstBatch(EngineBase):
    name = "vllm"

    def __init__(self) -> None:
        self.batches = 0

    async def decide(self, requests: Sequence[RoutingRequest]) -> list[EngineResult]:
        self.batches += 1
        raise EngineDead("engine core process died")


async def test_dead_engine_exits_the_worker_and_loses_nothing(broker, valkey, prefix) -> None:
    settings = make_settings(broker, valkey, prefix)
    dead = DiesOnFirstBatch()
    agents = Recorder()
    async with running(settings, CATALOG, [agents.agent("WeatherAgent")], routers=0) as client:
        event = client.event("c1", "weather in Oslo?")
        stop = asyncio.Event()
        router = asyncio.create_task(run_router(settings, stop, CATALOG, FallbackEngine([dead, RulesEngine()])))
        answer = asyncio.create_task(client.ask_many([event], timeout=60))  # published once, here
        with pytest.raises(EngineDead):  # not absorbed by the fallback chain: the process must exit
            await asyncio.wait_for(router, 30)
        assert dead.batches == 1 and agents.tasks == {}
        # the supervisor restarts the worker (here with a working engine): the turn was not committed
        stop = asyncio.Event()
        restarted = asyncio.create_task(run_router(settings, stop, CATALOG, FallbackEngine([RulesEngine()])))
        try:
            (response,) = await answer
        finally:
            stop.set()
            await restarted
    assert response.status == "complete" and response.routes == ["WeatherAgent"]
    on_topic = collections.Counter(
        response_decoder.decode(v).event_id for v in await read_all(settings, settings.topics.responses)
    )
    assert on_topic == {event.event_id: 1}
