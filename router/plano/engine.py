"""The Plano-Orchestrator engine: prompts in Plano's contract, one batch to a text generator,
answers parsed and validated.

The generator is the swappable transport (in-process vLLM, an OpenAI-compatible server, ...):
it receives every prompt of a batch at once, so a batching backend can fill its device, and
answers each with the model's text and whether it finished. This module owns the contract:

    prompt  = PromptBuilder(dialect).build(agents, conversation)   (router/plano/prompt.py)
    answer  = parse_routes(text)                                   (router/plano/parse.py)

An answer that was cut off (``finished=False``) or does not parse is a failed decision - never
a guess - so the router applies its fallback and records why.
"""

from __future__ import annotations

from collections.abc import Sequence
from types import TracebackType
from typing import Protocol, Self

import msgspec
from routeyard.router.engines.base import EngineBase, EngineResult, RoutingRequest
from routeyard.router.plano.parse import MalformedOutput, parse_routes
from routeyard.router.plano.prompt import Dialect, PromptBuilder


class Generation(msgspec.Struct, frozen=True, kw_only=True):
    text: str
    finished: bool = True
    """False when generation stopped at max_tokens: the answer is incomplete."""
    confidence: float | None = None
    error: str | None = None
    """Set when the backend could not answer this prompt (timeout, refused, ...)."""


class TextGenerator(Protocol):
    """What a model backend implements for ``PlanoEngine``."""

    model: str

    async def generate(self, prompts: Sequence[str], agents: Sequence[Sequence[str]]) -> list[Generation]:
        """One generation per prompt, in order. ``agents[i]``: the route names prompt i may use
        (for constrained decoding)."""
        ...

    def prefix_cache_hit_rate(self) -> float | None:
        """Share of prompt tokens served from the backend's prefix cache so far; None where it
        reports none."""
        ...


class PlanoEngine(EngineBase):
    name = "plano"

    def __init__(
        self,
        generator: TextGenerator,
        *,
        dialect: Dialect = "model_card",
        max_tokens: int = 8192,
        max_messages: int = 16,
        name: str | None = None,
    ) -> None:
        self.generator = generator
        self.prompts = PromptBuilder(dialect, max_tokens=max_tokens, max_messages=max_messages)
        if name:
            self.name = name

    async def __aenter__(self) -> Self:
        enter = getattr(self.generator, "__aenter__", None)
        if enter is not None:
            await enter()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        leave = getattr(self.generator, "__aexit__", None)
        if leave is not None:
            await leave(exc_type, exc, tb)

    def prefix_cache_hit_rate(self) -> float | None:
        """The backend's prefix-cache hit rate so far, where it reports one."""
        return self.generator.prefix_cache_hit_rate()

    async def decide(self, requests: Sequence[RoutingRequest]) -> list[EngineResult]:
        prompts = [self.prompts.build(r.agents, r.conversation) for r in requests]
        names = [[a.name for a in r.agents] for r in requests]
        generations = await self.generator.generate(prompts, names)
        if len(generations) != len(requests):
            raise RuntimeError(f"generator answered {len(generations)} of {len(requests)} prompts")
        return [self.interpret(g) for g in generations]

    def interpret(self, generation: Generation) -> EngineResult:
        model = self.generator.model
        if generation.error is not None:
            return EngineResult(raw_output=generation.text or None, error=generation.error, model=model)
        if not generation.finished:
            return EngineResult(raw_output=generation.text, error="answer cut off at max_tokens", model=model)
        try:
            routes = parse_routes(generation.text)
        except MalformedOutput as exc:
            return EngineResult(raw_output=generation.text, error=str(exc), model=model)
        return EngineResult(routes=routes, raw_output=generation.text, confidence=generation.confidence, model=model)
