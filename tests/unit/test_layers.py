"""The layer direction ``schemas`` <- ``router`` <- ``consumers``, checked on the source with ``ast``.

``schemas`` is what agents in other languages depend on: no routeyard layer above it and no I/O
library. ``router`` decides and knows nothing about Kafka or Redis. Inside ``consumers``, only the
stores room (``consumers/stores/``) imports redis. Every layer imports routeyard's own modules as
``routeyard.*`` (one namespace: a user's ``schemas`` or ``router`` never collides).
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


LAYERS = ("schemas", "router", "consumers")


def _package_parts(path: Path, root: Path) -> list[str]:
    """``router/engines/rules.py`` -> ["routeyard", "router", "engines"]: the package it installs as."""
    return ["routeyard", *path.relative_to(root).parent.parts]


def _top(module: str) -> str:
    """What a module belongs to: a routeyard layer (``routeyard.router.plan`` -> "router") or a
    distribution (``redis.asyncio`` -> "redis"); a bare ``schemas`` is the user's, not ours."""
    parts = module.split(".")
    return parts[1] if parts[0] == "routeyard" and len(parts) > 1 else parts[0]


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
            if _top(module) in FORBIDDEN[layer]:
                found.append(f"{path.relative_to(root)}:{line}: imports {module}")
    return found


def outside_the_namespace(root: Path = ROOT) -> list[str]:
    """Imports of routeyard's layers by their bare names (``from schemas import ...``): in a user's
    project those names are the user's own modules."""
    found = []
    for layer in LAYERS:
        for path in sorted((root / layer).rglob("*.py")):
            for line, module in imported_modules(path.read_text(encoding="utf-8"), _package_parts(path, root)):
                if module.split(".")[0] in LAYERS:
                    found.append(f"{path.relative_to(root)}:{line}: imports {module}")
    return found


def test_every_layer_imports_routeyard_modules_by_their_namespace() -> None:
    found = outside_the_namespace()
    assert not found, "import routeyard's modules as routeyard.*:\n" + "\n".join(found)


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
        ("\nfrom routeyard.consumers.kafka import bus\n", ["router"], [(2, "routeyard.consumers.kafka")]),
        ("from .engine import EngineResult\n", ["routeyard", "router"], [(1, "routeyard.router.engine")]),
        ("from ... import consumers\n", ["routeyard", "router", "sub"], [(1, "routeyard")]),
        ("from ...consumers import bus\n", ["routeyard", "router", "sub"], [(1, "routeyard.consumers")]),
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
    (tmp_path / "router" / "ok.py").write_text("import json\nfrom routeyard.schemas import encode\n")
    (tmp_path / "router" / "sub" / "bad.py").write_text(
        "import json\n\nfrom routeyard.consumers.kafka.bus import publish\n"
        "import redis.asyncio\nfrom ...consumers import app\n"
    )
    assert violations("router", root=tmp_path) == [
        "router/sub/bad.py:3: imports routeyard.consumers.kafka.bus",
        "router/sub/bad.py:4: imports redis.asyncio",
        "router/sub/bad.py:5: imports routeyard.consumers",
    ]
    assert violations("schemas", root=tmp_path) == []


def test_imports_outside_their_room_are_found(tmp_path: Path) -> None:
    (tmp_path / "consumers" / "stores").mkdir(parents=True)
    (tmp_path / "consumers" / "tools").mkdir()
    (tmp_path / "consumers" / "stores" / "ok.py").write_text("from redis.asyncio import Redis\n")
    (tmp_path / "consumers" / "app.py").write_text("import json\nimport redis.exceptions\n")
    (tmp_path / "consumers" / "tools" / "ok.py").write_text("from routeyard.consumers.stores import connection\n")
    (tmp_path / "consumers" / "tools" / "worse.py").write_text("def f():\n    from redis import Redis\n")
    assert outside_its_room("redis", "consumers/stores", root=tmp_path) == [
        "consumers/app.py:2: imports redis.exceptions",
        "consumers/tools/worse.py:2: imports redis",
    ]


def test_bare_layer_names_are_found(tmp_path: Path) -> None:
    for layer in LAYERS:
        (tmp_path / layer).mkdir()
    (tmp_path / "router" / "bad.py").write_text("from schemas import encode\nfrom routeyard.schemas import Topics\n")
    assert outside_the_namespace(tmp_path) == ["router/bad.py:1: imports schemas"]


# -- rooms: a library imported in one folder only -------------------------------------------------

ONLY_IN: dict[str, str] = {
    "aiokafka": "consumers/kafka",
    "redis": "consumers/stores",
    "starlette": "consumers/gateway",
    "uvicorn": "consumers/gateway",
}
"""A distribution and the only folder whose modules may import it: the bus seam (kafka/) and the
Redis stores (stores/), and the HTTP gateway (gateway/: the web framework and server)."""


def outside_its_room(library: str, room: str, root: Path = ROOT) -> list[str]:
    found = []
    for layer in LAYERS:
        for path in sorted((root / layer).rglob("*.py")):
            if path.is_relative_to(root / room):
                continue
            for line, module in imported_modules(path.read_text(encoding="utf-8"), _package_parts(path, root)):
                if _top(module) == library:
                    found.append(f"{path.relative_to(root)}:{line}: imports {module}")
    return found


@pytest.mark.parametrize(("library", "room"), sorted(ONLY_IN.items()))
def test_library_is_imported_only_in_its_room(library: str, room: str) -> None:
    found = outside_its_room(library, room)
    assert not found, f"only {room}/ may import {library}:\n" + "\n".join(found)


def test_outside_its_room_finds_imports_elsewhere(tmp_path: Path) -> None:
    for folder in ("schemas", "router", "consumers/kafka", "consumers/workers"):
        (tmp_path / folder).mkdir(parents=True)
    (tmp_path / "consumers" / "kafka" / "aio.py").write_text("from aiokafka import AIOKafkaProducer\n")
    (tmp_path / "consumers" / "workers" / "w.py").write_text("import json\nfrom aiokafka.errors import KafkaError\n")
    (tmp_path / "router" / "r.py").write_text("def f():\n    import aiokafka\n")
    assert outside_its_room("aiokafka", "consumers/kafka", tmp_path) == [
        "router/r.py:2: imports aiokafka",
        "consumers/workers/w.py:2: imports aiokafka.errors",
    ]
