"""Agent registration on the real broker: an allowed agent started with ``--register`` gets turns
while it heartbeats, and after it is SIGKILLed and its heartbeats stop, its turns go to the
default agent (recorded); a name not allowed is refused with a warning and never routed."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from routeyard.consumers.agents.agent import agent
from routeyard.consumers.dev.embedded import EmbeddedBroker, EmbeddedValkey
from routeyard.consumers.settings import RegistrySettings, Settings
from routeyard.schemas import ConversationResponse, decision_decoder

from tests.integration.stack import Recorder, catalog, make_settings, read_all, running, spec

pytestmark = pytest.mark.integration

TIMEOUT_S = 2.0
PLANNER = """
from routeyard import agent

@agent("PlannerAgent", "Plans trips", register=True, keywords=["plan"])
async def planner(task):
    return "planned"
"""


def _planner(settings: Settings, tmp_path: Path) -> subprocess.Popen[bytes]:
    (tmp_path / "planner.py").write_text(PLANNER)
    env = dict(
        os.environ,
        ROUTEYARD_TOPIC_PREFIX=settings.topic_prefix,
        ROUTEYARD_KAFKA__BOOTSTRAP=settings.kafka.bootstrap,
        ROUTEYARD_KAFKA__PARTITIONS=str(settings.kafka.partitions),
        ROUTEYARD_REDIS__URL=settings.redis.url.get_secret_value(),
        ROUTEYARD_REGISTRY__HEARTBEAT_S="0.3",
    )
    with (tmp_path / "planner.log").open("ab") as out:
        return subprocess.Popen(
            [
                sys.executable,
                "-m",
                "routeyard.consumers.cli",
                "agent",
                "planner.py:planner",
                "--app-dir",
                str(tmp_path),
            ],
            env=env,
            cwd=tmp_path,
            stdout=out,
            stderr=subprocess.STDOUT,
        )


async def test_a_registered_agent_joins_and_leaves_when_its_heartbeats_stop(
    broker: EmbeddedBroker, valkey: EmbeddedValkey, prefix: str, tmp_path: Path, caplog
) -> None:
    settings = make_settings(broker, valkey, prefix)
    registry = RegistrySettings(enabled=True, allow=frozenset({"PlannerAgent"}), timeout_s=TIMEOUT_S)
    settings = settings.model_copy(update={"registry": registry})
    agents = Recorder()
    stray = agent("StrayAgent", "steals trips", register=True, keywords=["plan", "trip"])(lambda task: "stolen")
    entries = catalog({**spec("DefaultAgent"), "default": True}, spec("WeatherAgent", "weather"))
    planner = _planner(settings, tmp_path)
    try:
        async with running(settings, entries, [agents.agent("DefaultAgent"), stray]) as client:
            joined = await _until_answered_by(client, "PlannerAgent", "plan a trip to Oslo")
            planner.send_signal(signal.SIGKILL)
            planner.wait()
            await asyncio.sleep(TIMEOUT_S + 1.0)
            left = await client.ask("after-kill", "plan a trip to Rome", timeout=30)
    finally:
        planner.kill()
        planner.wait()
    assert [r.agent for r in left.replies] == ["DefaultAgent"], (tmp_path / "planner.log").read_text()[-2000:]
    decisions = {
        d.event_id: d for d in map(decision_decoder.decode, await read_all(settings, settings.topics.decisions))
    }
    assert decisions[joined.event_id].routes == ["PlannerAgent"]
    assert decisions[joined.event_id].registered == ["PlannerAgent"]
    after = decisions[left.event_id]
    assert after.routes == ["DefaultAgent"] and after.registered == []
    assert after.fallback_reason == "unavailable: PlannerAgent -> DefaultAgent"
    assert not any("StrayAgent" in d.routes for d in decisions.values())
    assert "refused registration of 'StrayAgent'" in caplog.text


async def _until_answered_by(client, name: str, text: str, timeout: float = 60) -> ConversationResponse:
    async with asyncio.timeout(timeout):
        for i in range(10_000):
            response = await client.ask(f"join-{i}", text, timeout=30)
            if [r.agent for r in response.replies] == [name]:
                return response
            await asyncio.sleep(0.2)
    raise AssertionError("unreachable")
