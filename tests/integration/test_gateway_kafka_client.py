"""The Kafka client path the gateway is measured against (bench/gateway.py): concurrent first
calls of one ``RouteyardClient`` start one response reader, not one each (the others leaked
consumers: "Unclosed AIOKafkaConsumer"), on each bus with the real Valkey."""

from __future__ import annotations

import asyncio

from routeyard.consumers.client import RouteyardClient
from routeyard.consumers.kafka.bus import Bus

from tests.integration.stack import Recorder, bus_for, catalog, make_settings, running, spec

CATALOG = catalog(spec("WeatherAgent", "weather"))


async def test_concurrent_first_asks_start_one_reader(bus: Bus, valkey, prefix: str) -> None:
    settings = make_settings(bus, valkey, prefix)
    recorder = Recorder()
    async with running(settings, CATALOG, [recorder.agent("WeatherAgent")]):
        client_bus = bus_for(settings)
        made: list[str | None] = []
        consumer = client_bus.consumer

        def counting(group, topics=()):  # type: ignore[no-untyped-def]
            made.append(group)  # the client's readers have no group (the stack's agents may start some)
            made_one = consumer(group, topics)
            start = made_one.start

            async def slow_start() -> None:  # as a broker's would: the other asks run meanwhile
                await asyncio.sleep(0.05)
                await start()

            made_one.start = slow_start  # type: ignore[method-assign]
            return made_one

        client_bus.consumer = counting  # type: ignore[method-assign]
        try:
            async with RouteyardClient(bus=client_bus, prefix=settings.topic_prefix) as client:
                answers = await asyncio.gather(*(client.ask(f"c{i}", "the weather?", timeout=30) for i in range(4)))
                streamed = [item async for item in client.stream("c-s", "the weather?", timeout=30)]
        finally:
            del client_bus.consumer  # type: ignore[method-assign]
    assert [a.status for a in answers] == ["complete"] * 4
    assert streamed[-1].status == "complete"  # type: ignore[union-attr]
    assert [g for g in made if g is None] == [None, None]  # one response reader, one chunk reader
