"""Offline evaluation, part two: metrics over cases and outcomes, and their rendering.

Routes are compared as sets: a case is right when the predicted set equals the expected one.
Binary metrics (``PRF``) count true/false positives and false negatives; precision, recall and F1
are 0.0 where their denominator is 0.

- no route: the positive class is "no agent should handle it" (expected empty); a failed
  decision predicts the empty set.
- multi-intent: the positive class is "two or more agents"; ``multi_intent_accuracy`` is the
  exact accuracy on the cases tagged ``multi_intent``.
- per agent: over memberships (agent in the expected set vs in the predicted set), agents
  identified by name across catalogs.
- confusion: cases expecting at most one agent, expected label vs predicted label, where a label
  is the agent's name, ``(none)`` for the empty set or ``(multi)`` for a predicted set of 2+.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from typing import Any, TypeVar

import msgspec
from routeyard.router.evaluation.evaluate import Case, Outcome

NONE = "(none)"
MULTI = "(multi)"
OTHER = "(other)"


class PRF(msgspec.Struct, frozen=True, kw_only=True):
    tp: int
    fp: int
    fn: int
    precision: float
    recall: float
    f1: float

    @property
    def support(self) -> int:
        """How many cases (or memberships) were expected positive."""
        return self.tp + self.fn


class TagScore(msgspec.Struct, frozen=True, kw_only=True):
    n: int
    correct: int
    accuracy: float


class Report(msgspec.Struct, frozen=True, kw_only=True):
    n: int
    correct: int
    accuracy: float
    """Exact set-match accuracy."""
    failed: int
    per_tag: dict[str, TagScore]
    no_route: PRF
    multi_intent: PRF
    multi_intent_accuracy: float | None
    per_agent: dict[str, PRF]
    confusion: dict[str, dict[str, int]]
    """expected label -> predicted label -> cases."""
    decided_by: dict[str, int]
    """Successful decisions per engine (the fallback chain's share)."""
    latency_p50_ms: float
    latency_p99_ms: float
    """Per case: its batch's wall time divided by the batch's size (not a single request's latency)."""
    decisions_per_s: float
    batch_p50_ms: float = 0.0
    batch_p99_ms: float = 0.0
    """Wall time of one engine call (a batch of up to ``batch_size`` cases)."""
    batch_size: int = 0
    """The largest batch (``--batch-size``, or fewer cases)."""
    continued: int = 0
    """Cases the continuation policy sent back to the agent that asked (``router/continuation.py``)."""
    continued_right: int = 0
    """...of which the expected routes were exactly that agent."""


_Pair = tuple[Case, Outcome]
_T = TypeVar("_T")


def prf(tp: int, fp: int, fn: int) -> PRF:
    precision, recall = _ratio(tp, tp + fp), _ratio(tp, tp + fn)
    f1 = _ratio(2 * precision * recall, precision + recall)
    return PRF(tp=tp, fp=fp, fn=fn, precision=precision, recall=recall, f1=f1)


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0-100), linearly interpolated between ranks; 0.0 for no values."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def score(cases: Sequence[Case], outcomes: Sequence[Outcome]) -> Report:
    """Every metric of ``outcomes`` (as returned by ``run_engine`` for ``cases``)."""
    pairs = _pairs(cases, outcomes)
    correct = sum(case.expected == outcome.predicted for case, outcome in pairs)
    per_tag = _per_tag(pairs)
    latencies = [o.latency_ms for o in outcomes]
    multi = per_tag.get("multi_intent")
    return Report(
        n=len(pairs),
        correct=correct,
        accuracy=_ratio(correct, len(pairs)),
        failed=sum(o.failed for o in outcomes),
        per_tag=per_tag,
        no_route=_binary(pairs, lambda routes: not routes),
        multi_intent=_binary(pairs, lambda routes: len(routes) > 1),
        multi_intent_accuracy=multi.accuracy if multi else None,
        per_agent=_per_agent(pairs),
        confusion=_confusion(pairs),
        decided_by=dict(Counter(o.engine or "?" for o in outcomes if not o.failed).most_common()),
        latency_p50_ms=percentile(latencies, 50),
        latency_p99_ms=percentile(latencies, 99),
        decisions_per_s=_throughput(outcomes),
        **_batches(outcomes),
        continued=sum(o.continuation is not None for o in outcomes),
        continued_right=sum(c.expected == {o.continuation} for c, o in pairs if o.continuation is not None),
    )


def _batches(outcomes: Sequence[Outcome]) -> dict[str, Any]:
    seconds = {o.batch: o.batch_s for o in outcomes}
    sizes = Counter(o.batch for o in outcomes)
    walls = [1000 * s for s in seconds.values()]
    return {
        "batch_p50_ms": percentile(walls, 50),
        "batch_p99_ms": percentile(walls, 99),
        "batch_size": max(sizes.values(), default=0),
    }


def _ratio(numerator: float, denominator: float) -> float:
    return numerator / denominator if denominator else 0.0


def _pairs(cases: Sequence[Case], outcomes: Sequence[Outcome]) -> list[_Pair]:
    pairs = list(zip(cases, outcomes, strict=True))
    for case, outcome in pairs:
        if case.id != outcome.case_id:
            raise ValueError(f"outcome for {outcome.case_id!r} paired with case {case.id!r}")
    return pairs


def _per_tag(pairs: Sequence[_Pair]) -> dict[str, TagScore]:
    totals: Counter[str] = Counter()
    right: Counter[str] = Counter()
    for case, outcome in pairs:
        for tag in set(case.tags):
            totals[tag] += 1
            right[tag] += case.expected == outcome.predicted
    return {t: TagScore(n=n, correct=right[t], accuracy=_ratio(right[t], n)) for t, n in sorted(totals.items())}


def _binary(pairs: Sequence[_Pair], positive: Callable[[frozenset[str]], bool]) -> PRF:
    counts: Counter[tuple[bool, bool]] = Counter((positive(c.expected), positive(o.predicted)) for c, o in pairs)
    return prf(counts[True, True], counts[False, True], counts[True, False])


def _per_agent(pairs: Sequence[_Pair]) -> dict[str, PRF]:
    tp: Counter[str] = Counter()
    fp: Counter[str] = Counter()
    fn: Counter[str] = Counter()
    for case, outcome in pairs:
        tp.update(case.expected & outcome.predicted)
        fp.update(outcome.predicted - case.expected)
        fn.update(case.expected - outcome.predicted)
    return {name: prf(tp[name], fp[name], fn[name]) for name in sorted(tp | fp | fn)}


def _label(routes: frozenset[str]) -> str:
    if not routes:
        return NONE
    return next(iter(routes)) if len(routes) == 1 else MULTI


def _confusion(pairs: Sequence[_Pair]) -> dict[str, dict[str, int]]:
    cells = Counter((_label(c.expected), _label(o.predicted)) for c, o in pairs if len(c.expected) <= 1)
    table: dict[str, dict[str, int]] = {}
    for (expected, predicted), count in sorted(cells.items()):
        table.setdefault(expected, {})[predicted] = count
    return table


def _throughput(outcomes: Sequence[Outcome]) -> float:
    batches = {o.batch: o.batch_s for o in outcomes}
    return _ratio(len(outcomes), sum(batches.values()))


def top_confusions(report: Report, limit: int = 10) -> list[tuple[str, str, int]]:
    """The most frequent (expected, predicted, cases) mistakes of the confusion table."""
    mistakes = [(e, p, n) for e, row in report.confusion.items() for p, n in row.items() if e != p]
    return sorted(mistakes, key=lambda m: (-m[2], m[0], m[1]))[:limit]


def confusion_matrix(report: Report, *, top: int = 15) -> tuple[list[str], list[str], list[list[int]]]:
    """(row labels, column labels, counts) for the ``top`` most frequent agents; the other agents
    are folded into ``(other)``; ``(none)``/``(multi)``/``(other)`` appear where present."""
    frequency: Counter[str] = Counter()
    for expected, row in report.confusion.items():
        for predicted, count in row.items():
            frequency[expected] += count
            frequency[predicted] += count
    keep = [name for name, _ in frequency.most_common() if name not in (NONE, MULTI)][:top]
    kept = set(keep) | {NONE, MULTI}
    cells: Counter[tuple[str, str]] = Counter()
    for expected, row in report.confusion.items():
        for predicted, count in row.items():
            cells[_fold(expected, kept), _fold(predicted, kept)] += count
    rows = keep + [s for s in (NONE, MULTI, OTHER) if any(e == s for e, _ in cells)]
    cols = keep + [s for s in (NONE, MULTI, OTHER) if any(p == s for _, p in cells)]
    return rows, cols, [[cells[r, c] for c in cols] for r in rows]


def _fold(label: str, kept: set[str]) -> str:
    return label if label in kept else OTHER


# -- rendering ----------------------------------------------------------------------------------

_Row = tuple[str, float | None, str]
"""(metric, value, kind): kind is "int", "pct", "ms" or "rate"."""


def _headline(r: Report) -> list[_Row]:
    return [
        ("cases", r.n, "int"),
        ("exact set-match accuracy", r.accuracy, "pct"),
        ("failed decisions", r.failed, "int"),
        *_prf_rows("no route", r.no_route),
        *_prf_rows("multi-intent", r.multi_intent),
        ("multi-intent: exact accuracy", r.multi_intent_accuracy, "pct"),
        ("continuations (sent back to the agent that asked)", r.continued, "int"),
        ("continuations: right", r.continued_right, "int"),
        ("latency per case p50 (ms, batch time / batch size)", r.latency_p50_ms, "ms"),
        ("latency per case p99 (ms, batch time / batch size)", r.latency_p99_ms, "ms"),
        (f"latency per batch p50 (ms, batches of {r.batch_size})", r.batch_p50_ms, "ms"),
        (f"latency per batch p99 (ms, batches of {r.batch_size})", r.batch_p99_ms, "ms"),
        ("throughput (decisions/s)", r.decisions_per_s, "rate"),
    ]


def _prf_rows(name: str, p: PRF) -> list[_Row]:
    """Precision, recall and F1; "-" where there were no positives at all, expected or predicted."""
    measured = p.tp + p.fp + p.fn > 0
    values = (p.precision, p.recall, p.f1) if measured else (None, None, None)
    return [(f"{name}: {metric}", v, "pct") for metric, v in zip(("precision", "recall", "F1"), values, strict=True)]


def _fmt(value: float | None, kind: str) -> str:
    if value is None:
        return "-"
    if kind == "pct":
        return f"{100 * value:.1f}%"
    if kind == "ms":
        return f"{value:.3f}"
    return f"{value:,.0f}"


def _delta(a: float | None, b: float | None, kind: str) -> str:
    if a is None or b is None:
        return "-"
    if kind == "pct":
        return f"{100 * (b - a):+.1f} pp"
    return f"{b - a:+.3f}" if kind == "ms" else f"{b - a:+,.0f}"


def _table(header: Sequence[str], rows: Iterable[Sequence[object]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]


def report_markdown(report: Report, title: str) -> str:
    """The report as Markdown: headline metrics, accuracy per tag, per agent, top confusions."""
    lines = [f"## {title}", ""]
    lines += _table(["metric", "value"], [(m, _fmt(v, k)) for m, v, k in _headline(report)])
    tags = report.per_tag.items()
    lines += ["", "### Accuracy per tag", ""]
    lines += _table(["tag", "cases", "accuracy"], [(t, s.n, _fmt(s.accuracy, "pct")) for t, s in tags])
    agents = sorted(report.per_agent.items(), key=lambda item: (-item[1].support, item[0]))
    lines += ["", "### Per agent", ""]
    lines += _table(
        ["agent", "expected", "predicted", "precision", "recall", "F1"],
        [(n, p.support, p.tp + p.fp, *(_fmt(x, "pct") for x in (p.precision, p.recall, p.f1))) for n, p in agents],
    )
    lines += ["", "### Most frequent confusions (turns expecting at most one agent)", ""]
    lines += _table(["expected", "predicted", "cases"], top_confusions(report))
    return "\n".join(lines)


def compare_markdown(a: Report, b: Report, names: tuple[str, str], title: str | None = None) -> str:
    """Two reports side by side with deltas (second minus first)."""
    first, second = names
    delta = f"{second} - {first}"  # named, so that nobody reads a gain as a loss
    lines = [f"## {title or f'{first} vs {second}'}", ""]
    headline = zip(_headline(a), _headline(b), strict=True)
    lines += _table(
        ["metric", first, second, delta],
        [(m, _fmt(x, k), _fmt(y, k), _delta(x, y, k)) for (m, x, k), (_, y, _) in headline],
    )
    lines += ["", "### Accuracy per tag", ""]
    lines += _table(["tag", "cases", first, second, delta], _side_by_side(a.per_tag, b.per_tag, _tag_cells))
    lines += ["", "### Per-agent F1", ""]
    lines += _table(["agent", "expected", first, second, delta], _side_by_side(a.per_agent, b.per_agent, _f1_cells))
    return "\n".join(lines)


def _tag_cells(score: TagScore | None) -> tuple[int, float | None]:
    return (score.n, score.accuracy) if score else (0, None)


def _f1_cells(score: PRF | None) -> tuple[int, float | None]:
    return (score.support, score.f1) if score else (0, None)


def _side_by_side(
    a: dict[str, _T], b: dict[str, _T], cells: Callable[[_T | None], tuple[int, float | None]]
) -> list[tuple[str, int, str, str, str]]:
    rows = []
    for key in sorted(a.keys() | b.keys()):
        (n_a, x), (n_b, y) = cells(a.get(key)), cells(b.get(key))
        rows.append((key, max(n_a, n_b), _fmt(x, "pct"), _fmt(y, "pct"), _delta(x, y, "pct")))
    return rows


def report_json(runs: Sequence[tuple[str, Report]], *, dataset: str) -> bytes:
    """``{"dataset": ..., "runs": [{"name": ..., "report": {...}}, ...]}``, indented."""
    document = {"dataset": dataset, "runs": [{"name": name, "report": report} for name, report in runs]}
    return msgspec.json.format(msgspec.json.encode(document), indent=2)
