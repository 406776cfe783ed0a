"""The engine fallback chain: ask engines in order; a later one decides what an earlier one
could not (it failed a turn, raised, or did not answer in time).

    vllm -> rules -> (the router's default agent)

Each result records the engine that decided it and why the earlier ones did not. ``EngineDead``
is never absorbed: a dead engine must stop the worker.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from types import TracebackType
from typing import Self

import msgspec
from routeyard.router.engines.base import DecisionEngine, EngineDead, EngineResult, RoutingRequest


class FallbackEngine:
    def __init__(self, engines: Sequence[DecisionEngine], *, timeout_s: float | None = None) -> None:
        if not engines:
            raise ValueError("a fallback chain needs at least one engine")
        self.engines = list(engines)
        self.timeout_s = timeout_s
        self.name = self.engines[0].name
        self._stack = contextlib.AsyncExitStack()

    async def __aenter__(self) -> Self:
        for engine in self.engines:  # every engine starts before the worker joins its group
            await self._stack.enter_async_context(engine)
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self._stack.aclose()

    def prefix_cache_hit_rate(self) -> float | None:
        """The first engine's: the one that decides unless it fails."""
        return self.engines[0].prefix_cache_hit_rate()

    async def decide(self, requests: Sequence[RoutingRequest]) -> list[EngineResult]:
        results: list[EngineResult | None] = [None] * len(requests)
        why: list[list[str]] = [[] for _ in requests]
        pending = list(range(len(requests)))
        for engine in self.engines:
            if not pending:
                break
            answers = await self._ask(engine, [requests[i] for i in pending])
            still = []
            for i, answer in zip(pending, answers, strict=True):
                if answer.failed:
                    why[i].append(f"{engine.name}: {answer.error}")
                    results[i] = answer
                    still.append(i)
                else:
                    results[i] = _attributed(answer, engine.name, why[i])
            pending = still
        for i in pending:  # every engine failed: the last failure stands, with the whole story
            failed = results[i]
            assert failed is not None
            results[i] = msgspec.structs.replace(failed, error="; ".join(why[i]), engine=self.engines[-1].name)
        return [r for r in results if r is not None]

    async def _ask(self, engine: DecisionEngine, requests: list[RoutingRequest]) -> list[EngineResult]:
        try:
            async with asyncio.timeout(self.timeout_s):
                return await engine.decide(requests)
        except EngineDead:
            raise
        except TimeoutError:
            error = f"no answer within {self.timeout_s:g}s"
        except Exception as exc:
            error = f"{type(exc).__name__}: {exc}"
        return [EngineResult(error=error) for _ in requests]


def _attributed(result: EngineResult, engine: str, why: list[str]) -> EngineResult:
    return msgspec.structs.replace(result, engine=engine, fallback_reason="; ".join(why) or None)
