"""Plano-Orchestrator in process: vLLM's ``AsyncLLM`` as the ``TextGenerator`` of ``PlanoEngine``.

The engine is created and shut down in one async context manager; vLLM is imported only then, so
this module imports without vLLM installed::

    async with VllmGenerator(VllmSettings(model="katanemo/Plano-Orchestrator-4B")) as generator:
        results = await PlanoEngine(generator).decide(requests)

Each prompt becomes the model's chat-templated single user message (Qwen3's thinking switched off
where the template has it). All prompts of a batch are submitted at once, so vLLM's continuous
batching fills the device, and decoding is constrained to ``{"route": [<agent names>]}``
(``routeyard.router.plano.route_schema``) with free whitespace disabled at engine level: a weak model otherwise
loops on whitespace until ``max_tokens``. An answer stopped by ``max_tokens`` is reported as not
finished (a failed decision). ``confidence`` is the geometric mean of the generated tokens' raw
probabilities.

Constraints (``VllmSettings.constraint``):

- ``"json_schema"``: the schema itself. vLLM's ``disable_any_whitespace`` compiles it with compact
  separators, so the model must write ``{"route":["A"]}``.
- ``"plano_grammar"`` (the default; xgrammar only): the same schema compiled by xgrammar with ``json.dumps``
  spacing, ``{"route": ["A", "B"]}``, which is how the prompt shows the answer - what the model
  was trained to write.

Errors::

    RuntimeError
    └── VllmEngineDead   the engine process died. Not retriable: the worker must exit.

A request that fails alone (too long for ``max_model_len``, rejected, ...) gives a ``Generation``
with ``error`` set, which ``PlanoEngine`` turns into a failed decision.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence
from types import TracebackType
from typing import Any, Self

from routeyard.router.errors import VllmEngineDead
from routeyard.router.plano.engine import Generation
from routeyard.router.plano.route_schema import mean_confidence, plano_grammar, route_json_schema
from routeyard.router.settings import VllmConstraint, VllmSettings

__all__ = ["VllmEngineDead", "VllmGenerator", "VllmSettings"]

Constraint = VllmConstraint


class _PrefixCacheCounter:
    """Prefix-cache tokens queried and found, fed by a vLLM stat logger."""

    def __init__(self) -> None:
        self.queries = 0
        self.hits = 0

    def observe(self, reset: bool, queries: int, hits: int) -> None:
        if reset:
            self.queries = self.hits = 0
        self.queries += queries
        self.hits += hits

    def rate(self) -> float | None:
        return self.hits / self.queries if self.queries else None


def _stat_logger_factory(counter: _PrefixCacheCounter) -> Any:
    """A per-engine vLLM stat logger that feeds ``counter`` from the scheduler's stats."""
    from vllm.v1.metrics.loggers import StatLoggerBase

    class PrefixCacheLogger(StatLoggerBase):  # type: ignore[misc, unused-ignore]  # Any without vLLM
        def __init__(self, vllm_config: Any, engine_index: int = 0) -> None:
            pass

        def record(
            self, scheduler_stats: Any, iteration_stats: Any, mm_cache_stats: Any = None, engine_idx: int = 0
        ) -> None:
            stats = getattr(scheduler_stats, "prefix_cache_stats", None)
            if stats is not None:
                counter.observe(stats.reset, stats.queries, stats.hits)

        def log_engine_initialized(self) -> None:
            pass

    return PrefixCacheLogger


def _describe(exc: BaseException) -> str:
    cause = exc.__cause__ or exc
    return f"vLLM could not answer: {type(cause).__name__}: {cause}".rstrip(": ")


class VllmGenerator:
    """``TextGenerator`` over an in-process ``AsyncLLM``. Use as an async context manager."""

    def __init__(self, settings: VllmSettings) -> None:
        if settings.constraint == "plano_grammar" and settings.structured_output_backend != "xgrammar":
            raise ValueError("constraint 'plano_grammar' needs structured_output_backend 'xgrammar'")
        self.settings = settings
        self.model = settings.model
        self._engine: Any = None
        self._tokenizer: Any = None
        self._template_kwargs: dict[str, Any] = {}
        self._prefix_cache = _PrefixCacheCounter()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    async def start(self) -> None:
        """Start the engine. Loading runs in a thread, so the event loop keeps serving meanwhile."""
        if self._engine is not None:
            return
        from vllm.engine.arg_utils import AsyncEngineArgs
        from vllm.v1.engine.async_llm import AsyncLLM

        args = AsyncEngineArgs(**self.settings.engine_args())
        loggers = [_stat_logger_factory(self._prefix_cache)]
        engine = await asyncio.to_thread(AsyncLLM.from_engine_args, args, stat_loggers=loggers)
        try:
            self._tokenizer = engine.get_tokenizer()
            self._template_kwargs = self._chat_template_kwargs(self._tokenizer)
        except BaseException:
            engine.shutdown()
            raise
        self._engine = engine
        del engine  # vLLM's start-up keeps this frame alive; the engine must not outlive stop()

    async def stop(self) -> None:
        """Shut the engine down. Idempotent."""
        engine, self._engine = self._engine, None
        if engine is not None:
            engine.shutdown()

    def prefix_cache_hit_rate(self) -> float | None:
        """Share of prompt tokens served from the prefix cache since start-up (None before any)."""
        return self._prefix_cache.rate()

    async def generate(self, prompts: Sequence[str], agents: Sequence[Sequence[str]]) -> list[Generation]:
        """One generation per prompt, all submitted at once. Raises ``VllmEngineDead``."""
        if self._engine is None:
            raise RuntimeError("VllmGenerator is not started: use 'async with VllmGenerator(...)'")
        if len(prompts) != len(agents):
            raise ValueError(f"{len(prompts)} prompts but {len(agents)} agent lists")
        if self._engine.errored:
            raise VllmEngineDead("the vLLM engine has stopped; see its log for the cause")
        encoded = await asyncio.to_thread(self._encode, prompts)  # one tokenizer call for the batch
        tasks = [asyncio.create_task(self._one(ids, tuple(a))) for ids, a in zip(encoded, agents, strict=True)]
        try:
            return list(await asyncio.gather(*tasks))
        except BaseException:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            raise

    @staticmethod
    def _chat_template_kwargs(tokenizer: Any) -> dict[str, Any]:
        template = getattr(tokenizer, "chat_template", None)
        if not template:
            raise ValueError("the model's tokenizer has no chat template")
        return {"enable_thinking": False} if "enable_thinking" in str(template) else {}

    def _encode(self, prompts: Sequence[str]) -> list[list[int]]:
        """Each prompt as the single user message of the model's own chat template, tokenized."""
        texts = [
            self._tokenizer.apply_chat_template(
                [{"role": "user", "content": prompt}],
                tokenize=False,
                add_generation_prompt=True,
                **self._template_kwargs,
            )
            for prompt in prompts
        ]
        ids: list[list[int]] = self._tokenizer(texts, add_special_tokens=False)["input_ids"]
        return ids

    def _sampling_params(self, names: tuple[str, ...]) -> Any:
        from vllm.sampling_params import RequestOutputKind, SamplingParams, StructuredOutputsParams

        settings = self.settings
        if settings.constraint == "plano_grammar":
            constraint = StructuredOutputsParams(grammar=plano_grammar(names, settings.max_routes))
        else:
            constraint = StructuredOutputsParams(json=route_json_schema(names, settings.max_routes))
        return SamplingParams(
            temperature=settings.temperature,
            max_tokens=settings.max_tokens,
            structured_outputs=constraint,
            logprobs=0,
            output_kind=RequestOutputKind.FINAL_ONLY,
        )

    async def _one(self, ids: list[int], names: tuple[str, ...]) -> Generation:
        from vllm.v1.engine.exceptions import EngineDeadError

        try:
            (engine_input,) = await self._engine.renderer.render_cmpl_async([{"prompt_token_ids": ids}])
            final = None
            async for output in self._engine.generate(engine_input, self._sampling_params(names), uuid.uuid4().hex):
                final = output
        except EngineDeadError as exc:
            raise VllmEngineDead(str(exc)) from exc
        except Exception as exc:
            return Generation(text="", finished=False, error=_describe(exc))
        if final is None or not final.outputs:
            return Generation(text="", finished=False, error="vLLM returned no output")
        completion = final.outputs[0]
        return Generation(
            text=completion.text,
            finished=completion.finish_reason != "length",
            confidence=mean_confidence(completion.cumulative_logprob, len(completion.token_ids)),
        )
