"""The layer direction ``schemas`` <- ``router`` <- ``consumers``, checked on the source with ``ast``.

``schemas`` is what agents in other languages depend on: no routeyard layer above it and no I/O
library. ``router`` decides and knows nothing about Kafka or Redis.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

FORBIDDEN: dict[str, frozenset[str]] = {
    "schemas": frozenset({"router", "consumers", "aiokafka", "faststream", "redis", "vllm", "pydantic_settings"}),
    "router": frozenset({"consumers", "aiokafka", "faststream", "redis"}),
}
_DYNAMIC_IMPORTS = {"import_module", "__import__"}


def _package_parts(path: Path, root: Path) -> list[str]:
    """``router/engine.py`` -> ["router"]; ``consumers/demo/run.py`` -> ["consumers", "demo"]."""
    return list(path.relative_to(root).parent.parts)


def imported_modules(source: str, package: list[str]) -> Iterator[tuple[int, str]]:
    """(line, absolute module name) for every import in ``source``, relative ones resolved."""
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                module = ".".join([*base, node.module] if node.module else base)
            else:
                module = node.module or ""
            yield node.lineno, module
        elif isinstance(node, ast.Call):
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
            first = node.args[0] if node.args else None
            if name in _DYNAMIC_IMPORTS and isinstance(first, ast.Constant) and isinstance(first.value, str):
                yield node.lineno, first.value


def violations(layer: str, root: Path = ROOT) -> list[str]:
    found = []
    for path in sorted((root / layer).rglob("*.py")):
        source = path.read_text(encoding="utf-8")
        for line, module in imported_modules(source, _package_parts(path, root)):
            if module.split(".")[0] in FORBIDDEN[layer]:
                found.append(f"{path.relative_to(root)}:{line}: imports {module}")
    return found


@pytest.mark.parametrize("layer", sorted(FORBIDDEN))
def test_layer_has_python_files(layer: str) -> None:
    assert len(list((ROOT / layer).rglob("*.py"))) >= 3


@pytest.mark.parametrize("layer", sorted(FORBIDDEN))
def test_layer_imports_only_what_it_may(layer: str) -> None:
    found = violations(layer)
    assert not found, f"{layer} must not import {sorted(FORBIDDEN[layer])}:\n" + "\n".join(found)


def test_consumers_files_parse() -> None:
    """The consumers layer is the top: anything goes, but every file must at least parse."""
    paths = sorted((ROOT / "consumers").rglob("*.py"))
    assert paths
    for path in paths:
        ast.parse(path.read_text(encoding="utf-8"), filename=str(path))


# -- the checker itself finds what it should ----------------------------------------------------


@pytest.mark.parametrize(
    ("source", "package", "expected"),
    [
        ("import redis.asyncio as r\n", ["router"], [(1, "redis.asyncio")]),
        ("import json, aiokafka\n", ["router"], [(1, "json"), (1, "aiokafka")]),
        ("\nfrom consumers.bus import publish\n", ["router"], [(2, "consumers.bus")]),
        ("from .engine import EngineResult\n", ["router"], [(1, "router.engine")]),
        ("from .. import consumers\n", ["router", "sub"], [(1, "router")]),
        ("from ..consumers import bus\n", ["router", "sub"], [(1, "router.consumers")]),
        ("def f():\n    import vllm\n", ["schemas"], [(2, "vllm")]),
        (
            "import importlib\nimportlib.import_module('faststream')\n",
            ["router"],
            [(1, "importlib"), (2, "faststream")],
        ),
        (
            "if TYPE_CHECKING:\n    from pydantic_settings import BaseSettings\n",
            ["schemas"],
            [(2, "pydantic_settings")],
        ),
    ],
)
def test_imported_modules(source: str, package: list[str], expected: list[tuple[int, str]]) -> None:
    assert sorted(imported_modules(source, package)) == sorted(expected)


def test_violations_name_file_and_line(tmp_path: Path) -> None:
    (tmp_path / "router" / "sub").mkdir(parents=True)
    (tmp_path / "router" / "ok.py").write_text("import json\nfrom schemas import encode\n")
    (tmp_path / "router" / "sub" / "bad.py").write_text(
        "import json\n\nfrom consumers.bus import publish\nimport redis.asyncio\n"
    )
    assert violations("router", root=tmp_path) == [
        "router/sub/bad.py:3: imports consumers.bus",
        "router/sub/bad.py:4: imports redis.asyncio",
    ]
    assert violations("schemas", root=tmp_path) == []
