"""Reading Plano-Orchestrator's answer: ``{"route": ["Name1", "Name2"]}`` -> route names.

Tolerant the way Plano's gateway is (``orchestrator_model_v1.rs``), plus what Qwen3-based models
emit around the JSON:

- a leading ``<think>...</think>`` block and surrounding whitespace are ignored;
- a Markdown code fence (```` ```json ... ``` ````) is unwrapped;
- if the text is not valid JSON, Plano's fix is applied and parsing retried: single quotes become
  double quotes and literal ``\\n`` sequences are removed (real newlines are JSON whitespace).
- empty output, ``{}``, ``{"route": null}`` and ``{"route": []}`` mean "no route"; empty names
  are skipped and names are stripped of surrounding whitespace.

Errors::

    ValueError
    └── MalformedOutput   the answer could not be read (not JSON, or `route` not a list of
                          strings). Not retriable: the same prompt gives the same answer.
"""

from __future__ import annotations

import json
import re
from collections.abc import Collection, Sequence
from typing import Any

__all__ = ["MalformedOutput", "answer_json", "known_routes", "parse_routes"]

_EXCERPT = 200
_THINK = re.compile(r"\A\s*<think>.*?</think>", re.DOTALL)
_FENCE = re.compile(r"\A```[\w-]*[ \t]*\n?(?P<body>.*?)\n?[ \t]*```\Z", re.DOTALL)


class MalformedOutput(ValueError):
    """The model's answer could not be parsed into route names. Not retriable."""


def _excerpt(text: str) -> str:
    short = text if len(text) <= _EXCERPT else text[:_EXCERPT] + "…"
    return repr(short)


def _unwrap(text: str) -> str:
    """The JSON candidate: without a leading think block, a code fence and outer whitespace."""
    body = _THINK.sub("", text, count=1).strip()
    fence = _FENCE.match(body)
    return fence.group("body").strip() if fence else body


def _load(body: str, text: str) -> Any:
    try:
        return json.loads(body)
    except json.JSONDecodeError:
        pass
    fixed = body.replace("'", '"').replace("\\n", "")  # Plano's fix_json_response
    try:
        return json.loads(fixed)
    except json.JSONDecodeError as exc:
        raise MalformedOutput(f"model output is not JSON ({exc.msg}): {_excerpt(text)}") from None


def _route_names(data: Any, text: str) -> list[str]:
    if not isinstance(data, dict):
        raise MalformedOutput(
            f'expected a JSON object like {{"route": [...]}}, got {type(data).__name__}: {_excerpt(text)}'
        )
    route = data.get("route")
    if route is None:
        return []
    if not isinstance(route, list) or not all(isinstance(name, str) for name in route):
        raise MalformedOutput(f"'route' must be a list of strings: {_excerpt(text)}")
    return [name.strip() for name in route if name.strip()]


def parse_routes(text: str) -> list[str]:
    """The route names in the model's answer, in its order (unknown names not yet removed).

    Raises ``MalformedOutput`` when the answer cannot be read.
    """
    body = _unwrap(text)
    if not body:
        return []
    return _route_names(_load(body, text), text)


def known_routes(routes: Sequence[str], names: Collection[str]) -> tuple[list[str], list[str]]:
    """Split ``routes`` into (names in ``names``, the others), each in order, without duplicates."""
    allowed = set(names)
    kept = [name for name in dict.fromkeys(routes) if name in allowed]
    dropped = [name for name in dict.fromkeys(routes) if name not in allowed]
    return kept, dropped


def answer_json(routes: Sequence[str]) -> str:
    """``routes`` written the way the model answers: ``{"route": ["WeatherAgent"]}``."""
    return json.dumps({"route": list(routes)}, ensure_ascii=False)
