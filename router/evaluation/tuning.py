"""Fitting the semantic engine's thresholds on labelled conversations (``routeyard tune DATASET``).

The dataset is the one ``routeyard eval`` reads, loaded by the same function
(``routeyard.router.evaluation.evaluate.load_cases``: JSON Lines, gzip or plain).

Every case's texts are encoded once (``SemanticEngine.prepare``); each candidate setting is then
scored from those similarities by ``score_turn`` alone, so a coordinate search over ``DEFAULT_GRID``
takes seconds. The objective is exact set-match accuracy: a case is right when the predicted
routes, as a set, equal the expected ones.

Errors: ``DatasetError`` for a missing, unreadable or malformed file (with its line), for a case
with no user message, and for a dataset too small to hold some cases out.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from routeyard.router.engines.embedding import Encoder
from routeyard.router.engines.semantic import SemanticEngine, SemanticSettings, TurnScores, score_turn
from routeyard.router.errors import DatasetError
from routeyard.router.evaluation.evaluate import Case, load_cases

__all__ = ["DEFAULT_GRID", "Accuracy", "TuneResult", "accuracy", "prepare", "search", "tune"]

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


def prepare(cases: Sequence[Case], settings: SemanticSettings, encoder: Encoder | None = None) -> list[TurnScores]:
    """Every case's similarities, its texts encoded once (context as long as ``settings`` allow)."""
    engine = SemanticEngine(settings.model_copy(update={"text_cache": 0}), encoder=encoder)
    turns = engine.prepare([c.request() for c in cases])
    if any(t is None for t in turns):
        raise DatasetError("a case has no user message to route")
    return [t for t in turns if t is not None]


def accuracy(cases: Sequence[Case], turns: Sequence[TurnScores], settings: SemanticSettings) -> Accuracy:
    right: Counter[str] = Counter()
    total: Counter[str] = Counter()
    outcomes: Counter[tuple[bool, bool]] = Counter()  # (expected none, predicted none)
    for case, turn in zip(cases, turns, strict=True):
        names = [a.name for a in case.agents]
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
    cases = load_cases(path, sample=limit, seed=seed)
    if not cases:
        raise DatasetError(f"{path}: no cases")
    kept = len(cases) - int(len(cases) * holdout) if holdout else len(cases)
    if kept < 1:
        raise DatasetError(f"holdout {holdout} leaves no case to fit on")
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
