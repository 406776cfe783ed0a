"""The agent runtime's bounded concurrency: never more tasks at once than configured, a freed
slot is used at once, and every task is answered."""

from __future__ import annotations

import asyncio
import time
from uuid import uuid4

import pytest

from consumers.agent import agent
from consumers.embedded import EmbeddedBroker, EmbeddedValkey
from schemas import AgentTask
from tests.integration.stack import catalog, make_settings, running, spec

pytestmark = pytest.mark.integration


async def test_concurrency_is_bounded_and_slots_are_reused(broker: EmbeddedBroker, valkey: EmbeddedValkey) -> None:
    settings = make_settings(broker, valkey, f"t{uuid4().hex[:8]}.")
    settings = settings.model_copy(update={"agent": settings.agent.model_copy(update={"concurrency": 2})})
    running_now, peak, started = 0, 0, []

    @agent("SlowAgent", "slow")
    async def slow(task: AgentTask) -> str:
        nonlocal running_now, peak
        running_now += 1
        peak = max(peak, running_now)
        started.append(time.monotonic())
        await asyncio.sleep(0.4)
        running_now -= 1
        return "done"

    async with running(settings, catalog(spec("SlowAgent", "slow")), [slow]) as client:
        events = [client.event(f"c-{i}", "slow please") for i in range(8)]
        responses = await client.ask_many(events, timeout=60)
    assert [r.status for r in responses] == ["complete"] * 8
    assert peak == 2
    # 8 tasks, 2 at a time, 0.4 s each: four waves that follow each other without long gaps.
    waves = sorted(started)
    assert waves[-1] - waves[0] < 0.4 * 3 + 1.0
