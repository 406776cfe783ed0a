"""``routeyard eval``'s cases: a dataset, optionally scored against a real catalog, and what to warn about."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from routeyard.consumers.errors import DatasetError

if TYPE_CHECKING:
    from routeyard.router.evaluation.evaluate import Case

TAGS_HELP = """\
dataset: JSON Lines (gzip or plain), one case a line:
  {"id": str, "agents": [{"name", "description", "examples"?}, ...],
   "conversation": [{"role": "user"|"assistant", "content", "name"?}, ...],
   "expected_routes": [str, ...], "tags": [str, ...], "meta": {"dialogue_id"?, ...}}
  "expected_routes": [] means no agent should take the turn. Assistant messages without "name" are
  attributed to the agent the previous case of the same meta.dialogue_id expected (the router knows
  who spoke), so the continuation policy is scored as it runs. With --catalog, "agents" is replaced
  by the catalog's agents (their rules, examples and descriptions).

tags: any strings; accuracy is reported per tag. Reserved tags, with a meaning in the metrics:
  multi_intent       2+ agents expected: "multi-intent: exact accuracy" is over these cases
  negative           no agent expected (also soft_negative, chit_chat, out_of_scope)
  follow_up, context_dependent, first_turn, domain_switch, return_to_service, declines_offer,
  single_agent_catalog, unseen_service, single_turn: reported per tag (see the data's README)

latency: "per case" is a batch's wall time divided by its size (engines decide in batches);
"per batch" is one engine call's wall time, for batches of --batch-size cases."""


def eval_cases(dataset: Path, catalog: Path | None, *, limit: int | None, sample: int | None, seed: int) -> list[Case]:
    """The cases to score; with ``catalog``, routed among its agents. Raises ``DatasetError``."""
    from routeyard.router.catalog import load_catalog
    from routeyard.router.evaluation.dialogue import with_catalog
    from routeyard.router.evaluation.evaluate import load_cases

    cases = load_cases(dataset, limit=limit, sample=sample, seed=seed)
    if not cases:
        raise DatasetError(f"{dataset}: no cases")
    if catalog is None:
        return cases
    return with_catalog(cases, load_catalog(catalog).agents, str(catalog))


def warn_rules(engines: list[str], cases: list[Case], stream: TextIO | None = None) -> None:
    """Say so when the rules engine is scored but no agent has rules: it can route nothing."""
    if "rules" not in engines:
        return
    if any(a.rules.keywords or a.rules.patterns for case in cases for a in case.agents):
        return
    print(
        "routeyard: warning: no agent has rules (keywords or patterns), so the rules engine routes no "
        "turn; score a catalog that has them with --catalog agents.yaml",
        file=stream or sys.stderr,
    )
