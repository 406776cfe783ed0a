"""The pipelined router worker (``router.pipeline: on``) while its consumer group changes mid-stream.

Many conversations talk at once, each turn sent when the previous one's response arrived. Two
pipelined router workers share the partitions; a third joins, then one of the first two leaves:
stopped (its revoke callback finishes and commits what it admitted) or SIGKILLed (a child
process: its uncommitted records are redelivered to the others). Every turn ends as exactly one
response, no agent task is dispatched twice, and each turn is decided with the previous turn's
reply in its context: the agent sees the whole conversation so far, in order.
"""

from __future__ import annotations

import asyncio
import collections
import itertools
import signal
import subprocess
from collections.abc import Sequence
from pathlib import Path

import pytest
import yaml
from routeyard.consumers.app import run_router
from routeyard.consumers.client import RouteyardClient
from routeyard.consumers.dev.embedded import EmbeddedBroker, EmbeddedValkey
from routeyard.consumers.kafka.bus import Bus
from routeyard.consumers.settings import Settings
from routeyard.router.catalog import load_catalog
from routeyard.router.engines.base import EngineResult, RoutingRequest
from routeyard.router.engines.rules import RulesEngine
from routeyard.schemas import AgentTask, ConversationResponse, decision_decoder, response_decoder

from tests.integration.stack import Recorder, bus_for, joined, make_settings, read_all, running, spec, start_worker
from tests.integration.stack import catalog as make_catalog

MIN_TURNS = 3


class Slow(RulesEngine):
    """The rules engine with a little latency per call, so turns overlap in the pipeline."""

    async def decide(self, requests: Sequence[RoutingRequest]) -> list[EngineResult]:
        await asyncio.sleep(0.02)
        return await super().decide(requests)


class Talk:
    """Conversations that each take turns until ``enough`` is set (and at least ``MIN_TURNS``)."""

    def __init__(self, client: RouteyardClient, conversations: int, tag: str) -> None:
        self.client, self.enough = client, asyncio.Event()
        self.sent: dict[str, list[str]] = {f"{tag}-{i}": [] for i in range(conversations)}
        self.responses: list[ConversationResponse] = []

    async def run(self) -> None:
        await asyncio.gather(*(self._converse(c) for c in self.sent))

    async def _converse(self, conversation: str) -> None:
        turns = self.sent[conversation]
        while len(turns) < MIN_TURNS or not self.enough.is_set():
            text = f"weather {conversation} turn {len(turns)}"
            turns.append(text)
            self.responses.append(await self.client.ask(conversation, text, timeout=60))

    def total(self) -> int:
        return sum(len(t) for t in self.sent.values())


async def _progress(talk: Talk, more: int, timeout: float = 120) -> None:
    target = len(talk.responses) + more
    async with asyncio.timeout(timeout):
        while len(talk.responses) < target:
            await asyncio.sleep(0.02)


async def _deciders(settings: Settings, count: int, timeout: float = 90) -> None:
    async with asyncio.timeout(timeout):
        while True:
            decisions = await read_all(settings, settings.topics.decisions, settle=0.2)
            if len({decision_decoder.decode(v).worker for v in decisions}) >= count:
                return
            await asyncio.sleep(0.05)  # on the memory bus read_all may not yield: let the workers run


def _assert_once_and_in_order(talk: Talk, agents: Recorder, responses_on_topic: list[bytes]) -> None:
    assert {r.status for r in talk.responses} == {"complete"}
    assert len(talk.responses) == talk.total()
    on_topic = collections.Counter(response_decoder.decode(v).event_id for v in responses_on_topic)
    assert sorted(on_topic) == sorted(r.event_id for r in talk.responses)
    assert max(on_topic.values()) == 1, [k for k, n in on_topic.items() if n > 1]
    tasks = agents.tasks["WeatherAgent"]
    assert max(collections.Counter(t.task_id for t in tasks).values()) == 1
    assert sorted(t.event_id for t in tasks) == sorted(on_topic)  # one task per turn, none twice
    for task in tasks:
        _assert_context(task, talk.sent[task.conversation_id])


def _assert_context(task: AgentTask, sent: list[str]) -> None:
    """The task's context: the latest earlier turns (as the context limits keep them), each
    followed by its reply, then this turn."""
    users = [m.content for m in task.messages if m.role == "user"]
    turn = sent.index(users[-1])
    assert users == sent[turn + 1 - len(users) : turn + 1], (task.conversation_id, users)
    replies = [m.content for m in task.messages if m.role == "assistant"]
    assert min(turn, 1) <= len(replies) <= turn, (task.conversation_id, turn, replies)
    assert replies == [f"WeatherAgent: {text}" for text in sent[turn - len(replies) : turn]], task.conversation_id
    roles = [m.role for m in task.messages]
    assert roles[-1] == "user" and all(a != b for a, b in itertools.pairwise(roles)), roles


def _settings(broker: EmbeddedBroker | Bus, redis: EmbeddedValkey, prefix: str) -> Settings:
    return make_settings(broker, redis, prefix, pipeline="on", max_in_flight=16)


async def test_a_third_worker_joins_and_one_stops_mid_stream(bus: Bus, valkey: EmbeddedValkey, prefix: str) -> None:
    await stop_one_mid_stream(_settings(bus, valkey, prefix))


async def stop_one_mid_stream(settings: Settings) -> None:
    """In-process workers: a third joins, then the first is stopped (its partitions revoked)."""
    catalog = make_catalog(spec("WeatherAgent", "weather"))
    agents, group = Recorder(), f"{settings.topic_prefix}router"
    stops = [asyncio.Event() for _ in range(3)]
    workers: list[asyncio.Task[None]] = []

    def start(i: int) -> None:
        workers.append(
            asyncio.create_task(run_router(settings, stops[i], catalog, engine=Slow(), bus=bus_for(settings)))
        )

    try:
        async with running(settings, catalog, [agents.agent("WeatherAgent")], routers=0) as client:
            start(0), start(1)
            await joined(settings, group, 2, 4)
            talk = Talk(client, 24, "stop")
            talking = asyncio.create_task(talk.run())
            await _progress(talk, 30)
            start(2)
            await joined(settings, group, 3, 4)
            await _deciders(settings, 3)  # the joiner took partitions while the turns flow
            await _progress(talk, 30)
            stops[0].set()
            await asyncio.wait_for(workers[0], 30)  # left cleanly: its admitted turns finished, committed
            await joined(settings, group, 2, 4)
            await _progress(talk, 30)
            talk.enough.set()
            await asyncio.wait_for(talking, 120)
    finally:
        for s in stops:
            s.set()
        await asyncio.wait_for(asyncio.gather(*workers, return_exceptions=True), 30)
    for w in workers:
        w.result()
    _assert_once_and_in_order(talk, agents, await read_all(settings, settings.topics.responses))


@pytest.mark.integration
async def test_a_third_worker_joins_and_one_is_killed_mid_stream(
    broker: EmbeddedBroker, valkey: EmbeddedValkey, prefix: str, tmp_path: Path
) -> None:
    await kill_one_mid_stream(broker, valkey, prefix, tmp_path)


async def kill_one_mid_stream(broker: EmbeddedBroker, redis: EmbeddedValkey, prefix: str, tmp_path: Path) -> None:
    """Child processes on the simulated GPU: a third joins, then the first is SIGKILLed."""
    settings = _settings(broker, redis, prefix)
    catalog_path = tmp_path / "agents.yaml"
    catalog_path.write_text(yaml.safe_dump({"agents": [spec("WeatherAgent", "weather")]}))
    agents, log = Recorder(), tmp_path / "routers.log"
    env = {
        "ROUTEYARD_ROUTER__ENGINE": "sim",
        "ROUTEYARD_ROUTER__PIPELINE": "on",
        "ROUTEYARD_ROUTER__MAX_IN_FLIGHT": "16",
        "ROUTEYARD_SIM__PROFILE": "plano-30b-a3b-h100",  # tens of ms a decision: turns in flight at the kill
        "ROUTEYARD_LOG_LEVEL": "INFO",
    }
    procs: list[subprocess.Popen[bytes]] = []
    try:
        async with running(settings, load_catalog(catalog_path), [agents.agent("WeatherAgent")], routers=0) as client:
            procs += [start_worker("router", settings, catalog_path, log, **env) for _ in range(2)]
            talk = Talk(client, 48, "kill")
            talking = asyncio.create_task(talk.run())
            await _progress(talk, 30)
            procs.append(start_worker("router", settings, catalog_path, log, **env))
            await _deciders(settings, 3)  # the group rebalanced: the joiner decides turns too
            await _progress(talk, 30)
            procs[0].send_signal(signal.SIGKILL)
            await asyncio.to_thread(procs[0].wait)
            await _progress(talk, 30)  # the survivors take its partitions after the session timeout
            talk.enough.set()
            await asyncio.wait_for(talking, 120)
    finally:
        for p in procs:
            p.kill()
            p.wait()
    _assert_once_and_in_order(talk, agents, await read_all(settings, settings.topics.responses))
    decisions = [decision_decoder.decode(v) for v in await read_all(settings, settings.topics.decisions)]
    assert {d.engine for d in decisions} == {"sim"}, log.read_text()[-3000:]
    assert len({d.worker for d in decisions}) == 3, log.read_text()[-3000:]  # the joiner took partitions
