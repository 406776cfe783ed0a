"""Offline evaluation, the dialogue side: who spoke, a real catalog, and the continuation policy.

- ``name_speakers``: the router knows which agent wrote each assistant message (``Message.name``);
  a dataset often does not. Where a case's last assistant message has no name and the case before
  it in the same dialogue (``meta.dialogue_id``) expected exactly one agent, that agent wrote it:
  its name is filled in, so the continuation policy sees what the pipeline would.
- ``with_catalog``: every case scored against one real catalog (its rules, examples and
  descriptions) instead of the catalog the case carries; expected routes must be its agents.
- ``continued``: the routes after the continuation policy, as the router worker applies it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import msgspec
from routeyard.router.catalog import AgentSpec
from routeyard.router.continuation import continue_turn
from routeyard.router.engines.base import EngineResult
from routeyard.router.errors import DatasetError
from routeyard.router.plan import Routing

if TYPE_CHECKING:
    from routeyard.router.evaluation.evaluate import Case


def name_speakers(cases: Sequence[Case], dialogues: Sequence[str | None]) -> list[Case]:
    """``cases`` with the last assistant message named after the agent the previous turn expected."""
    previous: dict[str, Case] = {}
    named: list[Case] = []
    for case, dialogue in zip(cases, dialogues, strict=True):
        before = previous.get(dialogue) if dialogue is not None else None
        named.append(_named(case, before) if before is not None else case)
        if dialogue is not None:
            previous[dialogue] = case
    return named


def _named(case: Case, before: Case) -> Case:
    spoken = [i for i, m in enumerate(case.conversation) if m.role == "assistant"]
    if not spoken or len(before.expected) != 1 or len(before.conversation) != spoken[-1]:
        return case  # not the turn right after ``before``, or no single agent answered it
    i = spoken[-1]
    message = case.conversation[i]
    if message.name:
        return case
    (agent,) = before.expected
    conversation = [*case.conversation[:i], msgspec.structs.replace(message, name=agent), *case.conversation[i + 1 :]]
    return msgspec.structs.replace(case, conversation=conversation)


def with_catalog(cases: Sequence[Case], agents: tuple[AgentSpec, ...], source: str) -> list[Case]:
    """``cases`` routed among ``agents``; raises ``DatasetError`` for expected routes it lacks."""
    names = {a.name for a in agents}
    unknown = sorted({name for case in cases for name in case.expected} - names)
    if unknown:
        shown = ", ".join(unknown[:10]) + (f" (and {len(unknown) - 10} more)" if len(unknown) > 10 else "")
        raise DatasetError(f"expected route(s) not in the catalog {source}: {shown}")
    return [msgspec.structs.replace(case, agents=agents) for case in cases]


def continued(case: Case, result: EngineResult, kept: list[str], override: float) -> tuple[frozenset[str], str | None]:
    """The routes after the continuation policy, and the agent it sent the turn back to (if any)."""
    routing = Routing(routes=kept, selected=kept, dropped=[], default_used=False, fallback_reason=None)
    after = continue_turn(routing, result, case.request(), override=override)
    return frozenset(after.routes), after.continuation
