"""Offline evaluation: the dataset loader, the engine run's bookkeeping, the metrics and their rendering.

The metrics are checked on nine hand-built cases whose answers are worked out by hand below.
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from routeyard.router.catalog import AgentSpec
from routeyard.router.engines.base import EngineBase, EngineResult, RoutingRequest
from routeyard.router.engines.scoring import (
    MULTI,
    NONE,
    OTHER,
    compare_markdown,
    confusion_matrix,
    percentile,
    prf,
    report_json,
    report_markdown,
    score,
)
from routeyard.router.evaluation.evaluate import Case, DatasetError, Outcome, load_cases, run_engine
from routeyard.schemas import Message

AGENTS = tuple(AgentSpec(name=n, description=f"{n} things") for n in ("A", "B", "C"))
HELLO = [Message(role="user", content="hello")]

# (expected, predicted, tag, failed)
SCRIPT: list[tuple[set[str], set[str], str, bool]] = [
    ({"A"}, {"A"}, "first_turn", False),  # 1 right
    ({"B"}, {"A"}, "first_turn", False),  # 2 B -> A
    (set(), set(), "negative", False),  # 3 right, no-route TP
    (set(), {"C"}, "negative", False),  # 4 (none) -> C, no-route FN
    ({"A", "B"}, {"A", "B"}, "multi_intent", False),  # 5 right, multi TP
    ({"A", "C"}, {"A"}, "multi_intent", False),  # 6 multi FN (not in the confusion table)
    ({"C"}, set(), "follow_up", True),  # 7 failed: C -> (none), no-route FP
    ({"C"}, {"B", "C"}, "follow_up", False),  # 8 C -> (multi), multi FP
    ({"A"}, set(), "follow_up", False),  # 9 A -> (none), no-route FP
]


def _cases() -> list[Case]:
    return [
        Case(id=f"c{i}", agents=AGENTS, conversation=HELLO, expected=frozenset(expected), tags=(tag,))
        for i, (expected, _, tag, _) in enumerate(SCRIPT, 1)
    ]


def _outcomes() -> list[Outcome]:
    """Latencies 1..9 ms; cases 1-4 in batch 0 (4 ms), 5-9 in batch 1 (5 ms)."""
    return [
        Outcome(
            case_id=f"c{i}",
            predicted=frozenset(predicted),
            error="boom" if failed else None,
            engine="x",
            latency_ms=float(i),
            batch=0 if i <= 4 else 1,
            batch_s=0.004 if i <= 4 else 0.005,
        )
        for i, (_, predicted, _, failed) in enumerate(SCRIPT, 1)
    ]


# -- metrics --------------------------------------------------------------------------------------


def test_exact_set_match_accuracy_and_failures() -> None:
    report = score(_cases(), _outcomes())
    assert (report.n, report.correct, report.failed) == (9, 3, 1)
    assert report.accuracy == pytest.approx(3 / 9)
    assert report.decided_by == {"x": 8}


def test_accuracy_per_tag() -> None:
    per_tag = score(_cases(), _outcomes()).per_tag
    assert {tag: (s.n, s.correct) for tag, s in per_tag.items()} == {
        "first_turn": (2, 1),
        "negative": (2, 1),
        "multi_intent": (2, 1),
        "follow_up": (3, 0),
    }
    assert per_tag["follow_up"].accuracy == 0.0
    assert per_tag["negative"].accuracy == 0.5


def test_no_route_precision_recall_f1() -> None:
    no_route = score(_cases(), _outcomes()).no_route
    # Expected empty: cases 3, 4. Predicted empty: 3, 7 (failed), 9.
    assert (no_route.tp, no_route.fp, no_route.fn) == (1, 2, 1)
    precision, recall = 1 / 3, 1 / 2
    assert no_route.precision == pytest.approx(precision)
    assert no_route.recall == pytest.approx(recall)
    assert no_route.f1 == pytest.approx(2 * precision * recall / (precision + recall))  # 0.4


def test_multi_intent_decision_and_exact_accuracy() -> None:
    report = score(_cases(), _outcomes())
    # Expected 2+: cases 5, 6. Predicted 2+: 5, 8.
    assert (report.multi_intent.tp, report.multi_intent.fp, report.multi_intent.fn) == (1, 1, 1)
    assert report.multi_intent.f1 == pytest.approx(0.5)
    assert report.multi_intent_accuracy == pytest.approx(0.5)


def test_per_agent_memberships() -> None:
    per_agent = score(_cases(), _outcomes()).per_agent
    counts = {name: (p.tp, p.fp, p.fn) for name, p in per_agent.items()}
    assert counts == {"A": (3, 1, 1), "B": (1, 1, 1), "C": (1, 1, 2)}
    assert per_agent["A"].precision == pytest.approx(0.75)
    assert per_agent["C"].recall == pytest.approx(1 / 3)
    assert per_agent["C"].f1 == pytest.approx(0.4)  # 2 * 1/2 * 1/3 / (1/2 + 1/3)
    assert per_agent["C"].support == 3


def test_confusion_between_single_agent_labels() -> None:
    confusion = score(_cases(), _outcomes()).confusion
    assert confusion == {
        "A": {"A": 1, NONE: 1},
        "B": {"A": 1},
        "C": {NONE: 1, MULTI: 1},
        NONE: {NONE: 1, "C": 1},
    }


def test_confusion_matrix_keeps_the_most_frequent_agents() -> None:
    report = score(_cases(), _outcomes())
    rows, cols, counts = confusion_matrix(report, top=2)
    # Frequencies (row + column totals): A 4, C 3, B 1 -> A and C kept, B folded into (other).
    assert rows == ["A", "C", NONE, OTHER]
    assert cols == ["A", "C", NONE, MULTI]
    assert counts == [[1, 0, 1, 0], [0, 0, 1, 1], [0, 1, 1, 0], [1, 0, 0, 0]]


def test_latency_percentiles_and_throughput() -> None:
    report = score(_cases(), _outcomes())
    assert report.latency_p50_ms == pytest.approx(5.0)
    assert report.latency_p99_ms == pytest.approx(8.92)  # rank 7.92 between 8 and 9
    assert report.decisions_per_s == pytest.approx(9 / 0.009)
    assert (report.batch_p50_ms, report.batch_p99_ms, report.batch_size) == pytest.approx((4.5, 4.99, 5))


def test_prf_and_percentile_edges() -> None:
    assert prf(0, 0, 0).f1 == 0.0
    assert prf(2, 0, 0).f1 == 1.0
    assert percentile([], 50) == 0.0
    assert percentile([3.0], 99) == 3.0


def test_outcomes_must_match_cases() -> None:
    with pytest.raises(ValueError, match="c2"):
        score(_cases()[:2], list(reversed(_outcomes()[:2])))
    with pytest.raises(ValueError):
        score(_cases(), _outcomes()[:3])


# -- rendering ------------------------------------------------------------------------------------


def test_markdown_report() -> None:
    text = report_markdown(score(_cases(), _outcomes()), "demo")
    assert text.startswith("## demo")
    assert "| exact set-match accuracy | 33.3% |" in text
    assert "| no route: F1 | 40.0% |" in text
    assert "| follow_up | 3 | 0.0% |" in text
    assert "| C | 3 | 2 | 50.0% | 33.3% | 40.0% |" in text
    assert "| latency per case p50 (ms, batch time / batch size) | 5.000 |" in text
    assert "| latency per batch p50 (ms, batches of 5) | 4.500 |" in text


def test_markdown_shows_no_value_for_a_class_never_seen() -> None:
    cases = [Case(id="c", agents=AGENTS, conversation=HELLO, expected=frozenset({"A"}))]
    report = score(cases, [Outcome(case_id="c", predicted=frozenset({"A"}))])
    assert "| multi-intent: F1 | - |" in report_markdown(report, "t")


def test_compare_markdown_deltas() -> None:
    a = score(_cases(), _outcomes())
    better = [Outcome(case_id=c.id, predicted=c.expected, batch_s=0.001) for c in _cases()]
    b = score(_cases(), better)
    text = compare_markdown(a, b, ("old", "new"))
    assert text.startswith("## old vs new")
    assert "| metric | old | new | new - old |" in text  # the column says which way it subtracts
    assert "| exact set-match accuracy | 33.3% | 100.0% | +66.7 pp |" in text
    assert "| follow_up | 3 | 0.0% | 100.0% | +100.0 pp |" in text
    assert "| failed decisions | 1 | 0 | -1 |" in text
    same = compare_markdown(a, a, ("x", "y"))
    assert "| exact set-match accuracy | 33.3% | 33.3% | +0.0 pp |" in same


def test_report_json_round_trip() -> None:
    report = score(_cases(), _outcomes())
    document = json.loads(report_json([("x", report)], dataset="d.jsonl"))
    assert document["dataset"] == "d.jsonl"
    assert document["runs"][0]["name"] == "x"
    assert document["runs"][0]["report"]["no_route"]["fp"] == 2
    assert document["runs"][0]["report"]["confusion"]["C"] == {NONE: 1, MULTI: 1}


# -- loading --------------------------------------------------------------------------------------


def _line(i: int, expected: list[str], **extra: Any) -> dict[str, Any]:
    case: dict[str, Any] = {
        "id": f"case-{i}",
        "agents": [
            {"name": "Weather", "description": "Forecasts", "examples": ["rain tomorrow?"]},
            {"name": "Food", "description": "Restaurants"},
        ],
        "conversation": [{"role": "user", "content": f"question {i}"}],
        "expected_routes": expected,
        "tags": ["first_turn"],
        "meta": {"source": "test"},
    }
    return case | extra


def _write(path: Path, lines: Sequence[dict[str, Any] | str], *, gz: bool = False) -> Path:
    text = "\n".join(line if isinstance(line, str) else json.dumps(line) for line in lines) + "\n"
    if gz:
        with gzip.open(path, "wt", encoding="utf-8") as out:
            out.write(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


@pytest.mark.parametrize("gz", [False, True])
def test_load_cases_plain_and_gzip(tmp_path: Path, gz: bool) -> None:
    path = _write(tmp_path / "cases.jsonl", [_line(0, ["Weather"]), "", _line(1, [])], gz=gz)
    cases = load_cases(path)
    assert [c.id for c in cases] == ["case-0", "case-1"]
    assert cases[0].expected == frozenset({"Weather"})
    assert cases[1].expected == frozenset()
    assert cases[0].tags == ("first_turn",)
    assert cases[0].conversation == [Message(role="user", content="question 0")]
    assert cases[0].agents[0].examples == ("rain tomorrow?",)
    assert cases[0].agents is cases[1].agents  # one tuple per distinct catalog


def test_load_cases_limit_and_sample(tmp_path: Path) -> None:
    path = _write(tmp_path / "cases.jsonl", [_line(i, []) for i in range(20)])
    assert [c.id for c in load_cases(path, limit=3)] == ["case-0", "case-1", "case-2"]
    sample = [c.id for c in load_cases(path, sample=5, seed=7)]
    assert len(set(sample)) == 5
    assert sample == sorted(sample, key=lambda i: int(i.split("-")[1]))  # file order kept
    assert sample == [c.id for c in load_cases(path, sample=5, seed=7)]
    assert sample != [c.id for c in load_cases(path, sample=5, seed=8)]
    assert {c.id for c in load_cases(path, limit=4, sample=10)} == {f"case-{i}" for i in range(4)}


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ('{"id": "x" oops}', r"cases\.jsonl:3: JSON is malformed"),
        (json.dumps({"id": "x"}), r":3: Object missing required field"),
        (_line(2, ["Nobody"]), r":3: expected route\(s\) Nobody not among the case's agents"),
        (_line(2, [], conversation=[{"role": "robot", "content": "hi"}]), r":3: .*role"),
        (_line(2, [], conversation=[]), r":3: the conversation is empty"),
        (_line(2, [], agents=[{"name": "9lives", "description": "x"}]), r":3: invalid agent: agent name '9lives'"),
        (_line(2, [], agents=[{"name": "A", "description": "x"}] * 2), r":3: duplicate agent names: A"),
    ],
)
def test_malformed_line_is_named(tmp_path: Path, bad: dict[str, Any] | str, message: str) -> None:
    path = _write(tmp_path / "cases.jsonl", [_line(0, []), _line(1, []), bad])
    with pytest.raises(DatasetError, match=message):
        load_cases(path)


def test_missing_and_corrupt_files(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match=r"cannot read dataset .*nope\.jsonl: No such file"):
        load_cases(tmp_path / "nope.jsonl")
    truncated = tmp_path / "cut.jsonl.gz"
    truncated.write_bytes(gzip.compress(json.dumps(_line(0, [])).encode() * 50)[:40])
    with pytest.raises(DatasetError, match="cannot read dataset"):
        load_cases(truncated)


# -- running an engine ----------------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class Scripted(EngineBase):
    """Answers from a script, advancing a fake clock by 10 ms per request of each batch."""

    name = "scripted"

    def __init__(self, answers: dict[str, EngineResult | Exception], clock: Clock) -> None:
        self.answers, self.clock = answers, clock
        self.batches: list[list[str]] = []

    async def decide(self, requests: Sequence[RoutingRequest]) -> list[EngineResult]:
        self.batches.append([r.event_id for r in requests])
        self.clock.now += 0.010 * len(requests)
        answers = [self.answers.get(r.event_id, EngineResult()) for r in requests]
        for answer in answers:
            if isinstance(answer, Exception):
                raise answer
        return [a for a in answers if isinstance(a, EngineResult)]


async def test_run_engine_batches_and_times_each_batch() -> None:
    cases = _cases()[:5]
    clock = Clock()
    engine = Scripted({"c1": EngineResult(routes=["A", "Nope", "A"]), "c2": EngineResult(error="no")}, clock)
    seen: list[tuple[int, int]] = []
    outcomes = await run_engine(engine, cases, batch_size=2, progress=lambda d, t: seen.append((d, t)), clock=clock)
    assert engine.batches == [["c1", "c2"], ["c3", "c4"], ["c5"]]
    assert seen == [(0, 5), (2, 5), (4, 5), (5, 5)]
    assert [o.batch for o in outcomes] == [0, 0, 1, 1, 2]
    assert [o.batch_s for o in outcomes] == pytest.approx([0.02, 0.02, 0.02, 0.02, 0.01])
    assert [o.latency_ms for o in outcomes] == pytest.approx([10.0] * 5)
    assert (outcomes[0].predicted, outcomes[0].dropped) == (frozenset({"A"}), ("Nope",))
    assert (outcomes[1].predicted, outcomes[1].error) == (frozenset(), "no")
    assert outcomes[2].engine == "scripted"
    assert score(cases, outcomes).decisions_per_s == pytest.approx(5 / 0.05)


async def test_a_batch_that_raises_counts_as_failed_decisions() -> None:
    clock = Clock()
    engine = Scripted({"c3": RuntimeError("server gone")}, clock)
    outcomes = await run_engine(engine, _cases()[:4], batch_size=2, clock=clock)
    assert [o.failed for o in outcomes] == [False, False, True, True]
    assert outcomes[3].error == "RuntimeError: server gone"
    assert score(_cases()[:4], outcomes).failed == 2


async def test_an_engine_answering_the_wrong_number_of_results_is_an_error() -> None:
    class Short(EngineBase):
        async def decide(self, requests: Sequence[RoutingRequest]) -> list[EngineResult]:
            return []

    with pytest.raises(ValueError, match="0 results for 2 requests"):
        await run_engine(Short(), _cases()[:2])
    with pytest.raises(ValueError, match="batch_size"):
        await run_engine(Short(), _cases(), batch_size=0)


# -- one loader for eval and tune -----------------------------------------------------------------


class _WordEncoder:
    """Bag of words hashed into 64 dimensions, L2-normalised: enough for tune to run."""

    name = "words"

    def encode(self, texts: Sequence[str]) -> Any:
        import numpy as np

        rows = np.zeros((len(texts), 64), dtype=np.float32)
        for i, text in enumerate(texts):
            for word in text.lower().split():
                rows[i, sum(word.encode()) % 64] += 1.0
        norms = np.linalg.norm(rows, axis=1, keepdims=True)
        return rows / np.where(norms == 0, 1, norms)


def test_tune_reads_datasets_with_evals_loader(tmp_path: Path) -> None:
    """tune accepts what eval accepts (a gzip file whatever its name) and refuses what it refuses,
    naming the file and line."""
    from routeyard.router.evaluation.tuning import tune
    from routeyard.router.settings import SemanticSettings

    lines = [_line(i, ["Weather"] if i % 2 else []) for i in range(6)]
    path = _write(tmp_path / "cases.jsonl", lines, gz=True)  # gzip, though not named .gz
    result = tune(path, SemanticSettings(), limit=None, encoder=_WordEncoder(), grid={"min_similarity": (0.1, 0.9)})
    assert result.best.cases == 6
    bad = _write(tmp_path / "bad.jsonl", [*lines, _line(6, ["Nobody"])])
    with pytest.raises(DatasetError, match=r"bad\.jsonl:7: expected route\(s\) Nobody"):
        tune(bad, SemanticSettings(), limit=None, encoder=_WordEncoder())
