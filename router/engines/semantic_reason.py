"""Why the semantic engine decided as it did, in the terms of its settings (``SemanticSettings``).

``score_turn`` records the facts that decided (``Why``: the best agent's score, the closeness to
closings and small talk, each clause's check) as it decides; ``reason`` renders them once per
decision, with agent names, for ``RoutingDecision.reason`` and ``routeyard explain``::

    no route: UpperAgent 0.335 - negative_weight 0.60 x small talk 0.420 = 0.083 < min_similarity 0.10
    TaxiAgent 0.710 >= min_similarity 0.10 (next HotelAgent 0.590, 0.120 behind); clause 2: MessagingAgent
    0.520 >= clause_min_similarity 0.25, 0.300 ahead of TaxiAgent >= clause_margin 0.20: added

Message text never appears (the decisions topic carries no content): clauses are numbered.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

from routeyard.router.settings import SemanticSettings

__all__ = ["ClauseCheck", "Why", "reason"]


class ClauseCheck(NamedTuple):
    """One clause of a multi-clause message: its best agent, and whether that agent was added."""

    agent: int
    score: float
    runner_up: int | None
    margin: float
    negative: float
    added: bool


class Why(NamedTuple):
    """What decided a turn (agent indices into the turn's agents)."""

    best: int
    top: float
    runner_up: int | None
    second: float
    negative: float
    """The message's closeness to closings or (weighted) small talk, whichever is closer."""
    negative_kind: str
    last_max: float
    """The message's own best similarity to any agent (before context)."""
    closing: bool
    extras: tuple[int, ...] = ()
    clauses: tuple[ClauseCheck, ...] = ()
    capped: tuple[int, ...] = ()
    switch: tuple[int, int] | None = None
    """(previous agent, the message's own agent) when the message switched away from the previous one."""
    handover: bool = False
    """The previous agent kept the turn too: the message opened with a reply to its open task."""
    stayed: int | None = None
    """The previous agent, when it kept the turn alone: its task was open and no other agent was clearly closer."""


def reason(why: Why, names: Sequence[str], s: SemanticSettings) -> str:
    """One line: the rule that decided, then each further agent's (or clause's) rule."""
    if why.closing:
        return (
            f"no route: a {why.negative_kind} turn, {_f(why.negative)} >= closing_similarity "
            f"{_t(s.closing_similarity)}, {_f(why.negative - why.last_max)} closer than any agent "
            f">= closing_margin {_t(s.closing_margin)}"
        )
    head = _best(why, names, s)
    if why.top - s.negative_weight * why.negative < s.min_similarity:
        return f"no route: {head} < min_similarity {_t(s.min_similarity)}"
    parts = [f"{head} >= min_similarity {_t(s.min_similarity)}" + _next(why, names)]
    parts += [f"{names[i]} within extra_margin {_t(s.extra_margin)} of {names[why.best]}" for i in why.extras]
    parts += [_clause(n, c, names, s) for n, c in enumerate(why.clauses, 1) if c.agent != why.best]
    if why.switch is not None:
        parts.append(_switch(why.switch, why.handover, names, s))
    if why.stayed is not None:
        parts.append(
            f"stay with {names[why.stayed]}: its task is open and {names[why.best]} is not stay_margin "
            f"{_t(s.stay_margin)} closer to the message"
        )
    if why.capped:
        parts.append(f"max_routes {s.max_routes}: left out {', '.join(names[i] for i in why.capped)}")
    return "; ".join(parts)


def _f(value: float) -> str:
    """A similarity as ``scores`` shows it (rounded to 4 places there): 3 places."""
    return f"{round(value, 4):.3f}"


def _t(threshold: float) -> str:
    """A threshold as set: two places (0.40), more where it has them (0.125)."""
    return f"{threshold:.2f}" if round(threshold, 2) == threshold else f"{threshold:g}"


def _best(why: Why, names: Sequence[str], s: SemanticSettings) -> str:
    score = f"{names[why.best]} {_f(why.top)}"
    penalty = s.negative_weight * why.negative
    if penalty < 0.0005:
        return score
    return (
        f"{score} - negative_weight {_t(s.negative_weight)} x {why.negative_kind} {_f(why.negative)}"
        f" = {_f(why.top - penalty)}"
    )


def _next(why: Why, names: Sequence[str]) -> str:
    if why.runner_up is None:
        return ""
    return f" (next {names[why.runner_up]} {_f(why.second)}, {_f(why.top - why.second)} behind)"


def _switch(switch: tuple[int, int], handed: bool, names: Sequence[str], s: SemanticSettings) -> str:
    previous, own = (names[i] for i in switch)
    head = (
        f"switch from {previous} to {own}: {own} >= switch_min_similarity {_t(s.switch_min_similarity)}, "
        f">= switch_margin {_t(s.switch_margin)} ahead of {previous}"
    )
    return head + (f"; handover: the message replies to {previous}'s open task" if handed else "")


def _clause(number: int, c: ClauseCheck, names: Sequence[str], s: SemanticSettings) -> str:
    head = f"clause {number}: {names[c.agent]} {_f(c.score)}"
    if c.score < s.clause_min_similarity:
        return f"{head} < clause_min_similarity {_t(s.clause_min_similarity)}: not added"
    ahead = f"{_f(c.margin)} ahead of {names[c.runner_up]}" if c.runner_up is not None else "the only agent"
    if c.margin < s.clause_margin:
        return f"{head}, {ahead} < clause_margin {_t(s.clause_margin)}: ambiguous, not added"
    if not c.added:
        return f"{head}, closer to a closing or small talk ({_f(c.negative)}): not added"
    return (
        f"{head} >= clause_min_similarity {_t(s.clause_min_similarity)}, {ahead} >= clause_margin "
        f"{_t(s.clause_margin)}: added"
    )
