"""SIGTERM mid-load: a worker stops fetching, finishes and commits the batch in hand, exits 0
within ``lifecycle.shutdown_timeout_s``; its successor loses nothing and answers nothing twice."""

from __future__ import annotations

import asyncio
import collections
import signal
import subprocess
import time
from pathlib import Path

import pytest
import yaml
from routeyard.consumers.dev.embedded import EmbeddedBroker, EmbeddedValkey
from routeyard.router.catalog import load_catalog
from routeyard.schemas import response_decoder

from tests.integration.stack import (
    Recorder,
    make_settings,
    read_all,
    running,
    spec,
    start_worker,
    stream,
    tasks_seen,
)

pytestmark = pytest.mark.integration

CONVERSATIONS = 200
SHUTDOWN_TIMEOUT_S = 10


def start(role: str, settings, catalog_path: Path, log: Path) -> subprocess.Popen[bytes]:
    return start_worker(
        role,
        settings,
        catalog_path,
        log,
        ROUTEYARD_CORRELATOR__MAX_BATCH="8",
        ROUTEYARD_CORRELATOR__SWEEP_INTERVAL_MS="50",
        ROUTEYARD_LIFECYCLE__SHUTDOWN_TIMEOUT_S=str(SHUTDOWN_TIMEOUT_S),
    )


async def _terminate(proc: subprocess.Popen[bytes]) -> tuple[int, float]:
    began = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    code = await asyncio.to_thread(proc.wait, SHUTDOWN_TIMEOUT_S + 10)
    return code, time.monotonic() - began


async def test_sigterm_drains_router_and_correlator_and_exits_zero(
    broker: EmbeddedBroker, valkey: EmbeddedValkey, prefix: str, tmp_path: Path
) -> None:
    settings = make_settings(broker, valkey, prefix)
    catalog_path = tmp_path / "agents.yaml"
    catalog_path.write_text(
        yaml.safe_dump({"agents": [spec("WeatherAgent", "weather"), spec("RestaurantAgent", "table")]})
    )
    catalog = load_catalog(catalog_path)
    agents = Recorder()
    log = tmp_path / "workers.log"
    procs = {role: start(role, settings, catalog_path, log) for role in ("router", "correlator")}
    exits: dict[str, tuple[int, float]] = {}
    try:
        recorders = [agents.agent("WeatherAgent", delay=0.01), agents.agent("RestaurantAgent", delay=0.01)]
        async with running(settings, catalog, recorders, routers=0, correlator=False) as client:
            events = [
                client.event(f"term-{i}", "weather and a table?" if i % 2 else "weather?") for i in range(CONVERSATIONS)
            ]
            streaming = asyncio.create_task(stream(client, events))
            for role, share in (("router", 4), ("correlator", 2)):
                await tasks_seen(agents, CONVERSATIONS // share)
                exits[role] = await _terminate(procs[role])
                procs[role] = start(role, settings, catalog_path, log)
            responses = await streaming
    finally:
        for proc in procs.values():
            proc.kill()
            proc.wait()
    tail = log.read_text()[-3000:]
    for role, (code, took) in exits.items():
        assert code == 0, (role, code, tail)
        assert took < SHUTDOWN_TIMEOUT_S + 5, (role, took)
    assert {r.status for r in responses} == {"complete"}, tail
    on_topic = collections.Counter(
        response_decoder.decode(v).event_id for v in await read_all(settings, settings.topics.responses)
    )
    assert sorted(on_topic) == sorted(e.event_id for e in events)
    assert max(on_topic.values()) == 1, [k for k, n in on_topic.items() if n > 1]
