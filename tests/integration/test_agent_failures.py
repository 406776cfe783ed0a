"""Agent failures on each bus (in memory, and the real broker) with the real Valkey: task
retries, circuit breakers with a fallback agent and a half-open probe, and replies that arrive
after the response."""

from __future__ import annotations

import asyncio
import collections
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import msgspec
import pytest
import redis.asyncio as redis
from prometheus_client import REGISTRY
from routeyard.consumers.agents.agent import Agent, agent
from routeyard.consumers.dev.embedded import EmbeddedValkey
from routeyard.consumers.kafka.bus import Bus, Outgoing
from routeyard.consumers.settings import Settings
from routeyard.consumers.stores.correlations import CorrelationStore, decode_state
from routeyard.consumers.workers.correlator import Correlator
from routeyard.router.circuit import Breaker
from routeyard.schemas import AgentReply, AgentTask, decision_decoder, encode, response_decoder

from tests.integration.stack import catalog, make_settings, publisher, read_all, running, settled, spec


@pytest.fixture
def settings(bus: Bus, valkey: EmbeddedValkey, prefix: str) -> Settings:
    base = make_settings(bus, valkey, prefix)
    return base.model_copy(
        update={
            "retry": base.retry.model_copy(update={"backoff_s": 0.05, "backoff_max_s": 0.2}),
            "circuit": base.circuit.model_copy(update={"threshold": 2, "cooldown_s": 4.0}),
        }
    )


@dataclass
class Flaky:
    """An agent that raises on its first ``failures`` tasks (or while ``broken``), then answers."""

    name: str
    failures: int = 0
    broken: bool = False
    delay: float = 0.0
    tasks: list[AgentTask] = field(default_factory=list)

    def agent(self) -> Agent:
        async def handle(task: AgentTask) -> str:
            self.tasks.append(task)
            await asyncio.sleep(self.delay)
            if self.broken or len(self.tasks) <= self.failures:
                raise RuntimeError(f"{self.name} failed attempt {task.attempt}")
            return f"{self.name} answered attempt {task.attempt}"

        return agent(self.name, f"test agent {self.name}")(handle)


def with_retries(name: str, retries: int, *keywords: str, **extra: object) -> dict[str, object]:
    return {**spec(name, *keywords, timeout="5s"), "retries": retries, **extra}


async def eventually(check: Callable[[], Awaitable[bool]], what: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


def withheld_retries(agent: str) -> float:
    return REGISTRY.get_sample_value("routeyard_circuit_withheld_retries_total", {"agent": agent}) or 0.0


async def responses_for(settings: Settings, event_id: str) -> list[str]:
    values = await read_all(settings, settings.topics.responses)
    return [r.status for r in map(response_decoder.decode, values) if r.event_id == event_id]


async def test_an_agent_that_fails_once_is_retried_and_the_response_is_complete(settings: Settings) -> None:
    weather = Flaky("WeatherAgent", failures=1)
    async with running(settings, catalog(with_retries("WeatherAgent", 2, "weather")), [weather.agent()]) as client:
        response = await client.ask("f1", "weather in Oslo?", timeout=30)
    assert response.status == "complete"
    assert [r.content for r in response.replies] == ["WeatherAgent answered attempt 2"]
    assert [(t.attempt, t.task_id) for t in weather.tasks] == [
        (1, f"{response.event_id}:0:WeatherAgent"),
        (2, f"{response.event_id}:0:WeatherAgent@2"),
    ]
    assert await responses_for(settings, response.event_id) == ["complete"]


async def test_an_agent_that_always_fails_gets_bounded_retries_then_one_partial_response(settings: Settings) -> None:
    weather = Flaky("WeatherAgent", broken=True)
    table = Flaky("RestaurantAgent")
    agents_ = catalog(with_retries("WeatherAgent", 2, "weather"), spec("RestaurantAgent", "table"))
    settings = settings.model_copy(update={"circuit": settings.circuit.model_copy(update={"threshold": 10})})
    async with running(settings, agents_, [weather.agent(), table.agent()]) as client:
        response = await client.ask("f2", "weather, and a table", timeout=30)
        await settled(settings, 0.5)  # nothing more may be sent: the budget is spent
    assert response.status == "partial"
    assert [t.attempt for t in weather.tasks] == [1, 2, 3]
    errors = [r for r in response.replies if r.agent == "WeatherAgent"]
    assert [(r.status, r.task_id) for r in errors] == [("error", f"{response.event_id}:0:WeatherAgent@3")]
    assert await responses_for(settings, response.event_id) == ["partial"]


async def test_no_retry_goes_to_an_agent_whose_breaker_opened(settings: Settings) -> None:
    """Threshold 2: the second failed attempt opens the breaker, so the third is not sent; the
    second attempt's error stands and the response comes without waiting for it."""
    weather = Flaky("WeatherAgent", broken=True)
    agents_ = catalog(with_retries("WeatherAgent", 2, "weather"), spec("RestaurantAgent", "table"))
    before = withheld_retries("WeatherAgent")
    async with running(settings, agents_, [weather.agent(), Flaky("RestaurantAgent").agent()]) as client:
        response = await client.ask("w1", "weather, and a table", timeout=30)
        await settled(settings, 0.5)  # a retry sent late would show here
    assert response.status == "partial"
    assert [t.attempt for t in weather.tasks] == [1, 2]
    errors = [r for r in response.replies if r.agent == "WeatherAgent"]
    assert [(r.status, r.task_id) for r in errors] == [("error", f"{response.event_id}:0:WeatherAgent@2")]
    assert withheld_retries("WeatherAgent") == before + 1
    assert await responses_for(settings, response.event_id) == ["partial"]


async def test_open_breaker_sends_turns_to_the_fallback_and_a_probe_closes_it(
    settings: Settings, redis_client: redis.Redis
) -> None:
    weather = Flaky("WeatherAgent", broken=True)
    lite = Flaky("WeatherLite")
    agents_ = catalog(
        with_retries("WeatherAgent", 0, "weather", fallback="WeatherLite"), with_retries("WeatherLite", 0, "lite")
    )
    key = f"{settings.namespace}:circuit:WeatherAgent"

    async def breaker() -> Breaker:
        raw = await redis_client.get(key)
        return Breaker() if raw is None else msgspec.json.decode(raw, type=Breaker)

    async def state_is(state: str) -> bool:
        return (await breaker()).state == state

    async with running(settings, agents_, [weather.agent(), lite.agent()]) as client:
        for turn in range(2):  # threshold 2: two failed turns open it
            assert (await client.ask(f"b{turn}", "weather?", timeout=30)).status == "failed"
        await eventually(lambda: state_is("open"), "the breaker to open")
        rerouted = await client.ask("b2", "weather?", timeout=30)
        assert rerouted.status == "complete"
        assert [r.agent for r in rerouted.replies] == ["WeatherLite"]
        assert len(weather.tasks) == 2

        weather.broken = False  # the agent recovers; after the cool-down one probe goes to it
        opened_at = (await breaker()).opened_at
        await asyncio.sleep(max(0.0, opened_at + settings.circuit.cooldown_s - time.time()) + 0.1)
        probe = await client.ask("b3", "weather?", timeout=30)
        assert [r.agent for r in probe.replies] == ["WeatherAgent"] and probe.status == "complete"
        await eventually(lambda: state_is("closed"), "the probe to close the breaker")
        after = await client.ask("b4", "weather?", timeout=30)
        assert [r.agent for r in after.replies] == ["WeatherAgent"]

    decisions = {
        d.event_id: d for d in map(decision_decoder.decode, await read_all(settings, settings.topics.decisions))
    }
    moved = decisions[rerouted.event_id]
    assert moved.routes == ["WeatherLite"] and moved.circuit_open == ["WeatherAgent"]
    assert moved.fallback_reason == "circuit open: WeatherAgent -> WeatherLite"
    assert decisions[probe.event_id].circuit_open == [] and decisions[probe.event_id].routes == ["WeatherAgent"]


async def test_a_reply_after_the_response_is_recorded_late_and_not_published_again(
    settings: Settings, redis_client: redis.Redis
) -> None:
    weather = Flaky("WeatherAgent", delay=5.0)  # the runtime cancels it at its 0.5 s deadline
    agents_ = catalog(spec("WeatherAgent", "weather", timeout="500ms"))
    async with running(settings, agents_, [weather.agent()]) as client:
        response = await client.ask("l1", "weather?", timeout=30)
        (task,) = weather.tasks
        late = AgentReply(  # what an agent in another runtime, slower than its deadline, sends
            task_id=task.task_id,
            event_id=task.event_id,
            conversation_id=task.conversation_id,
            agent="WeatherAgent",
            token=task.token,
            content="a second answer, much later",
        )
        async with publisher(settings) as producer:
            await producer.publish([Outgoing(topic=settings.topics.replies, value=encode(late), key="l1")])
        key = CorrelationStore(
            redis_client, settings.namespace, ttl_s=60, lease_s=1, partitions=settings.kafka.partitions
        ).key(None, response.conversation_id, response.event_id)

        async def counted() -> bool:
            raw = await redis_client.get(key)
            return raw is not None and decode_state(raw).late_replies == 1

        await eventually(counted, "the late reply to be counted on the correlation")
    assert (response.status, response.timed_out, response.replies) == ("failed", ["WeatherAgent"], [])
    values = await read_all(settings, settings.topics.responses)
    per_event = collections.Counter(r.event_id for r in map(response_decoder.decode, values))
    assert per_event == {response.event_id: 1}


async def test_an_agent_that_answered_in_time_is_not_timed_out_while_the_correlator_is_behind(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The agents answer at once, but the correlator handles one reply per 0.5 s, so the last
    replies are read long after their 1 s deadlines: its sweeper must wait for them, not report
    the agents timed out (as it did when it judged deadlines by the clock alone)."""
    slow = Correlator._handle

    async def behind(self: Correlator, records) -> None:
        await asyncio.sleep(0.5)
        await slow(self, records)

    monkeypatch.setattr(Correlator, "_handle", behind)
    settings = settings.model_copy(update={"correlator": settings.correlator.model_copy(update={"max_batch": 1})})
    weather = Flaky("WeatherAgent")
    async with running(settings, catalog(spec("WeatherAgent", "weather", timeout="1s")), [weather.agent()]) as client:
        responses = await client.ask_many([client.event(f"b{i}", "weather?") for i in range(5)], timeout=30)
    assert len(weather.tasks) == 5
    assert [(r.status, r.timed_out) for r in responses] == [("complete", [])] * 5
