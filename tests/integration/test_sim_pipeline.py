"""The pipeline on the simulated GPU engine (``ROUTEYARD_ROUTER__ENGINE=sim``): turns route end to
end on the memory bus and the real Valkey, decided by the inner rules engine, timed by the model."""

from __future__ import annotations

import time

import pytest
from prometheus_client import REGISTRY
from routeyard.consumers.dev.embedded import EmbeddedValkey
from routeyard.consumers.kafka.memory import MemoryBus
from routeyard.router.settings import SimSettings
from routeyard.schemas import decision_decoder

from tests.integration.stack import Recorder, catalog, make_settings, read_all, running, spec

CATALOG = catalog(spec("WeatherAgent", "weather", "forecast"), spec("MessagingAgent", "text", "message"))


@pytest.mark.memory
async def test_turns_route_end_to_end_on_the_simulated_gpu(valkey: EmbeddedValkey, prefix: str) -> None:
    settings = make_settings(MemoryBus(), valkey, prefix, engine="sim")
    settings = settings.model_copy(update={"sim": SimSettings(profile="plano-30b-a3b-h100")})
    agents = Recorder()
    async with running(settings, CATALOG, [agents.agent("WeatherAgent"), agents.agent("MessagingAgent")]) as client:
        started = time.perf_counter()
        first = await client.ask("c1", "What's the weather in Paris?", timeout=30)
        second = await client.ask("c1", "and text Anna about it", timeout=30)
        elapsed = time.perf_counter() - started
        busy = REGISTRY.get_sample_value("routeyard_engine_busy_ratio")
        ceiling = REGISTRY.get_sample_value("routeyard_engine_ceiling_decisions_per_second")
    assert (first.status, first.routes) == ("complete", ["WeatherAgent"])
    assert (second.status, second.routes) == ("complete", ["MessagingAgent"])
    decisions = [decision_decoder.decode(v) for v in await read_all(settings, settings.topics.decisions)]
    assert [(d.routes, d.engine, d.model) for d in decisions] == [
        (["WeatherAgent"], "sim", "sim/plano-30b-a3b-h100"),
        (["MessagingAgent"], "sim", "sim/plano-30b-a3b-h100"),
    ]
    assert elapsed > 2 * 0.03  # each decision slept at least a 30B prefill and ten decode steps
    assert busy is not None and 0 < busy < 1
    assert ceiling is not None and ceiling > 100  # a two-agent catalog: short prompts
