"""Fitting the semantic engine's thresholds on labelled conversations (``routeyard tune DATASET``).

A dataset is JSON Lines (gzip when the name ends in ``.gz``), one case a line::

    {"id": str, "agents": [{"name", "description", "examples"?}], "conversation": [{"role", "content"}],
     "expected_routes": [str], "tags": [str]}

Every case's texts are encoded once (``SemanticEngine.prepare``); each candidate setting is then
scored from those similarities by ``score_turn`` alone, so a coordinate search over ``DEFAULT_GRID``
takes seconds. The objective is exact set-match accuracy: a case is right when the predicted
routes, as a set, equal the expected ones.

Errors: ``OSError`` for an unreadable file, ``ValueError`` for a malformed case (with its line).
"""

from __future__ import annotations

import gzip
import json
import random
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

from routeyard.router.catalog import AgentSpec
from routeyard.router.engines.base import RoutingRequest
from routeyard.router.engines.embedding import Encoder
from routeyard.router.engines.semantic import SemanticEngine, SemanticSettings, TurnScores, score_turn
from routeyard.schemas import Message

__all__ = ["DEFAULT_GRID", "Accuracy", "Case", "TuneResult", "accuracy", "load_cases", "prepare", "search", "tune"]

DEFAULT_GRID: dict[str, tuple[float, ...]] = {
    "min_similarity": (0.05, 0.1, 0.15, 0.2, 0.25, 0.3),
    "negative_weight": (0.0, 0.3, 0.5, 0.6, 0.7, 0.8, 1.0),
    "closing_similarity": (0.3, 0.4, 0.5, 0.6, 1.1),
    "closing_margin": (0.1, 0.2, 0.3, 0.4),
    "small_talk_in_context": (0.0, 0.25, 0.5, 0.75, 1.0),
    "weak_similarity": (0.25, 0.3, 0.35, 0.4, 0.45),
    "strong_similarity": (0.35, 0.4, 0.45, 0.5, 0.55, 0.6),
    "weak_context_weight": (0.5, 0.6, 0.7, 0.8, 0.9, 1.0),
    "context_weight": (0.0, 0.1, 0.2, 0.3, 0.4, 0.5),
    "context_decay": (0.5, 0.7, 0.85, 1.0),
    "context_turns": (1, 2, 3, 4, 6),
    "assistant_weight": (0.0, 0.2, 0.3, 0.4, 0.5, 0.6),
    "extra_margin": (0.0, 0.01, 0.02, 0.04),
    "clause_min_similarity": (0.2, 0.25, 0.3, 0.4, 0.5, 1.0),
    "clause_margin": (0.1, 0.15, 0.2, 0.25, 0.3),
}
"""The candidate values tried for each setting (one setting at a time, the others held)."""

KEY_TAGS = ("context_dependent", "multi_intent", "negative", "follow_up", "first_turn")


class Case(NamedTuple):
    request: RoutingRequest
    expected: frozenset[str]
    tags: tuple[str, ...]


@dataclass(frozen=True)
class Accuracy:
    """Exact set-match accuracy, overall and per tag, and the F1 of "no route" as a class."""

    overall: float
    cases: int
    by_tag: dict[str, float]
    no_route_f1: float


@dataclass(frozen=True)
class TuneResult:
    settings: SemanticSettings
    """The best settings found (``base`` with the fitted values)."""
    baseline: Accuracy
    best: Accuracy
    trials: list[tuple[str, float, float]] = field(default_factory=list)
    """(setting, value, accuracy) for every candidate tried, in order."""
    held_out: tuple[Accuracy, Accuracy] | None = None
    """(baseline, tuned) on cases the search never saw, when some were held out."""

    def changed(self, base: SemanticSettings) -> dict[str, Any]:
        """The fitted settings that differ from ``base``."""
        fitted = self.settings.model_dump()
        return {k: v for k, v in fitted.items() if v != getattr(base, k)}

    def table(self) -> str:
        """The accuracy table: baseline and tuned, overall and per key tag."""
        tags = [t for t in KEY_TAGS if t in self.best.by_tag]
        rows = [("", "cases", "overall", *tags, "no-route F1")]
        runs = [("baseline (fit)", self.baseline), ("tuned (fit)", self.best)]
        if self.held_out is not None:
            runs += [("baseline (held out)", self.held_out[0]), ("tuned (held out)", self.held_out[1])]
        for label, acc in runs:
            rows.append(
                (
                    label,
                    str(acc.cases),
                    f"{acc.overall:.3f}",
                    *(f"{acc.by_tag[t]:.3f}" if t in acc.by_tag else "-" for t in tags),
                    f"{acc.no_route_f1:.3f}",
                )
            )
        widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
        return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows)


def load_cases(path: str | Path, limit: int | None = None, seed: int = 0) -> list[Case]:
    """The cases of a JSONL(.gz) file; a random sample of ``limit`` of them (by ``seed``) if given."""
    path = Path(path)
    opener: Any = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as lines:
        cases = [_case(line, n) for n, line in enumerate(lines, 1) if line.strip()]
    if limit is not None and limit < len(cases):
        cases = random.Random(seed).sample(cases, limit)
    return cases


def _case(line: str, number: int) -> Case:
    try:
        data = json.loads(line)
        agents = tuple(
            AgentSpec(name=a["name"], description=a["description"], examples=tuple(a.get("examples", ())))
            for a in data["agents"]
        )
        conversation = [Message(role=m["role"], content=m["content"]) for m in data["conversation"]]
        request = RoutingRequest(event_id=str(data.get("id", number)), conversation=conversation, agents=agents)
        return Case(request, frozenset(data["expected_routes"]), tuple(data.get("tags", ())))
    except (ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"line {number}: not a routing case: {exc}") from None


def prepare(cases: Sequence[Case], settings: SemanticSettings, encoder: Encoder | None = None) -> list[TurnScores]:
    """Every case's similarities, its texts encoded once (context as long as ``settings`` allow)."""
    engine = SemanticEngine(settings.model_copy(update={"text_cache": 0}), encoder=encoder)
    turns = engine.prepare([c.request for c in cases])
    if any(t is None for t in turns):
        raise ValueError("a case has no user message to route")
    return [t for t in turns if t is not None]


def accuracy(cases: Sequence[Case], turns: Sequence[TurnScores], settings: SemanticSettings) -> Accuracy:
    right: Counter[str] = Counter()
    total: Counter[str] = Counter()
    outcomes: Counter[tuple[bool, bool]] = Counter()  # (expected none, predicted none)
    for case, turn in zip(cases, turns, strict=True):
        names = [a.name for a in case.request.agents]
        predicted = frozenset(names[i] for i in score_turn(turn, settings).routes)
        for tag in ("", *case.tags):
            total[tag] += 1
            right[tag] += predicted == case.expected
        outcomes[(not case.expected, not predicted)] += 1
    hits = outcomes[(True, True)]
    f1 = 2 * hits / (2 * hits + outcomes[(True, False)] + outcomes[(False, True)]) if hits else 0.0
    by_tag = {tag: right[tag] / total[tag] for tag in total if tag}
    return Accuracy(right[""] / max(total[""], 1), total[""], by_tag, f1)


def search(
    cases: Sequence[Case],
    turns: Sequence[TurnScores],
    base: SemanticSettings,
    grid: Mapping[str, Sequence[float]] = DEFAULT_GRID,
    rounds: int = 2,
) -> tuple[SemanticSettings, list[tuple[str, float, float]]]:
    """Coordinate search: each setting in turn takes its best value, for ``rounds`` passes."""
    best, score = base, accuracy(cases, turns, base).overall
    trials: list[tuple[str, float, float]] = []
    for _ in range(rounds):
        start = score
        for name, values in grid.items():
            for value in values:
                candidate = best.model_copy(update={name: value})
                if candidate.strong_similarity < candidate.weak_similarity:
                    continue
                trial = accuracy(cases, turns, candidate).overall
                trials.append((name, value, trial))
                if trial > score:
                    best, score = candidate, trial
        if score <= start:
            break
    return best, trials


def tune(
    path: str | Path,
    base: SemanticSettings | None = None,
    limit: int | None = 2000,
    seed: int = 0,
    *,
    grid: Mapping[str, Sequence[float]] = DEFAULT_GRID,
    encoder: Encoder | None = None,
    holdout: float = 0.0,
) -> TuneResult:
    """Fit ``base``'s thresholds on (a sample of ``limit`` cases of) a labelled dataset.

    With ``holdout`` (a fraction, below 1) that share of the sample is kept out of the search and
    scored with the baseline and the fitted settings: the figure to trust, since a search over this
    many settings fits the cases it sees a little.
    """
    if not 0.0 <= holdout < 1.0:
        raise ValueError(f"holdout must be in [0, 1), got {holdout}")
    base = base or SemanticSettings()
    cases = load_cases(path, limit, seed)
    if not cases:
        raise ValueError(f"{path}: no cases")
    kept = len(cases) - int(len(cases) * holdout) if holdout else len(cases)
    if kept < 1:
        raise ValueError(f"holdout {holdout} leaves no case to fit on")
    if held_count := len(cases) - kept:
        cases = random.Random(seed).sample(cases, len(cases))  # the held-out share: a random one
    cases, held = cases[:kept], cases[kept:]
    assert len(held) == held_count
    widest = base.model_copy(
        update={
            "context_turns": max([base.context_turns, *grid.get("context_turns", ())]),
            "assistant_weight": max([base.assistant_weight, *grid.get("assistant_weight", ())]),
        }
    )
    turns = prepare(cases, widest, encoder)
    best, trials = search(cases, turns, base, grid)
    held_out = None
    if held:
        held_turns = prepare(held, widest, encoder)
        held_out = (accuracy(held, held_turns, base), accuracy(held, held_turns, best))
    return TuneResult(best, accuracy(cases, turns, base), accuracy(cases, turns, best), trials, held_out)
