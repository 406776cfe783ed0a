"""A live catalog on the real broker: versions published while two router workers are under load
take effect between batches on both, without losing or redoing a turn; a bad catalog is refused at
publish time, and a record that does not validate never reaches a worker."""

from __future__ import annotations

import asyncio
import collections
import time
from pathlib import Path

import msgspec
import pytest
import yaml
from routeyard.consumers.app import run_router
from routeyard.consumers.catalogs.published import catalog_topic, publish_catalog
from routeyard.consumers.cli.main import main
from routeyard.consumers.dev.embedded import EmbeddedBroker, EmbeddedValkey
from routeyard.consumers.kafka.aio import KafkaBus
from routeyard.consumers.workers.router import RouterWorker
from routeyard.router.catalog import catalog_from_text
from routeyard.schemas import decision_decoder, response_decoder

from tests.integration.stack import Recorder, make_settings, read_all, running, send, spec

pytestmark = pytest.mark.integration

AFTER = 120
"""Turns sent after the publish was acknowledged."""
T = "60s"
"""Deadlines far above a turn's time on a slow runner: this test is about catalogs, not timeouts."""
V1 = {"agents": [spec("WeatherAgent", "weather", timeout=T), {**spec("DefaultAgent", timeout=T), "default": True}]}
V2 = {"agents": [*V1["agents"], spec("NewsAgent", "news", timeout=T)]}


def _text(data: dict[str, object]) -> str:
    return yaml.safe_dump(data, sort_keys=False)


async def test_a_catalog_published_under_load_takes_effect_on_both_workers(
    broker: EmbeddedBroker, valkey: EmbeddedValkey, prefix: str, monkeypatch: pytest.MonkeyPatch, caplog
) -> None:
    settings = make_settings(broker, valkey, prefix, catalog="topic:", max_batch=8)
    bus = KafkaBus(settings.kafka)
    topic = catalog_topic(prefix)
    first = await publish_catalog(bus, topic, _text(V1), source="v1")
    batches: list[tuple[str, float, str]] = []  # (worker, started, version used)
    swap = RouterWorker._swap_catalog

    async def recorded(self: RouterWorker) -> None:
        await swap(self)
        batches.append((self.worker_id, time.time(), self._catalog_version))

    monkeypatch.setattr(RouterWorker, "_swap_catalog", recorded)
    agents = Recorder()
    names = ("WeatherAgent", "DefaultAgent", "NewsAgent")
    stop = asyncio.Event()
    async with running(settings, first.catalog, [agents.agent(n) for n in names], routers=0) as client:
        routers = [asyncio.create_task(run_router(settings, stop, bus=bus)) for _ in range(2)]
        try:
            events: list = []
            published_ = asyncio.Event()
            load = asyncio.create_task(_stream(client, events, published_))
            await _until(
                lambda: len({w for w, _, _ in batches}) == 2 and len(agents.tasks.get("WeatherAgent", [])) > 40
            )
            await send(
                settings, topic, [msgspec.json.encode({"text": "agents: []", "version": 99, "hash": "x"})], ["catalog"]
            )
            published = time.time()
            second = await publish_catalog(bus, topic, _text(V2), source="v2")
            acked = time.time()
            published_.set()
            responses = [r for chunk in await load for r in chunk]
        finally:
            stop.set()
            await asyncio.gather(*routers)
    assert second.version == f"2:{catalog_from_text(_text(V2)).version}"
    unfinished = [(r.event_id, r.status, r.timed_out, r.reason) for r in responses if r.status != "complete"]
    assert not unfinished, unfinished
    on_topic = collections.Counter(
        response_decoder.decode(v).event_id for v in await read_all(settings, settings.topics.responses)
    )
    assert sorted(on_topic) == sorted(e.event_id for e in events) and max(on_topic.values()) == 1
    decisions = [decision_decoder.decode(v) for v in await read_all(settings, settings.topics.decisions)]
    assert collections.Counter(d.event_id for d in decisions) == collections.Counter(e.event_id for e in events)
    assert {d.catalog_version for d in decisions} == {first.version, second.version}
    assert {d.catalog_source for d in decisions} == {"topic"}
    news = [d for d in decisions if "NewsAgent" in d.routes]
    assert news and {d.catalog_version for d in news} == {second.version}
    workers = {w for w, _, _ in batches}
    assert len(workers) == 2
    for worker in sorted(workers):
        mine = sorted((at, v) for w, at, v in batches if w == worker)
        versions = [v for _, v in mine]
        switched = versions.index(second.version)
        assert set(versions[:switched]) == {first.version} and set(versions[switched:]) == {second.version}
        old_after = sum(1 for at, v in mine if at > acked and v == first.version)
        took = mine[switched][0] - acked
        print(
            f"\ncatalog propagation on {worker}: {took * 1000:.0f} ms after the publish was acknowledged "
            f"({(mine[switched][0] - published) * 1000:.0f} ms after it began), {old_after} batch(es) "
            f"with the old version after the ack"
        )
        assert took < 3.0 and old_after <= 3
    assert "ignoring catalog record" in caplog.text


def test_a_bad_catalog_is_refused_and_nothing_is_published(
    broker: EmbeddedBroker, valkey: EmbeddedValkey, prefix: str, tmp_path: Path, capsys
) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(_text({"agents": [{"name": "A", "description": "", "timeout": "forever"}]}))
    good = tmp_path / "good.yaml"
    good.write_text(_text(V1))
    flags = ["--bootstrap", broker.bootstrap, "--prefix", prefix]
    assert main(["catalog", "publish", str(bad), *flags]) == 2
    err = capsys.readouterr().err
    assert "description" in err and "timeout" in err and "Traceback" not in err
    settings = make_settings(broker, valkey, prefix)
    asyncio.run(KafkaBus(settings.kafka).create_topics({catalog_topic(prefix): 1}))
    assert asyncio.run(read_all(settings, catalog_topic(prefix))) == []
    assert main(["catalog", "publish", str(good), *flags]) == 0
    assert main(["catalog", "publish", str(good), *flags]) == 0
    out = capsys.readouterr().out
    assert "published version 1:" in out and "published version 2:" in out


async def _stream(client, events: list, published: asyncio.Event, chunk: int = 4, pause: float = 0.03):
    """A stream of turns (``chunk`` every ``pause`` s) until ``AFTER`` turns after the publish."""
    asks, after = [], 0
    while after < AFTER:
        new = [
            client.event(f"live-{len(events) + i}", "news and weather?" if i % 2 else "weather?") for i in range(chunk)
        ]
        events += new
        asks.append(asyncio.create_task(client.ask_many(new, timeout=120)))
        after += chunk if published.is_set() else 0
        await asyncio.sleep(pause)
    return await asyncio.gather(*asks)


async def _until(condition, timeout: float = 60) -> None:
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.05)
