"""A catalog's problems, one line each, in the form editors and ``grep`` read: ``FILE:LINE: WHERE: WHAT``.

``problems`` turns pydantic's ``ValidationError`` into such lines: every problem (not only the
first), where it is (``agents[0] (WeatherAgent): rules.patterns[1]``), the YAML line when the
catalog came from a file, and "did you mean" for a misspelt field (``unknown field "descripton";
did you mean "description"?``). A required field that a misspelt key was meant to be is not
reported twice.
"""

from __future__ import annotations

import difflib
import typing
from collections.abc import Sequence
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

__all__ = ["problems", "yaml_problem"]

Loc = tuple[int | str, ...]


def problems(exc: ValidationError, data: Any, model: type[BaseModel], *, source: str, root: Any = None) -> list[str]:
    """One line per problem of ``exc`` (raised validating ``data`` as ``model``); ``root``: the YAML
    node tree ``data`` was read from, for line numbers (None: no line numbers)."""
    errors = exc.errors()
    meant = {(*e["loc"][:-1], _suggestion(e["loc"], model)) for e in errors if e["type"] == "extra_forbidden"}
    found: list[tuple[int, str]] = []
    for err in errors:
        loc: Loc = tuple(err["loc"])
        if err["type"] == "missing" and loc in meant:
            continue  # reported as the misspelt key's "did you mean"
        line = _line(root, loc)
        where = f"{source}:{line}" if line else source
        at = _where(loc[:-1] if err["type"] == "extra_forbidden" else loc, data)
        found.append((line or 0, f"{where}: {at}: {_message(err, loc, model)}"))
    return [text for _, text in sorted(found, key=lambda item: item[0])]


def yaml_problem(exc: yaml.YAMLError, source: str) -> str:
    """``FILE:LINE: what YAML found``, instead of PyYAML's ``in "<unicode string>", line 5``."""
    problem, context = getattr(exc, "problem_mark", None), getattr(exc, "context_mark", None)
    mark = problem or context
    where = f"{source}:{mark.line + 1}" if mark is not None else source
    what = str(getattr(exc, "problem", None) or exc)
    if getattr(exc, "context", None):
        started = f" that starts at line {context.line + 1}" if context is not None and context is not mark else ""
        what += f" ({exc.context}{started})"
    return f"{where}: not valid YAML: {what}"


def _message(err: Any, loc: Loc, model: type[BaseModel]) -> str:
    if err["type"] == "extra_forbidden":
        suggestion = _suggestion(loc, model)
        hint = f'; did you mean "{suggestion}"?' if suggestion else ""
        return f'unknown field "{loc[-1]}"{hint}'
    if err["type"] == "missing":
        return "field required"
    return str(err["msg"]).removeprefix("Value error, ")


def _where(loc: Loc, data: Any) -> str:
    """``agents[0] (WeatherAgent): rules.patterns[1]``; an unknown key names itself in the message."""
    if len(loc) >= 2 and loc[0] == "agents" and isinstance(loc[1], int):
        agents = data.get("agents") if isinstance(data, dict) else None
        entry = agents[loc[1]] if isinstance(agents, list) and loc[1] < len(agents) else None
        name = entry.get("name") if isinstance(entry, dict) else None
        head = f"agents[{loc[1]}]" + (f" ({name})" if isinstance(name, str) else "")
        rest = _path(loc[2:])
        return f"{head}: {rest}" if rest else head
    return _path(loc) or "catalog"


def _path(loc: Sequence[int | str]) -> str:
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else f".{part}" if text else str(part)
    return text


def _suggestion(loc: Loc, model: type[BaseModel]) -> str | None:
    """The known field of the object at ``loc[:-1]`` closest to the unknown key ``loc[-1]``."""
    owner = _model_at(model, loc[:-1])
    if owner is None:
        return None
    names = [f.alias or name for name, f in owner.model_fields.items()]
    close = difflib.get_close_matches(str(loc[-1]), names, n=1, cutoff=0.6)
    return close[0] if close else None


def _model_at(model: type[BaseModel], loc: Loc) -> type[BaseModel] | None:
    current: type[BaseModel] | None = model
    for part in loc:
        if isinstance(part, int):
            continue
        fields = {f.alias or n: f for n, f in current.model_fields.items()} if current else {}
        field = fields.get(part)
        current = _nested_model(field.annotation) if field is not None else None
    return current


def _nested_model(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    return next((m for arg in typing.get_args(annotation) if (m := _nested_model(arg))), None)


def _line(root: Any, loc: Loc) -> int | None:
    """The 1-based line of the deepest YAML node ``loc`` reaches (an unknown key: the key's line)."""
    node, line = root, None
    for part in loc:
        if isinstance(node, yaml.MappingNode):
            pair = next(((k, v) for k, v in node.value if getattr(k, "value", None) == part), None)
            if pair is None:
                break
            line, node = pair[0].start_mark.line + 1, pair[1]
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
            node = node.value[part]
            line = node.start_mark.line + 1
        else:
            break
    return line
