"""The pipelined router worker's invariants on the memory bus and tansu: a conversation's later
turn is decided with the earlier one in its context, in-flight work stays bounded, offsets are
committed only past published outcomes, and a turn redelivered after a crash is not dispatched twice."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest
from prometheus_client import REGISTRY
from routeyard.consumers.app import create_topics, run_router
from routeyard.consumers.dev.embedded import EmbeddedValkey
from routeyard.consumers.kafka.bus import Bus
from routeyard.consumers.settings import Settings
from routeyard.router.engines.base import EngineResult, RoutingRequest
from routeyard.router.engines.rules import RulesEngine
from routeyard.schemas import ConversationEvent, Message, decision_decoder, encode, task_decoder

from tests.integration.stack import bus_for, catalog, make_settings, read_all, send, spec

CATALOG = catalog(spec("WeatherAgent", "weather"), spec("MessagingAgent", "text"))


class Watched(RulesEngine):
    """The rules engine, slowed, noting each request's context and the most requests at once."""

    def __init__(self, delay: float = 0.05) -> None:
        super().__init__()
        self.contexts: dict[str, list[str]] = {}
        self.now = self.most = 0
        self.delay = delay
        self.release = asyncio.Event()
        self.release.set()

    async def decide(self, requests: Sequence[RoutingRequest]) -> list[EngineResult]:
        self.now += len(requests)
        self.most = max(self.most, self.now)
        try:
            for r in requests:
                self.contexts[r.event_id] = [m.content for m in r.conversation]
            await asyncio.sleep(self.delay)
            if any(r.event_id.endswith("slow") for r in requests):
                await self.release.wait()
            return await super().decide(requests)
        finally:
            self.now -= len(requests)


def event(eid: str, conversation: str, text: str) -> bytes:
    return encode(
        ConversationEvent(event_id=eid, conversation_id=conversation, messages=[Message(role="user", content=text)])
    )


async def routed(settings: Settings, engine: Watched, stop: asyncio.Event) -> asyncio.Task[None]:
    await create_topics(settings, CATALOG, bus_for(settings))
    return asyncio.create_task(run_router(settings, stop, CATALOG, engine=engine, bus=bus_for(settings)))  # type: ignore[arg-type]


async def decided(settings: Settings, count: int, seconds: float = 30) -> list[str]:
    for _ in range(int(seconds * 4)):
        ids = [
            decision_decoder.decode(v).event_id for v in await read_all(settings, settings.topics.decisions, settle=0.2)
        ]
        if len(ids) >= count:
            return ids
        await asyncio.sleep(0.25)
    return ids


@pytest.fixture
def settings(bus: Bus, valkey: EmbeddedValkey, prefix: str) -> Settings:
    return make_settings(bus, valkey, prefix, pipeline="on", max_in_flight=6)


async def test_a_later_turn_is_decided_with_the_earlier_in_its_context(settings: Settings) -> None:
    engine, stop = Watched(), asyncio.Event()
    worker = await routed(settings, engine, stop)
    try:
        turns = [event(f"a{i}", "conv-a", f"weather {i}") for i in range(4)]
        others = [event(f"b{i}", f"conv-b{i}", "text Anna") for i in range(8)]
        await send(
            settings, settings.topics.conversations, turns + others, ["conv-a"] * 4 + [f"conv-b{i}" for i in range(8)]
        )
        ids = await decided(settings, 12)
    finally:
        stop.set()
        await asyncio.wait_for(worker, 30)
    assert sorted(ids) == sorted([f"a{i}" for i in range(4)] + [f"b{i}" for i in range(8)])
    assert [i for i in ids if i.startswith("a")] == ["a0", "a1", "a2", "a3"]  # published in order
    for i in range(4):  # each turn saw every earlier one, and no later one
        assert engine.contexts[f"a{i}"] == [f"weather {k}" for k in range(i + 1)]
    assert engine.most <= 6  # max_in_flight


def route_totals() -> dict[str, tuple[float, float]]:
    """(count, sum) of each step of the route stage, and of the time it held records ("held")."""
    sample = REGISTRY.get_sample_value
    out = {
        phase: tuple(
            sample(f"routeyard_batch_phase_seconds_{s}", {"stage": "route", "phase": phase}) or 0.0
            for s in ("count", "sum")
        )
        for phase in ("decode", "read", "decide", "store", "publish")
    }
    out["held"] = tuple(sample(f"routeyard_held_seconds_{s}", {"stage": "route"}) or 0.0 for s in ("count", "sum"))
    return out


async def test_each_step_of_a_turn_is_timed(settings: Settings) -> None:
    """Where the pipelined worker's time goes, as the one-batch worker reports it: decode and
    read per fetch, the engine per turn, store and publish per finished group, and every record's
    time held from its fetch to its outcome out."""
    engine, stop = Watched(delay=0.05), asyncio.Event()
    before = route_totals()
    worker = await routed(settings, engine, stop)
    try:
        values = [event(f"e{i}", f"c{i}", "weather") for i in range(10)]
        await send(settings, settings.topics.conversations, values, [f"c{i}" for i in range(10)])
        assert len(set(await decided(settings, 10))) == 10
    finally:
        stop.set()
        await asyncio.wait_for(worker, 30)
    after = route_totals()
    moved = {k: (after[k][0] - before[k][0], after[k][1] - before[k][1]) for k in after}
    assert moved["decide"][0] == 10 and moved["decide"][1] >= 10 * 0.05, moved  # one per turn, the engine's time
    assert moved["held"][0] == 10 and moved["held"][1] >= moved["decide"][1], moved  # held spans its decision
    for phase in ("decode", "read", "store", "publish"):
        assert 1 <= moved[phase][0] <= 10 and moved[phase][1] > 0, (phase, moved)


async def test_in_flight_work_is_bounded(settings: Settings) -> None:
    engine, stop = Watched(delay=0.2), asyncio.Event()
    worker = await routed(settings, engine, stop)
    try:
        values = [event(f"e{i}", f"c{i}", "weather") for i in range(30)]
        await send(settings, settings.topics.conversations, values, [f"c{i}" for i in range(30)])
        ids = await decided(settings, 30)
    finally:
        stop.set()
        await asyncio.wait_for(worker, 30)
    assert len(set(ids)) == 30
    assert 1 < engine.most <= 6  # turns overlapped in the engine, never more than the bound


async def test_commits_wait_for_an_unfinished_turn_and_a_restart_dispatches_once(settings: Settings) -> None:
    engine, stop = Watched(), asyncio.Event()
    engine.release.clear()  # the first turn hangs in the engine
    worker = await routed(settings, engine, stop)
    values = [event("x-slow", "same", "weather"), *(event(f"x{i}", f"k{i}", "text") for i in range(4))]
    keys = ["same"] * 5  # one partition; the later records in other conversations
    await send(settings, settings.topics.conversations, values, keys)
    assert len(await decided(settings, 4)) == 4  # the four after it are out
    worker.cancel()  # a crash: the hanging turn never finished, so nothing past it was committed
    await asyncio.gather(worker, return_exceptions=True)
    engine2, stop2 = Watched(), asyncio.Event()
    worker = await routed(settings, engine2, stop2)
    try:
        ids = await decided(settings, 5)
    finally:
        stop2.set()
        await asyncio.wait_for(worker, 30)
    assert set(engine2.contexts) == {"x-slow"}  # the rest were redelivered and recognised
    assert sorted(ids) == ["x-slow", "x0", "x1", "x2", "x3"]  # redelivered, decided before: not again
    tasks = [task_decoder.decode(v).event_id for v in await read_all(settings, settings.topics.agent("MessagingAgent"))]
    assert sorted(tasks) == ["x0", "x1", "x2", "x3"]
