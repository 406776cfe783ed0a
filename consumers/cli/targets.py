"""``MODULE:OBJECT`` -> the Agent declared there, for ``routeyard agent`` and ``routeyard dev --agents``.

    translator:translate                 a module on sys.path (``--app-dir``, default: the cwd, first)
    pkg.translator:translate             a module in a package
    ../proj/translator.py:translate      a file: its folder goes on sys.path, imported by its stem

Every mistake is one ``UsageError`` line (exit 2), like uvicorn's: the target module that does not
exist (``Could not import module "translatr"``); an ImportError or SyntaxError inside the user's
module (its own message, and where); an attribute that does not exist (with the ``@agent`` objects
the module has) or that is not an Agent (with what it is).
"""

from __future__ import annotations

import importlib
import sys
import traceback
from pathlib import Path
from types import ModuleType, TracebackType

from routeyard.consumers.agents.agent import Agent
from routeyard.consumers.errors import UsageError
from routeyard.consumers.filters.filter import Filter

__all__ = ["load_agent", "load_agents"]


def load_agents(targets: list[str], app_dir: Path | None = None) -> list[Agent]:
    return [load_agent(target, app_dir) for target in targets]


def load_agent(target: str, app_dir: Path | None = None) -> Agent:
    """``module:object`` or ``path/to/file.py:object`` -> the Agent declared there; ``app_dir``
    (default: the cwd) goes first on sys.path."""
    where, _, attribute = target.rpartition(":")
    if not where or not attribute:
        raise UsageError(f'agent must be given as MODULE:OBJECT or FILE.py:OBJECT, got "{target}"')
    _on_path(app_dir or Path.cwd())
    module = _import_file(Path(where)) if _is_file(where) else _import(where)
    return _agent_in(module, attribute)


def load_filters(targets: list[str], app_dir: Path | None = None) -> list[Filter]:
    """``module:object`` targets -> the Filters declared there with @filter."""
    found = []
    for target in targets:
        where, _, attribute = target.rpartition(":")
        if not where or not attribute:
            raise UsageError(f'filter must be given as MODULE:OBJECT or FILE.py:OBJECT, got "{target}"')
        _on_path(app_dir or Path.cwd())
        module = _import_file(Path(where)) if _is_file(where) else _import(where)
        obj = getattr(module, attribute, _MISSING)
        if not isinstance(obj, Filter):
            what = "nothing" if obj is _MISSING else "an agent" if isinstance(obj, Agent) else _what(obj)
            raise UsageError(f'"{target}" is {what}, not a filter declared with @filter')
        found.append(obj)
    return found


def _is_file(where: str) -> bool:
    return where.endswith(".py") or "/" in where or "\\" in where


def _on_path(folder: Path) -> None:
    entry = str(folder.resolve())
    if not folder.is_dir():
        raise UsageError(f"--app-dir {folder}: no such directory")
    if entry in sys.path:
        sys.path.remove(entry)
    sys.path.insert(0, entry)


def _import_file(path: Path) -> ModuleType:
    if path.suffix != ".py" or not path.is_file():
        raise UsageError(f'Could not import "{path}": no such .py file')
    _on_path(path.parent)
    module = _import(path.stem)
    found = Path(module.__file__ or "").resolve()
    if found != path.resolve():
        raise UsageError(f'{path} cannot be imported as "{path.stem}": that name is taken by {found}')
    return module


def _import(name: str) -> ModuleType:
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as exc:
        if exc.name is not None and (name == exc.name or name.startswith(exc.name + ".")):
            raise UsageError(f'Could not import module "{name}"') from None
        raise UsageError(f'error importing "{name}": {exc} ({_where(exc.__traceback__)})') from None
    except ImportError as exc:
        raise UsageError(f'error importing "{name}": {exc} ({_where(exc.__traceback__)})') from None
    except SyntaxError as exc:
        raise UsageError(f'error importing "{name}": {exc.msg} ({exc.filename}, line {exc.lineno})') from None


def _where(tb: TracebackType | None) -> str:
    """The innermost frame of the user's code (not importlib's) that the exception passed."""
    ours = (__file__, importlib.__file__)
    frames = [f for f in traceback.extract_tb(tb) if not f.filename.startswith("<frozen") and f.filename not in ours]
    return f"{frames[-1].filename}, line {frames[-1].lineno}" if frames else "while importing"


def _agent_in(module: ModuleType, attribute: str) -> Agent:
    name = module.__name__
    obj = getattr(module, attribute, _MISSING)
    if obj is _MISSING:
        found = [key for key, value in vars(module).items() if isinstance(value, Agent)]
        listing = f"@agent objects in it: {', '.join(found)}" if found else "it has no @agent objects"
        raise UsageError(f'module "{name}" has no attribute "{attribute}"; {listing}')
    if not isinstance(obj, Agent):
        raise UsageError(f'"{name}:{attribute}" is {_what(obj)}, not an agent declared with @agent')
    return obj


def _what(obj: object) -> str:
    if isinstance(obj, ModuleType):
        return "a module"
    if isinstance(obj, type):
        return f"the class {obj.__name__}"
    if callable(obj):
        return f"the {type(obj).__name__} {getattr(obj, '__name__', '')}".rstrip() + " (decorate it with @agent(...))"
    kind = type(obj).__name__
    return f"{'an' if kind[0] in 'aeiou' else 'a'} {kind}"


_MISSING = object()
