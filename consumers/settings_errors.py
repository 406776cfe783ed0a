"""ROUTEYARD_* variable names and settings errors in words: one line per problem, naming the variable.

    variables()                         every ROUTEYARD_* name a setting reads, with its field path
    unknown(names)                      warnings for names no setting reads ("did you mean ...?")
    problems(exc, given)                a ValidationError as lines such as
                                        ROUTEYARD_ROUTER__MAX_BATCH='abc': expected an integer

``given`` maps variable names (upper case) to the text they were set to (environment, env file,
secrets directory), so a line shows what the user wrote rather than what pydantic saw.
"""

from __future__ import annotations

import difflib
import json
import re
import typing
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, SecretStr, ValidationError
from pydantic_core import ErrorDetails

PREFIX = "ROUTEYARD_"
NESTED = "__"
EXTRA_VARIABLES = frozenset({"ROUTEYARD_SECRETS_DIR"})
"""Read by routeyard itself, not by a settings field."""


@dataclass(frozen=True, slots=True)
class Variable:
    name: str
    path: tuple[str, ...]
    """Field names from the top: ("router", "max_batch")."""
    secret: bool
    mapping: bool
    """A dict field: its keys may be set one by one as NAME__KEY."""


def variables(model: type[BaseModel] | None = None) -> dict[str, Variable]:
    """Variable name -> Variable, for every field of ``model`` (default: Settings) and its sections."""
    if model is None:
        from routeyard.consumers.settings import Settings

        model = Settings
    return {v.name: v for v in _walk(model, ())}


def _walk(model: type[BaseModel], path: tuple[str, ...]) -> Iterable[Variable]:
    for name, field in model.model_fields.items():
        here = (*path, name)
        section = model_of(field.annotation)
        if section is not None:
            yield from _walk(section, here)
            continue
        text = repr(field.annotation)
        yield Variable(
            PREFIX + NESTED.join(here).upper(), here, secret="SecretStr" in text, mapping=text.startswith("dict")
        )


def model_of(annotation: Any) -> type[BaseModel] | None:
    return annotation if isinstance(annotation, type) and issubclass(annotation, BaseModel) else None


# -- unknown names --------------------------------------------------------------------------------


def unknown(names: Iterable[str], known: Mapping[str, Variable] | None = None) -> list[str]:
    """One warning per ROUTEYARD_* name that no setting reads (case-insensitive, as settings are)."""
    known = variables() if known is None else known
    everything = sorted({*known, *EXTRA_VARIABLES})
    warnings = []
    for name in sorted({n.upper() for n in names if n.upper().startswith(PREFIX)}):
        if name in known or name in EXTRA_VARIABLES or _inside_mapping(name, known):
            continue
        close = difflib.get_close_matches(name, everything, n=1, cutoff=0.6)
        hint = f"; did you mean {close[0]}?" if close else ""
        warnings.append(f"{name} is not a routeyard setting, ignored{hint}")
    return warnings


def _inside_mapping(name: str, known: Mapping[str, Variable]) -> bool:
    return any(name.startswith(v.name + NESTED) for v in known.values() if v.mapping)


# -- validation errors ----------------------------------------------------------------------------


def problems(exc: ValidationError, given: Mapping[str, str], known: Mapping[str, Variable] | None = None) -> list[str]:
    """One line per error of ``exc``: the variable, the value given, the form expected."""
    known = variables() if known is None else known
    by_path = {v.path: v for v in known.values()}
    return [_line(error, given, known, by_path) for error in exc.errors()]


def _line(
    error: ErrorDetails,
    given: Mapping[str, str],
    known: Mapping[str, Variable],
    by_path: dict[tuple[str, ...], Variable],
) -> str:
    loc = tuple(str(part) for part in error["loc"])
    for size in range(len(loc), 0, -1):
        variable = by_path.get(loc[:size])
        if variable is not None:
            item = f"item {error['input']!r}: " if size < len(loc) else ""
            return f"{_shown(variable, given, error)}: {item}{expected(error)}"
    return _section_line(loc, _message(error), given, known)


def _shown(variable: Variable, given: Mapping[str, str], error: ErrorDetails) -> str:
    if variable.secret:
        return f"{variable.name}=<secret>"
    value = given.get(variable.name, error["input"])
    return f"{variable.name}={value if isinstance(value, str) else _text(value)!r}"


def _text(value: Any) -> str:
    if isinstance(value, SecretStr):
        return "<secret>"
    try:
        return json.dumps(value, default=str)
    except (TypeError, ValueError):
        return str(value)


_EXPECTED = {
    "int_parsing": "expected an integer",
    "int_type": "expected an integer",
    "int_from_float": "expected an integer",
    "float_parsing": "expected a number",
    "float_type": "expected a number",
    "bool_parsing": "expected true or false",
    "bool_type": "expected true or false",
    "list_type": "expected a name, a comma list such as 'rules,semantic' or a JSON list",
    "frozen_set_type": "expected a comma list or a JSON list",
    "dict_type": "expected a JSON object such as '{\"key\": 1}'",
    "missing": "required, not set",
}
_BOUNDS = {"greater_than": ">", "greater_than_equal": ">=", "less_than": "<", "less_than_equal": "<="}


def expected(error: ErrorDetails) -> str:
    """The form a value should have, from a pydantic error."""
    kind, ctx = error["type"], error.get("ctx") or {}
    if kind in _EXPECTED:
        return _EXPECTED[kind]
    if kind == "literal_error":
        return f"expected {ctx.get('expected')}"
    if kind in _BOUNDS:
        bound = next(iter(ctx.values()), "?")
        return f"expected a number {_BOUNDS[kind]} {bound}"
    return _message(error)


def _message(error: ErrorDetails) -> str:
    message = error["msg"]
    return message.removeprefix("Value error, ").removeprefix("Assertion failed, ")


def _section_line(loc: tuple[str, ...], message: str, given: Mapping[str, str], known: Mapping[str, Variable]) -> str:
    """A model validator's error: the section's variables that are set, and its message with field
    names spelled as variables."""
    inside = [v for v in known.values() if v.path[: len(loc)] == loc]
    words = {".".join(v.path[len(loc) :]): v.name for v in inside}
    words.update({".".join(v.path): v.name for v in inside})
    spelled = re.sub(r"\b[a-z][a-z0-9_]*(?:\.[a-z][a-z0-9_]*)?\b", lambda m: words.get(m[0], m[0]), message)
    names = [v.name for v in inside if v.name in given]
    section = ", ".join(f"{n}=<secret>" if known[n].secret else f"{n}={given[n]!r}" for n in names)
    where = section or (PREFIX + NESTED.join(loc).upper() + NESTED + "*" if loc else "settings")
    return f"{where}: {spelled}"


def undecodable(section: str, given: Mapping[str, str], known: Mapping[str, Variable] | None = None) -> list[str]:
    """pydantic-settings could not JSON-decode a value of ``section``: the set variables of that
    section whose field takes JSON (lists, sets, objects) and whose value is not JSON."""
    known = variables() if known is None else known
    lines = []
    for name, value in sorted(given.items()):
        variable = known.get(name)
        if variable is None or variable.path[0] != section or not _takes_json(variable):
            continue
        try:
            json.loads(value)
        except ValueError:
            lines.append(f'{name}={value!r}: expected JSON, such as \'["a", "b"]\' for a list')
    return lines or [f"{PREFIX}{section.upper()}{NESTED}*: a value is not valid JSON"]


def _takes_json(variable: Variable) -> bool:
    from routeyard.consumers.settings import Settings

    model: type[BaseModel] = Settings
    for part in variable.path[:-1]:
        model = typing.cast(type[BaseModel], model.model_fields[part].annotation)
    text = repr(model.model_fields[variable.path[-1]].annotation)
    return any(word in text for word in ("list", "tuple", "set", "dict"))
