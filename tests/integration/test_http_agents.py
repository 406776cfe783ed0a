"""Agents by URL through the whole pipeline (router, correlator, the http-agents worker) on each
bus with the real Valkey, against an OpenAI-compatible agent server written here (tests/
integration/agent_server.py): streaming and not, sequential context, 4xx not retried, 5xx
retried, hangs timed out, garbage answered as an error; and the ``routeyard worker http-agents``
command on the real broker."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from routeyard.consumers.app import create_topics
from routeyard.consumers.client import RouteyardClient
from routeyard.consumers.dev.embedded import EmbeddedValkey
from routeyard.consumers.dev.server import run_pipeline
from routeyard.consumers.kafka.bus import Bus
from routeyard.consumers.settings import Settings
from routeyard.consumers.workers.http_agents import run_http_agents
from routeyard.router.catalog import Catalog
from routeyard.schemas import AgentChunk, ConversationResponse

from tests.integration.agent_server import AgentServer, agent_server
from tests.integration.stack import Recorder, bus_for, catalog, make_settings, running, settled, spec, start_worker


@pytest.fixture
def settings(bus: Bus, valkey: EmbeddedValkey, prefix: str) -> Settings:
    base = make_settings(bus, valkey, prefix)
    return base.model_copy(update={"retry": base.retry.model_copy(update={"backoff_s": 0.05, "backoff_max_s": 0.2})})


@pytest.fixture
async def server() -> AsyncIterator[AgentServer]:
    async with agent_server() as running_server:
        yield running_server


def url_spec(name: str, url: str, *keywords: str, **extra: Any) -> dict[str, Any]:
    return {**spec(name, *keywords, timeout=extra.pop("timeout", "10s")), "url": url, **extra}


@contextlib.asynccontextmanager
async def pipeline(settings: Settings, agents: Catalog) -> AsyncIterator[RouteyardClient]:
    """Router and correlator (stack.running), and the http-agents worker as a task beside them."""
    stop = asyncio.Event()
    async with running(settings, agents, []) as client:
        bridge = asyncio.create_task(run_http_agents(settings, agents, stop, bus_for(settings)))
        try:
            yield client
        finally:
            stop.set()
            await asyncio.wait_for(bridge, 30)


def replies(response: ConversationResponse) -> dict[str, tuple[str, str, str | None]]:
    return {r.agent: (r.status, r.content, r.error) for r in response.replies}


async def test_streaming_and_plain_url_agents_answer_one_multi_intent_turn(
    settings: Settings, server: AgentServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BRIDGE_TEST_KEY", "sekrit-token")
    agents = catalog(
        url_spec("Streamer", server.endpoint("/ok"), "weather", api_key_env="BRIDGE_TEST_KEY"),
        url_spec("Plain", server.endpoint("/ok"), "table", stream=False),
    )
    async with pipeline(settings, agents) as client:
        response = await client.ask("h1", "weather, and a table for two", timeout=30)
    assert response.status == "complete"
    assert replies(response) == {
        "Streamer": ("ok", "Streamer: weather, and a table for two", None),
        "Plain": ("ok", "Plain: weather, and a table for two", None),
    }
    seen = {s.body["model"]: s for s in server.calls("/ok")}
    assert (seen["Streamer"].body["stream"], seen["Plain"].body["stream"]) == (True, False)
    assert (seen["Streamer"].authorization, seen["Plain"].authorization) == ("Bearer sekrit-token", None)
    assert seen["Plain"].body["messages"][-1] == {"role": "user", "content": "weather, and a table for two"}
    assert seen["Plain"].body["metadata"]["routeyard_event_id"] == response.event_id


async def test_sequential_agents_see_earlier_replies_as_assistant_messages(
    settings: Settings, server: AgentServer
) -> None:
    agents = catalog(
        url_spec("First", server.endpoint("/ok"), "weather"), url_spec("Second", server.endpoint("/ok"), "table")
    )
    async with pipeline(settings, agents) as client:
        response = await client.ask("h2", "weather then a table", timeout=30, mode="sequential")
    assert response.status == "complete"
    assert replies(response)["Second"][1] == ("Second: weather then a table [after First: First: weather then a table]")


async def test_a_4xx_is_an_error_reply_that_is_not_retried(settings: Settings, server: AgentServer) -> None:
    agents = catalog(url_spec("Gone", server.endpoint("/missing"), "weather", retries=2))
    async with pipeline(settings, agents) as client:
        response = await client.ask("h3", "weather?", timeout=30)
        await settled(settings, 1.0)  # a retry would have gone out by now (backoff 0.05 s)
    assert response.status == "failed"
    assert replies(response) == {"Gone": ("error", "", "HTTP 404 from 127.0.0.1: no such agent here")}
    assert response.replies[0].retriable is False
    assert len(server.calls("/missing")) == 1


async def test_a_5xx_is_retried_per_the_agents_policy(settings: Settings, server: AgentServer) -> None:
    agents = catalog(url_spec("Flaky", server.endpoint("/flaky"), "weather", retries=1, stream=False))
    async with pipeline(settings, agents) as client:
        response = await client.ask("h4", "weather?", timeout=30)
    assert replies(response) == {"Flaky": ("ok", "Flaky: weather?", None)}
    attempts = [s.body["metadata"]["routeyard_attempt"] for s in server.calls("/flaky")]
    assert attempts == ["1", "2"]


async def test_a_hanging_agent_times_out_and_garbage_is_an_error(settings: Settings, server: AgentServer) -> None:
    agents = catalog(
        url_spec("Hangs", server.endpoint("/hang"), "weather", timeout="1s"),
        url_spec("Garbage", server.endpoint("/garbage"), "table"),
        url_spec("LongLine", server.endpoint("/long-line"), "taxi"),
    )
    async with pipeline(settings, agents) as client:
        response = await client.ask("h5", "weather, a table and a taxi", timeout=30)
    assert response.status == "failed"
    assert response.timed_out == ["Hangs"]
    got = replies(response)
    assert got["Garbage"] == ("error", "", "malformed reply from 127.0.0.1: not an OpenAI chat completion")
    assert got["LongLine"] == ("error", "", "an event-stream line from 127.0.0.1 exceeds 65536 bytes")


@pytest.mark.integration
@pytest.mark.parametrize("bus", ["tansu"], indirect=True)
async def test_the_worker_command_bridges_a_plano_agent(
    settings: Settings, server: AgentServer, tmp_path: Path
) -> None:
    path = tmp_path / "agents.yaml"
    agents = {"agents": [url_spec("PlanoAgent", server.endpoint("/ok"), "weather", api_key_env="PLANO_KEY")]}
    path.write_text(yaml.safe_dump(agents))
    worker = start_worker("http-agents", settings, path, tmp_path / "worker.log", PLANO_KEY="k-123")
    try:
        async with running(settings, catalog(*agents["agents"]), []) as client:
            response = await client.ask("h6", "weather in Oslo?", timeout=60)
    finally:
        worker.terminate()
        worker.wait(30)
    assert replies(response) == {"PlanoAgent": ("ok", "PlanoAgent: weather in Oslo?", None)}
    assert [s.authorization for s in server.calls("/ok")] == ["Bearer k-123"]
    assert worker.returncode == 0, (tmp_path / "worker.log").read_text()


@pytest.mark.integration
@pytest.mark.parametrize("bus", ["tansu"], indirect=True)
async def test_dev_runs_url_agents_beside_its_python_agents(settings: Settings, server: AgentServer) -> None:

    agents = catalog(url_spec("ByUrl", server.endpoint("/ok"), "weather"), spec("Local", "table"))
    local = Recorder().agent("Local")
    stop = asyncio.Event()
    await create_topics(settings, agents)  # before the client looks for them
    dev = asyncio.create_task(run_pipeline(settings, agents, [local], stop))
    try:
        async with RouteyardClient(settings.kafka.bootstrap, prefix=settings.topic_prefix) as client:
            response = await client.ask("h7", "weather and a table", timeout=60)
    finally:
        stop.set()
        await asyncio.wait_for(dev, 30)
    assert replies(response) == {
        "ByUrl": ("ok", "ByUrl: weather and a table", None),
        "Local": ("ok", "Local: weather and a table", None),
    }


async def test_a_url_agents_deltas_reach_the_client_as_chunks(settings: Settings, server: AgentServer) -> None:
    agents = catalog(
        url_spec("Streamer", server.endpoint("/ok"), "weather"),
        url_spec("Plain", server.endpoint("/ok"), "table", stream=False),
    )
    async with pipeline(settings, agents) as client:
        items = [item async for item in client.stream("h8", "weather and a table now", timeout=30)]
    chunks = [i for i in items if isinstance(i, AgentChunk)]
    response = items[-1]
    assert isinstance(response, ConversationResponse) and response.status == "complete"
    assert [c.text for c in chunks] == ["Streamer:", " weather", " and", " a", " table", " now"]
    assert [(c.agent, c.seq) for c in chunks] == [("Streamer", n) for n in range(6)]
    assert replies(response)["Streamer"] == ("ok", "Streamer: weather and a table now", None)
    assert replies(response)["Plain"] == ("ok", "Plain: weather and a table now", None)  # whole: no chunks
