"""Offline evaluation, part one: routing cases from a dataset file, and an engine run over them.

    cases = load_cases("clinc150_val_routing.jsonl.gz", limit=500)
    async with engine:
        outcomes = await run_engine(engine, cases, progress=show)
    report = score(cases, outcomes)                 # routeyard.router.engines.scoring

The dataset is JSON Lines, gzip-compressed or plain (recognised by its first bytes), one case a
line; ``meta`` and other unknown keys are ignored::

    {"id": str, "agents": [{"name": str, "description": str, "examples": [str]?}, ...],
     "conversation": [{"role": "user"|"assistant", "content": str}, ...],
     "expected_routes": [str, ...], "tags": [str, ...], "meta": {...}}

Each case carries its own catalog. Identical catalogs share one ``AgentSpec`` tuple, so engines
that cache per catalog (the rules engine's compiled regexes, prompt prefixes) hit their caches.

Errors::

    DatasetError    the file is missing or unreadable, or a line is malformed (the message names
                    the file and line). Not retriable: fix the file or the path.
"""

from __future__ import annotations

import gzip
import io
import random
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import msgspec
from pydantic import ValidationError
from routeyard.router.catalog import AgentSpec
from routeyard.router.engines.base import DecisionEngine, EngineResult, RoutingRequest
from routeyard.router.errors import DatasetError as DatasetError
from routeyard.router.errors import EngineDead
from routeyard.router.evaluation.dialogue import continued, name_speakers
from routeyard.router.plano.parse import known_routes
from routeyard.schemas import Message

Progress = Callable[[int, int], None]
"""Called as ``progress(done, total)`` before the first batch and after each one."""

_GZIP_MAGIC = b"\x1f\x8b"


class Case(msgspec.Struct, frozen=True, kw_only=True):
    """One routing case: a conversation, the agents it may go to, and the right set of routes."""

    id: str
    agents: tuple[AgentSpec, ...]
    conversation: list[Message]
    expected: frozenset[str]
    tags: tuple[str, ...] = ()

    def request(self) -> RoutingRequest:
        return RoutingRequest(event_id=self.id, conversation=self.conversation, agents=self.agents)


class Outcome(msgspec.Struct, frozen=True, kw_only=True):
    """What an engine decided for one case, restricted to the case's catalog."""

    case_id: str
    predicted: frozenset[str]
    dropped: tuple[str, ...] = ()
    """Names the engine answered that are not in the case's catalog."""
    error: str | None = None
    """Set when the decision failed; ``predicted`` is then empty."""
    engine: str | None = None
    """The engine that decided (in a fallback chain, the one that answered)."""
    latency_ms: float = 0.0
    """The batch's wall time divided by its size."""
    batch: int = 0
    batch_s: float = 0.0
    """Wall time of the whole batch this case was decided in."""
    continuation: str | None = None
    """The agent the continuation policy sent the turn back to (``router/continuation.py``)."""

    @property
    def failed(self) -> bool:
        return self.error is not None


class _RawAgent(msgspec.Struct, frozen=True):
    name: str
    description: str
    examples: tuple[str, ...] = ()


class _RawMeta(msgspec.Struct):
    dialogue_id: str | int | None = None


class _RawCase(msgspec.Struct):
    id: str
    agents: list[_RawAgent]
    conversation: list[Message]
    expected_routes: list[str]
    tags: list[str] = []
    meta: _RawMeta | None = None


_DECODER = msgspec.json.Decoder(_RawCase)
_Catalogs = dict[tuple[_RawAgent, ...], tuple[AgentSpec, ...]]


def load_cases(path: str | Path, limit: int | None = None, sample: int | None = None, seed: int = 0) -> list[Case]:
    """Read the cases of ``path``: the first ``limit`` of them, then ``sample`` drawn at random
    (reproducible with ``seed``) and kept in file order. Raises ``DatasetError``."""
    path = Path(path)
    catalogs: _Catalogs = {}
    read = [_case(line, f"{path}:{lineno}", catalogs) for lineno, line in _lines(path, limit)]
    cases = name_speakers([case for case, _ in read], [dialogue for _, dialogue in read])
    if sample is not None and sample < len(cases):
        keep = sorted(random.Random(seed).sample(range(len(cases)), sample))
        cases = [cases[i] for i in keep]
    return cases


def _open(path: Path) -> io.BufferedIOBase:
    with path.open("rb") as head:
        gzipped = head.read(2) == _GZIP_MAGIC
    return gzip.open(path, "rb") if gzipped else path.open("rb")


def _lines(path: Path, limit: int | None) -> Iterator[tuple[int, bytes]]:
    """(line number, line) of the non-blank lines, at most ``limit`` of them."""
    count = 0
    try:
        with _open(path) as lines:
            for lineno, line in enumerate(lines, 1):
                if limit is not None and count >= limit:
                    return
                if line.strip():
                    count += 1
                    yield lineno, line
    except (OSError, EOFError) as exc:  # gzip.BadGzipFile is an OSError; EOFError: truncated gzip
        reason = getattr(exc, "strerror", None) or exc
        raise DatasetError(f"cannot read dataset {path}: {reason}") from None


def _case(line: bytes, where: str, catalogs: _Catalogs) -> tuple[Case, str | None]:
    try:
        raw = _DECODER.decode(line)
    except msgspec.DecodeError as exc:  # also msgspec.ValidationError
        raise DatasetError(f"{where}: {exc}") from None
    agents = _catalog(raw.agents, where, catalogs)
    unknown = sorted(set(raw.expected_routes) - {a.name for a in agents})
    if unknown:
        raise DatasetError(f"{where}: expected route(s) {', '.join(unknown)} not among the case's agents")
    if not raw.conversation:
        raise DatasetError(f"{where}: the conversation is empty")
    case = Case(
        id=raw.id,
        agents=agents,
        conversation=raw.conversation,
        expected=frozenset(raw.expected_routes),
        tags=tuple(raw.tags),
    )
    dialogue = raw.meta.dialogue_id if raw.meta is not None else None
    return case, None if dialogue is None else str(dialogue)


def _catalog(raw: list[_RawAgent], where: str, catalogs: _Catalogs) -> tuple[AgentSpec, ...]:
    """The case's agents, one shared tuple per distinct catalog."""
    key = tuple(raw)
    cached = catalogs.get(key)
    if cached is not None:
        return cached
    names = [a.name for a in raw]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise DatasetError(f"{where}: duplicate agent names: {', '.join(duplicates)}")
    try:
        agents = tuple(AgentSpec(name=a.name, description=a.description, examples=a.examples) for a in raw)
    except ValidationError as exc:
        error = exc.errors()[0]
        raise DatasetError(f"{where}: invalid agent: {error['msg'].removeprefix('Value error, ')}") from None
    catalogs[key] = agents
    return agents


async def run_engine(
    engine: DecisionEngine,
    cases: Sequence[Case],
    *,
    batch_size: int = 64,
    progress: Progress | None = None,
    clock: Callable[[], float] = time.perf_counter,
    continuation: float | None = None,
) -> list[Outcome]:
    """Decide every case with ``engine`` (already started), ``batch_size`` cases per ``decide`` call.

    A batch whose ``decide`` raises counts as failed decisions for all its cases, as in the
    router's fallback chain; ``EngineDead`` propagates. With ``continuation`` (the policy's
    override threshold), the continuation policy runs after the engine, as in the router.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    outcomes: list[Outcome] = []
    if progress is not None:
        progress(0, len(cases))
    for index, start in enumerate(range(0, len(cases), batch_size)):
        batch = cases[start : start + batch_size]
        results, seconds = await _timed_decide(engine, batch, clock)
        outcomes += [
            _outcome(c, r, engine.name, (index, seconds, len(batch)), continuation)
            for c, r in zip(batch, results, strict=True)
        ]
        if progress is not None:
            progress(len(outcomes), len(cases))
    return outcomes


async def _timed_decide(
    engine: DecisionEngine, batch: Sequence[Case], clock: Callable[[], float]
) -> tuple[list[EngineResult], float]:
    requests = [case.request() for case in batch]
    start = clock()
    try:
        results = await engine.decide(requests)
    except EngineDead:
        raise
    except Exception as exc:
        results = [EngineResult(error=f"{type(exc).__name__}: {exc}") for _ in requests]
    seconds = clock() - start
    if len(results) != len(requests):
        raise ValueError(f"engine {engine.name} answered {len(results)} results for {len(requests)} requests")
    return results, seconds


def _outcome(
    case: Case, result: EngineResult, engine: str, batch: tuple[int, float, int], continuation: float | None
) -> Outcome:
    index, seconds, size = batch
    names = [a.name for a in case.agents]
    kept, dropped = ([], []) if result.failed else known_routes(result.routes, names)
    predicted, agent = frozenset(kept), None
    if continuation is not None:
        predicted, agent = continued(case, result, kept, continuation)
    return Outcome(
        case_id=case.id,
        predicted=predicted,
        dropped=tuple(dropped),
        error=result.error,
        engine=result.engine or engine,
        latency_ms=1000.0 * seconds / size,
        batch=index,
        batch_s=seconds,
        continuation=agent,
    )
