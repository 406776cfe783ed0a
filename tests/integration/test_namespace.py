"""One import namespace: routeyard installs as ``routeyard.*`` only, and a user's own ``schemas``
and ``router`` live beside it - in a plain import and in an agent that ``routeyard agent`` runs on
the real broker and Valkey."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import pytest
from routeyard.consumers.dev.embedded import EmbeddedBroker, EmbeddedValkey

from tests.integration.stack import catalog, make_settings, running

ROOT = Path(__file__).resolve().parents[2]
LAYERS = ("schemas", "router", "consumers")


def clean_env(**extra: str) -> dict[str, str]:
    """The environment without PYTHONPATH: only what is installed can be imported."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    return {**env, **extra}


def python(code: str, cwd: Path, **env: str) -> str:
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], cwd=cwd, env=clean_env(**env), capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_the_wheel_holds_routeyard_and_nothing_else(tmp_path: Path) -> None:
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(tmp_path), ROOT],
        check=True,
        capture_output=True,
        env=clean_env(),
    )
    (wheel,) = tmp_path.glob("routeyard-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    tops = {name.split("/")[0] for name in names}
    assert tops == {"routeyard", next(t for t in tops if t.endswith(".dist-info"))}
    assert {"routeyard/__init__.py", "routeyard/py.typed", "routeyard/schemas/messages.py"} <= set(names)
    assert "routeyard/consumers/dev/demo/catalog.yaml" in names
    assert {"routeyard/consumers/gateway/static/index.html", "routeyard/consumers/gateway/static/app.js"} <= set(names)
    packaged = {n.rsplit("/", 1)[0] for n in names if n.endswith("/__init__.py")}
    folders = {
        "routeyard/" + str(p.parent.relative_to(ROOT)) for layer in LAYERS for p in (ROOT / layer).rglob("__init__.py")
    }
    assert folders <= packaged, f"package folders missing from pyproject.toml: {sorted(folders - packaged)}"
    installed = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(installed), str(wheel)],
        check=True,
        capture_output=True,
        env=clean_env(),
    )
    out = python(
        """
        import importlib.util, routeyard, routeyard.schemas
        print(routeyard.schemas.__file__)
        print([importlib.util.find_spec(n) is None for n in ("schemas", "router", "consumers")])
        """,
        tmp_path,
        PYTHONPATH=str(installed),
    )
    where, missing = out.splitlines()
    assert where.startswith(str(installed)) and missing == "[True, True, True]"


def test_the_installed_package_leaves_schemas_router_and_consumers_to_the_user(tmp_path: Path) -> None:
    """In this environment routeyard is installed as the README says (editable): from any folder,
    ``routeyard.*`` imports and the bare layer names do not."""
    out = python(
        """
        import importlib.util
        from routeyard import AgentTask, RouteyardClient, Settings, agent
        print([importlib.util.find_spec(n) is None for n in ("schemas", "router", "consumers")])
        """,
        tmp_path,
    )
    assert out.strip() == "[True, True, True]"


def user_project(folder: Path) -> Path:
    """A service of a user's with its own ``schemas.py`` and ``router/`` package."""
    folder.mkdir()
    (folder / "schemas.py").write_text("def greeting() -> str:\n    return 'the user schemas'\n")
    (folder / "router").mkdir()
    (folder / "router" / "__init__.py").write_text("NAME = 'the user router'\n")
    (folder / "translator.py").write_text(
        textwrap.dedent(
            """
            import schemas
            from router import NAME
            from routeyard import AgentTask, agent


            @agent("Translator", "Translates text")
            async def translate(task: AgentTask) -> str:
                return f"{schemas.greeting()} and {NAME}: {task.messages[-1].content}"
            """
        )
    )
    return folder


def test_a_user_project_and_routeyard_import_side_by_side(tmp_path: Path) -> None:
    project = user_project(tmp_path / "service")
    out = python(
        """
        import schemas, router, translator
        from routeyard import RouteyardClient
        from routeyard.schemas import valid_topic
        from routeyard.consumers.cli.main import load_agent
        print(schemas.greeting(), router.NAME, valid_topic("ok.topic"), load_agent("translator:translate").name)
        """,
        project,
    )
    assert out.strip() == "the user schemas the user router True Translator"


@pytest.mark.integration
async def test_routeyard_agent_runs_a_user_module_that_imports_its_own_schemas(
    broker: EmbeddedBroker, valkey: EmbeddedValkey, prefix: str, tmp_path: Path
) -> None:
    project = user_project(tmp_path / "service")
    settings = make_settings(broker, valkey, prefix)
    agents = catalog({"name": "Translator", "description": "Translates text", "rules": {"keywords": ["translate"]}})
    env = clean_env(
        ROUTEYARD_KAFKA__BOOTSTRAP=broker.bootstrap,
        ROUTEYARD_REDIS__URL=valkey.url,
        ROUTEYARD_TOPIC_PREFIX=prefix,
    )
    log = (tmp_path / "agent.log").open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "routeyard.consumers.cli", "agent", "translator:translate"],
        cwd=project,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        async with running(settings, agents, []) as client:
            response = await client.ask("c-user", "translate bonjour", timeout=60)
    finally:
        process.terminate()
        process.wait(30)
        log.close()
    assert response.status == "complete", (tmp_path / "agent.log").read_text()
    assert response.content == "the user schemas and the user router: translate bonjour"
