"""The JSON schema of Plano-Orchestrator's answer, for constrained decoding.

``{"route": [...]}`` where every item is one of the turn's agent names and the list holds at most
``max_routes`` of them (default: the number of agents). Bounding the array matters: without
``maxItems`` a weak model can repeat names until ``max_tokens``.

Only keywords that vLLM's xgrammar backend accepts are used: ``uniqueItems`` is rejected there
(``has_xgrammar_unsupported_json_features``), so duplicates are possible and are removed by
``routeyard.router.plano.parse.known_routes``.

The schema is built once per (names, max_routes) and shared: callers must not mutate it.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from functools import lru_cache
from typing import Any

__all__ = ["mean_confidence", "plano_grammar", "route_json_schema"]


def route_json_schema(names: Sequence[str], max_routes: int | None = None) -> dict[str, Any]:
    """The answer schema for a turn that may be routed to ``names`` (in catalog order)."""
    if max_routes is not None and max_routes < 0:
        raise ValueError(f"max_routes must be >= 0, got {max_routes}")
    return _schema(tuple(names), max_routes)


@lru_cache(maxsize=256)
def _schema(names: tuple[str, ...], max_routes: int | None) -> dict[str, Any]:
    unique = tuple(dict.fromkeys(names))
    limit = len(unique) if max_routes is None else min(max_routes, len(unique))
    route: dict[str, Any] = {"type": "array", "maxItems": limit}
    if unique:
        route["items"] = {"type": "string", "enum": list(unique)}
    return {
        "type": "object",
        "properties": {"route": route},
        "required": ["route"],
        "additionalProperties": False,
    }


@lru_cache(maxsize=256)
def plano_grammar(names: tuple[str, ...], max_routes: int | None) -> str:
    """The route schema as xgrammar EBNF with ``json.dumps`` spacing and no other whitespace."""
    import xgrammar

    schema = json.dumps(route_json_schema(names, max_routes))
    return str(xgrammar.Grammar.from_json_schema(schema, any_whitespace=False))


def mean_confidence(cumulative_logprob: float | None, n_tokens: int) -> float | None:
    """exp(mean log-probability) of the generated tokens, in (0, 1]; None when unknown."""
    if cumulative_logprob is None or n_tokens == 0 or not math.isfinite(cumulative_logprob):
        return None
    value = math.exp(cumulative_logprob / n_tokens)
    return min(value, 1.0) if value > 0.0 else None
