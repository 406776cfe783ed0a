"""The ``sim`` engine: a GPU serving Plano-Orchestrator through vLLM, simulated without using the CPU.

Routing decisions come from a wrapped engine (``rules`` by default), so a pipeline on ``sim``
still routes correctly; the simulator only supplies the timing. Each request becomes a job of
the discrete-event model (``sim_model``): its prompt tokens are those of the real Plano prompt
(``PromptBuilder``, Plano's estimate of UTF-8 bytes / 4), its cacheable prefix the catalog part,
its answer 10-30 tokens (fixed per event id). One owned task plays the GPU: it plans a step,
sleeps for the step's modelled cost, and answers the requests the step finished. Every
``decide`` call, concurrent or not, feeds the same running batch, as requests join vLLM's.

It reports its busy fraction (time with at least one request in flight over wall time) and its
ceiling (decisions/s when always full, for the prompt shape seen so far). The clock is
injectable: ``VirtualClock`` runs the model as fast as the CPU goes, for tests and replays.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import time
from collections.abc import Sequence
from dataclasses import replace
from types import TracebackType
from typing import Protocol, Self

import msgspec
from routeyard.router.engines.base import DecisionEngine, EngineBase, EngineResult, RoutingRequest
from routeyard.router.engines.rules import RulesEngine
from routeyard.router.engines.sim_model import Batcher, Job, ceiling
from routeyard.router.engines.sim_profiles import PROFILES, Profile, Shape
from routeyard.router.plano.prompt import TOKEN_BYTES, PromptBuilder

__all__ = ["PROFILES", "Clock", "RealClock", "SimEngine", "VirtualClock", "answer_tokens", "job_for", "sim_profile"]

MAX_LAG_S = 0.05
"""When the event loop runs this late, the lost time is the CPU's, not the GPU's: the simulated
GPU starts its next step now instead of catching up with steps of no duration."""


class Clock(Protocol):
    def now(self) -> float: ...

    async def sleep_until(self, deadline: float) -> None: ...


class RealClock:
    def now(self) -> float:
        return time.monotonic()

    async def sleep_until(self, deadline: float) -> None:
        await asyncio.sleep(max(deadline - time.monotonic(), 0.0))


class VirtualClock:
    """Time that passes only when the simulated GPU sleeps (one sleeper: the engine's step task)."""

    def __init__(self, start: float = 0.0) -> None:
        self.time = start

    def now(self) -> float:
        return self.time

    async def sleep_until(self, deadline: float) -> None:
        self.time = max(self.time, deadline)
        await asyncio.sleep(0)


def answer_tokens(event_id: str) -> int:
    """10-30 tokens, the same for the same event (a JSON route list is about 20)."""
    digest = hashlib.blake2b(event_id.encode(), digest_size=4).digest()
    return 10 + int.from_bytes(digest, "big") % 21


def job_for(request: RoutingRequest, arrival: float, prompts: PromptBuilder | None = None) -> Job:
    """The model's job for a turn: its Plano prompt's tokens, the catalog prefix, its answer length
    (what the engine submits; ``sim_model.replay`` of such jobs gives each turn's ideal latency)."""
    prompts = prompts or PromptBuilder()
    prefix = prompts.prefix(request.agents)
    prompt = prompts.build(request.agents, request.conversation)
    return Job(
        prompt=max(len(prompt.encode()) // TOKEN_BYTES, 1),
        answer=answer_tokens(request.event_id),
        prefix=len(prefix.encode()) // TOKEN_BYTES,
        prefix_key=prefix,
        arrival=arrival,
    )


class SimEngine(EngineBase):
    name = "sim"

    def __init__(
        self,
        profile: Profile,
        inner: DecisionEngine | None = None,
        *,
        clock: Clock | None = None,
        prompts: PromptBuilder | None = None,
    ) -> None:
        self.profile = profile
        self.inner = inner or RulesEngine()
        self.clock = clock or RealClock()
        self._prompts = prompts or PromptBuilder()
        self._batcher = Batcher(profile)
        self._waiters: dict[Job, asyncio.Future[None]] = {}
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._stack = contextlib.AsyncExitStack()
        self._started = self._busy_since = 0.0
        self._busy = 0.0
        self._totals = [0.0, 0.0, 0.0, 0]  # prompt, prefix, answer tokens; requests

    async def __aenter__(self) -> Self:
        await self._stack.enter_async_context(self.inner)
        self._started = self.clock.now()
        self._task = asyncio.create_task(self._run(), name="sim-gpu")
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        for future in self._waiters.values():
            if not future.done():
                future.set_exception(RuntimeError("the sim engine was closed"))
        await self._stack.aclose()

    async def decide(self, requests: Sequence[RoutingRequest]) -> list[EngineResult]:
        if self._task is None:
            raise RuntimeError("the sim engine is not started: use it as `async with engine:`")
        jobs: list[Job] = []
        try:
            jobs += (self._submit(request) for request in requests)
            results = await self.inner.decide(requests)
            await asyncio.gather(*(self._waiters[job] for job in jobs))
        finally:
            self._forget(jobs)
        model = f"sim/{self.profile.name}"
        return [r if r.model else msgspec.structs.replace(r, model=model) for r in results]

    def prefix_cache_hit_rate(self) -> float | None:
        batcher = self._batcher
        return batcher.cached_tokens / batcher.prompt_tokens if batcher.prompt_tokens else None

    def busy_seconds(self) -> float:
        """Time with at least one request in flight, since the engine started."""
        open_s = self.clock.now() - self._busy_since if self._waiters else 0.0
        return self._busy + open_s

    def busy_fraction(self) -> float:
        """``busy_seconds`` over the time since the engine started (0 before any time has passed)."""
        wall = self.clock.now() - self._started
        return min(self.busy_seconds() / wall, 1.0) if wall > 0 else 0.0

    def shape(self) -> Shape:
        """The mean request so far (the profile's reference shape before any)."""
        prompt, prefix, answer, count = self._totals
        return Shape(prompt / count, prefix / count, answer / count) if count else self.profile.reference

    def ceiling(self) -> float:
        """Decisions/s when always full of requests of the mean shape so far."""
        return ceiling(self.profile, self.shape())

    def _submit(self, request: RoutingRequest) -> Job:
        job = job_for(request, self.clock.now(), self._prompts)
        self._batcher.submit(job)
        self._totals = [a + b for a, b in zip(self._totals, (job.prompt, job.prefix, job.answer, 1), strict=True)]
        if not self._waiters:
            self._busy_since = job.arrival
        self._waiters[job] = asyncio.get_running_loop().create_future()
        self._wake.set()
        return job

    def _forget(self, jobs: Sequence[Job]) -> None:
        for job in jobs:
            future = self._waiters.pop(job, None)
            if future is not None and job.done_at is None:  # the caller gave up (gather cancels the futures)
                future.cancel()
                self._batcher.abort(job)
        if jobs and not self._waiters:
            self._busy += self.clock.now() - self._busy_since

    async def _run(self) -> None:
        """The GPU: one step after another while there is work; model time keeps pace with the clock."""
        batcher, clock = self._batcher, self.clock
        deadline = clock.now()
        while True:
            if batcher.idle:
                self._wake.clear()
                await self._wake.wait()
                deadline = clock.now()
                continue
            deadline = max(deadline, clock.now() - MAX_LAG_S)
            step = batcher.plan()
            deadline += batcher.cost(step)
            await clock.sleep_until(deadline)
            for job in batcher.commit(step, deadline):
                future = self._waiters.get(job)
                if future is not None and not future.done():
                    future.set_result(None)


def sim_profile(
    name: str, *, max_num_seqs: int | None = None, max_num_batched_tokens: int | None = None, speed: float = 1.0
) -> Profile:
    """A named profile, with vLLM's budgets overridden where given; ``speed`` 2.0: a GPU twice as fast."""
    if name not in PROFILES:
        raise ValueError(f"unknown sim profile {name!r}; use one of {', '.join(PROFILES)}")
    if speed <= 0:
        raise ValueError(f"sim speed must be positive, got {speed}")
    base = PROFILES[name]
    return replace(
        base,
        max_num_seqs=max_num_seqs or base.max_num_seqs,
        max_num_batched_tokens=max_num_batched_tokens or base.max_num_batched_tokens,
        flops_per_s=base.flops_per_s * speed,
        bytes_per_s=base.bytes_per_s * speed,
        step_overhead_s=base.step_overhead_s / speed,
        seq_overhead_s=base.seq_overhead_s / speed,
    )
