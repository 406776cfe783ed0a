"""``routeyard explain`` prints why an engine decided (as recorded at decision time) and a raw output
only for engines whose raw output a model wrote."""

from __future__ import annotations

import pytest
from routeyard.consumers.tools.explain import Explanation, explain_markdown
from routeyard.schemas import RoutingDecision


def _explain(engine: str, *, reason: str | None, raw: str | None) -> list[str]:
    decision = RoutingDecision(
        event_id="e1",
        conversation_id="c1",
        routes=[],
        mode="parallel",
        engine=engine,
        raw_output=raw,
        reason=reason,
        scores={"UpperAgent": 0.335},
    )
    return explain_markdown(Explanation("e1", decisions=[decision])).splitlines()


def test_semantic_decision_says_which_threshold_decided_and_shows_no_raw_output() -> None:
    lines = _explain("semantic", reason="no route: UpperAgent 0.335 < min_similarity 0.40", raw='{"route": []}')
    assert "why: no route: UpperAgent 0.335 < min_similarity 0.40" in lines
    assert "scores: UpperAgent 0.335" in lines
    assert not [line for line in lines if line.startswith("raw output")]


@pytest.mark.parametrize("engine", ["vllm", "openai"])
def test_model_engines_show_their_raw_output(engine: str) -> None:
    lines = _explain(engine, reason=None, raw='{"route": ["UpperAgent"]}')
    assert 'raw output: "{\\"route\\": [\\"UpperAgent\\"]}"' in lines
    assert not [line for line in lines if line.startswith("why:")]


def test_a_decision_recorded_before_reasons_existed_has_no_why_line() -> None:
    assert not [line for line in _explain("semantic", reason=None, raw="[]") if line.startswith("why:")]
