"""The per-agent metrics the dashboard shows: which agent timed out, and how long each agent
took to answer (task dispatched -> reply recorded by the correlator)."""

from __future__ import annotations

from prometheus_client import REGISTRY
from routeyard.consumers.dev.embedded import EmbeddedValkey
from routeyard.consumers.kafka.bus import Bus

from tests.integration.stack import Recorder, catalog, make_settings, running, spec


def sample(name: str, agent: str) -> float:
    return REGISTRY.get_sample_value(name, {"agent": agent}) or 0.0


async def test_timeouts_and_reply_latency_are_counted_per_agent(bus: Bus, valkey: EmbeddedValkey, prefix: str) -> None:
    settings = make_settings(bus, valkey, prefix)
    fast, slow = f"Fast{prefix[:6]}", f"Slow{prefix[:6]}"
    agents = Recorder()
    stack = catalog(spec(fast, "quick"), spec(slow, "sluggish", timeout="300ms"))
    async with running(settings, stack, [agents.agent(fast, delay=0.2), agents.agent(slow, delay=3)]) as client:
        response = await client.ask("c1", "quick and sluggish please", timeout=20)
    assert ([r.agent for r in response.replies], response.timed_out) == ([fast], [slow])
    assert sample("routeyard_agent_timeouts_total", slow) == 1
    assert sample("routeyard_agent_timeouts_total", fast) == 0
    assert sample("routeyard_agent_reply_seconds_count", fast) == 1
    assert 0.2 <= sample("routeyard_agent_reply_seconds_sum", fast) < 5
    assert sample("routeyard_agent_reply_seconds_count", slow) == 0  # timed out: no reply to time
