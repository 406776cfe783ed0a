"""The ``sim`` engine: decisions from its inner engine, timing from the model, on an injectable clock."""

from __future__ import annotations

import asyncio

import pytest
from pydantic import ValidationError
from routeyard.consumers.app import build_engine
from routeyard.consumers.settings import Settings
from routeyard.router.catalog import AgentRules, AgentSpec
from routeyard.router.engines.base import RoutingRequest
from routeyard.router.engines.rules import RulesEngine
from routeyard.router.engines.sim import SimEngine, VirtualClock, answer_tokens, job_for, sim_profile
from routeyard.router.engines.sim_model import replay
from routeyard.schemas import Message

AGENTS = (
    AgentSpec(
        name="WeatherAgent", description="Forecasts and current weather.", rules=AgentRules(keywords=("weather",))
    ),
    AgentSpec(name="FlightAgent", description="Finds and books flights.", rules=AgentRules(keywords=("flight",))),
)
P4 = sim_profile("plano-4b-h100")


def turn(event_id: str, text: str = "what is the weather in Oslo?") -> RoutingRequest:
    return RoutingRequest(event_id=event_id, conversation=[Message(role="user", content=text)], agents=AGENTS)


def engine(clock: VirtualClock | None = None) -> SimEngine:
    return SimEngine(P4, clock=clock or VirtualClock())


async def test_decisions_are_the_inner_engines() -> None:
    requests = [turn("a"), turn("b", "book me a flight to Rome")]
    async with engine() as sim:
        results = await sim.decide(requests)
    expected = await RulesEngine().decide(requests)
    assert [r.routes for r in results] == [r.routes for r in expected] == [["WeatherAgent"], ["FlightAgent"]]
    assert {r.model for r in results} == {"sim/plano-4b-h100"}


async def test_concurrent_calls_join_one_running_batch() -> None:
    clock = VirtualClock()
    async with SimEngine(P4, clock=clock) as sim:
        await asyncio.gather(*(sim.decide([turn(f"e{i}")]) for i in range(16)))
        together = clock.now()
    async with SimEngine(P4, clock=(alone := VirtualClock())) as sim:
        for i in range(16):
            await sim.decide([turn(f"e{i}")])
    assert together < alone.now() / 4  # sixteen one-turn calls shared the GPU's steps


async def test_a_request_takes_as_long_as_the_model_says() -> None:
    clock = VirtualClock()
    async with SimEngine(P4, clock=clock) as sim:
        await sim.decide([turn("only")])
        modelled = replay(P4, [job_for(turn("only"), 0.0)])[0]
        assert modelled.prompt > 100 and modelled.answer == answer_tokens("only")
        assert clock.now() == pytest.approx(modelled.done_at)
        assert sim._batcher.prompt_tokens == modelled.prompt  # the Plano prompt's tokens, as the engine counted


async def test_busy_fraction_counts_time_with_requests_in_flight() -> None:
    clock = VirtualClock()
    async with SimEngine(P4, clock=clock) as sim:
        await sim.decide([turn("a")])
        busy = clock.now()
        clock.time += 3 * busy  # idle for three times as long
        assert sim.busy_seconds() == pytest.approx(busy)
        assert sim.busy_fraction() == pytest.approx(0.25)


async def test_the_ceiling_is_what_a_saturating_load_achieves() -> None:
    clock = VirtualClock()
    completed: list[float] = []

    async def caller(sim: SimEngine, number: int) -> None:
        for i in range(3):
            await sim.decide([turn(f"{number}-{i}")])
            completed.append(clock.now())

    async with SimEngine(P4, clock=clock) as sim:
        await asyncio.gather(*(caller(sim, n) for n in range(2 * P4.max_num_seqs)))
        ceiling = sim.ceiling()
        assert sim.busy_fraction() == pytest.approx(1.0)
    completed.sort()
    window = completed[len(completed) // 4 : 3 * len(completed) // 4]
    measured = (len(window) - 1) / (window[-1] - window[0])
    assert measured == pytest.approx(ceiling, rel=0.05)
    assert ceiling > 100  # a short catalog: far above the notes' 1k-token 173/s is fine, 0 is not


async def test_a_cancelled_call_leaves_the_gpu_and_stops_counting_busy() -> None:
    clock = VirtualClock()
    async with SimEngine(P4, clock=clock) as sim:
        task = asyncio.create_task(sim.decide([turn("gone")]))
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert sim._batcher.idle
        stopped = sim.busy_seconds()
        clock.time += 5
        assert sim.busy_seconds() == stopped


async def test_decide_needs_the_engine_started() -> None:
    with pytest.raises(RuntimeError, match="async with"):
        await SimEngine(P4).decide([turn("a")])


def test_answers_are_10_to_30_tokens_and_fixed_per_event() -> None:
    lengths = [answer_tokens(str(i)) for i in range(2000)]
    assert min(lengths) == 10 and max(lengths) == 30
    assert answer_tokens("x") == answer_tokens("x")


def test_settings_select_the_sim_engine_and_its_profile(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ROUTEYARD_ROUTER__ENGINE", "sim")
    monkeypatch.setenv("ROUTEYARD_SIM__PROFILE", "plano-30b-a3b-h100")
    monkeypatch.setenv("ROUTEYARD_SIM__MAX_NUM_SEQS", "64")
    chain = build_engine(Settings())
    sim = chain.engines[0]
    assert isinstance(sim, SimEngine) and sim.name == "sim"
    assert sim.profile.model == "katanemo/Plano-Orchestrator-30B-A3B" and sim.profile.max_num_seqs == 64


def test_an_unknown_profile_is_refused_at_start(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ROUTEYARD_SIM__PROFILE", "plano-4b-a100")
    with pytest.raises(ValidationError, match="plano-4b-h100"):
        Settings()
