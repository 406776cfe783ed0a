"""A dead engine stops the router worker without committing: the turn is answered after a restart."""

from __future__ import annotations

import asyncio
import collections
import time
from collections.abc import Sequence

import msgspec
import pytest
from routeyard.consumers.app import run_router, stores
from routeyard.consumers.stores.circuits import CircuitStore
from routeyard.consumers.workers.router import RouterWorker
from routeyard.router.circuit import Breaker
from routeyard.router.engines.base import EngineBase, EngineDead, EngineResult, RoutingRequest
from routeyard.router.engines.fallback import FallbackEngine
from routeyard.router.engines.rules import RulesEngine
from routeyard.schemas import ConversationEvent, Message, response_decoder

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


async def test_a_probe_claimed_for_a_batch_whose_engine_failed_is_released(
    broker, valkey, prefix, redis_client
) -> None:
    """The circuit gate runs before the engine and may claim a half-open probe; when deciding
    fails, the probe goes back at once instead of blocking the agent for its whole lease."""
    settings = make_settings(broker, valkey, prefix)
    circuits = CircuitStore(redis_client, settings.namespace, settings.circuit)
    opened = Breaker(state="open", failures=5, opened_at=time.time() - 3600)  # cool-down long over
    await redis_client.set(circuits.key("WeatherAgent"), msgspec.json.encode(opened))
    context, store = stores(settings, redis_client)
    worker = RouterWorker(
        settings=settings,
        catalog=CATALOG,
        engine=DiesOnFirstBatch(),
        consumer=None,  # type: ignore[arg-type]  # _route reads and writes Redis only
        producer=None,  # type: ignore[arg-type]
        context=context,
        store=store,
        circuits=circuits,
    )
    claimed = []
    gate = circuits.gate

    async def spy(*args, **kwargs):  # type: ignore[no-untyped-def]
        claimed.append(await gate(*args, **kwargs))
        return claimed[-1]

    circuits.gate = spy  # type: ignore[method-assign]
    event = ConversationEvent(
        event_id="e1", conversation_id="c1", messages=[Message(role="user", content="weather in Oslo?")]
    )
    with pytest.raises(EngineDead):
        await worker._route([event])
    assert claimed[0].unused_probes().keys() == {"WeatherAgent"}  # the gate did claim the probe ...
    after = (await circuits.load(["WeatherAgent"]))["WeatherAgent"]
    assert after.state == "open" and after.probe_at == 0.0  # ... and it was given back
    assert await store.get_many([store.key(None, "c1", "e1")]) == [None]  # nothing stored: redone on redelivery
