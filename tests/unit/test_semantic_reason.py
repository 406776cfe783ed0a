"""The semantic engine's reason: the rule that decided, in its settings' names and values, made by
``score_turn`` at decision time (synthetic similarities: no model needed)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from routeyard.router.engines.semantic import SemanticSettings, TurnScores, score_turn
from routeyard.router.engines.semantic_reason import reason

NAMES = ("TaxiAgent", "HotelAgent", "UpperAgent")
S = SemanticSettings(min_similarity=0.4, negative_weight=0.6, extra_margin=0.0)


def _turn(
    last: list[float], *, clauses: list[list[float]] | None = None, closing: float = 0.0, small_talk: float = 0.0
) -> TurnScores:
    rows: Any = np.array(clauses or [], dtype=float).reshape(len(clauses or []), len(NAMES))
    return TurnScores(
        last=np.array(last),
        clauses=rows,
        earlier=np.zeros((0, len(NAMES))),
        assistant=None,
        closing=closing,
        small_talk=small_talk,
        clause_negative=np.zeros(len(rows)),
    )


def _decide(turn: TurnScores, s: SemanticSettings = S) -> tuple[list[str], str]:
    verdict = score_turn(turn, s)
    assert verdict.why is not None
    return [NAMES[i] for i in verdict.routes], reason(verdict.why, NAMES, s)


def test_route_names_the_threshold_it_cleared_and_the_runner_up() -> None:
    routes, why = _decide(_turn([0.71, 0.59, 0.1]))
    assert routes == ["TaxiAgent"]
    assert why == "TaxiAgent 0.710 >= min_similarity 0.40 (next HotelAgent 0.590, 0.120 behind)"


def test_no_route_below_the_threshold() -> None:
    routes, why = _decide(_turn([0.1, 0.2, 0.335]))
    assert routes == []
    assert why == "no route: UpperAgent 0.335 < min_similarity 0.40"


def test_no_route_shows_the_small_talk_penalty_that_sank_it() -> None:
    routes, why = _decide(_turn([0.1, 0.2, 0.5], small_talk=0.3))
    assert routes == []
    assert why == "no route: UpperAgent 0.500 - negative_weight 0.60 x small talk 0.300 = 0.320 < min_similarity 0.40"


def test_a_closing_turn_names_closing_similarity_and_margin() -> None:
    routes, why = _decide(_turn([0.2, 0.1, 0.1], closing=0.7))
    assert routes == []
    assert why == (
        "no route: a closing turn, 0.700 >= closing_similarity 0.40, 0.500 closer than any agent >= closing_margin 0.20"
    )


def test_a_clause_adds_its_agent_when_clear_ahead() -> None:
    routes, why = _decide(_turn([0.6, 0.5, 0.1], clauses=[[0.7, 0.1, 0.1], [0.1, 0.6, 0.2]]))
    assert routes == ["TaxiAgent", "HotelAgent"]
    assert why.endswith(
        "clause 2: HotelAgent 0.600 >= clause_min_similarity 0.25, "
        "0.400 ahead of UpperAgent >= clause_margin 0.20: added"
    )


def test_an_ambiguous_clause_margin_adds_nobody() -> None:
    routes, why = _decide(_turn([0.6, 0.5, 0.1], clauses=[[0.7, 0.1, 0.1], [0.1, 0.45, 0.4]]))
    assert routes == ["TaxiAgent"]
    assert why.endswith(
        "clause 2: HotelAgent 0.450, 0.050 ahead of UpperAgent < clause_margin 0.20: ambiguous, not added"
    )


def test_extra_margin_and_max_routes_are_named() -> None:
    s = SemanticSettings(min_similarity=0.4, extra_margin=0.15, max_routes=2)
    routes, why = _decide(_turn([0.7, 0.6, 0.58]), s)
    assert routes == ["TaxiAgent", "HotelAgent"]
    assert "HotelAgent within extra_margin 0.15 of TaxiAgent" in why
    assert why.endswith("max_routes 2: left out UpperAgent")


@pytest.mark.parametrize("threshold", [0.3, 0.5])
def test_the_reason_uses_the_settings_the_decision_was_made_with(threshold: float) -> None:
    s = SemanticSettings(min_similarity=threshold)
    routes, why = _decide(_turn([0.45, 0.1, 0.1]), s)
    assert (routes == ["TaxiAgent"]) == (threshold < 0.45)
    assert f"min_similarity {threshold:.2f}" in why


def test_a_threshold_is_shown_as_set() -> None:
    s = SemanticSettings(min_similarity=0.125)
    assert _decide(_turn([0.1, 0.05, 0.0]), s)[1] == "no route: TaxiAgent 0.100 < min_similarity 0.125"
