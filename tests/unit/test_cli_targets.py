"""``routeyard agent`` as a user runs it, mistakes included: one line and exit 2 for a target that
cannot be loaded (as uvicorn's), file paths and ``--app-dir``; one line and exit 1 for a Redis
that is not there (instead of an ExceptionGroup per agent)."""

from __future__ import annotations

import sys
import textwrap
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from aiokafka.errors import KafkaConnectionError
from routeyard.consumers.cli.attach import one_failure, shown_url
from routeyard.consumers.cli.main import main
from routeyard.consumers.cli.targets import load_agent
from routeyard.consumers.dev.embedded import free_port

AGENTS = """
    from routeyard import agent

    @agent("TranslateAgent", "Translates text")
    async def translate(task):
        return "translated"

    @agent("SummaryAgent", "Summarises text")
    def summarise(task):
        return "summary"

    helper = 42

    class Helper:
        pass
"""


@pytest.fixture(autouse=True)
def clean_imports(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """sys.path and the modules the test imported are restored after it."""
    monkeypatch.setattr(sys, "path", list(sys.path))
    before = set(sys.modules)
    yield
    for name in set(sys.modules) - before:
        del sys.modules[name]


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, str]:
    """A user's project beside the cwd: ``<tmp>/proj/<module>.py`` (a unique module name), cwd ``<tmp>/work``."""
    name = f"translator_{uuid.uuid4().hex[:8]}"
    (tmp_path / "proj").mkdir()
    (tmp_path / "proj" / f"{name}.py").write_text(textwrap.dedent(AGENTS))
    (tmp_path / "work").mkdir()
    monkeypatch.chdir(tmp_path / "work")
    return tmp_path / "proj", name


def _agent(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    code = main(["--redis", f"redis://127.0.0.1:{free_port()}/0", "agent", *argv])
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1, err
    return code, err.strip()


def test_a_missing_module_is_one_line(capsys: pytest.CaptureFixture[str], project: tuple[Path, str]) -> None:
    assert _agent(capsys, "translatr:translate") == (2, 'routeyard: Could not import module "translatr"')


def test_a_missing_attribute_lists_the_agents_of_the_module(
    capsys: pytest.CaptureFixture[str], project: tuple[Path, str]
) -> None:
    folder, name = project
    code, err = _agent(capsys, "--app-dir", str(folder), f"{name}:translat")
    listing = "@agent objects in it: translate, summarise"
    assert (code, err) == (2, f'routeyard: module "{name}" has no attribute "translat"; {listing}')


@pytest.mark.parametrize(
    ("attribute", "what"),
    [("helper", "an int"), ("Helper", "the class Helper"), ("agent", "the function agent (decorate it with @agent")],
)
def test_an_attribute_that_is_not_an_agent_says_what_it_is(
    capsys: pytest.CaptureFixture[str], project: tuple[Path, str], attribute: str, what: str
) -> None:
    _, name = project
    code, err = _agent(capsys, f"../proj/{name}.py:{attribute}")
    assert code == 2 and err.startswith(f'routeyard: "{name}:{attribute}" is {what}'), err
    assert err.endswith("not an agent declared with @agent")


def test_an_import_error_inside_the_module_shows_its_own_message_and_where(
    capsys: pytest.CaptureFixture[str], project: tuple[Path, str]
) -> None:
    folder, _ = project
    (folder / "broken.py").write_text("import os\nimport nosuchlib_xyz\n")
    code, err = _agent(capsys, "../proj/broken.py:agent")
    assert code == 2
    assert err == f"routeyard: error importing \"broken\": No module named 'nosuchlib_xyz' ({folder}/broken.py, line 2)"


def test_a_syntax_error_in_the_module_is_one_line(
    capsys: pytest.CaptureFixture[str], project: tuple[Path, str]
) -> None:
    folder, _ = project
    (folder / "typo.py").write_text("def f(:\n")
    code, err = _agent(capsys, "../proj/typo.py:f")
    assert code == 2 and err.startswith('routeyard: error importing "typo": ') and f"{folder}/typo.py, line 1" in err


@pytest.mark.parametrize(
    ("target", "message"),
    [
        ("translator", 'agent must be given as MODULE:OBJECT or FILE.py:OBJECT, got "translator"'),
        ("../proj/nofile.py:x", 'Could not import "../proj/nofile.py": no such .py file'),
    ],
)
def test_malformed_targets(
    capsys: pytest.CaptureFixture[str], project: tuple[Path, str], target: str, message: str
) -> None:
    assert _agent(capsys, target) == (2, f"routeyard: {message}")


def test_a_missing_app_dir(capsys: pytest.CaptureFixture[str], project: tuple[Path, str]) -> None:
    assert _agent(capsys, "--app-dir", "nowhere", "x:y") == (2, "routeyard: --app-dir nowhere: no such directory")


def test_file_paths_and_app_dir_load_the_agent(project: tuple[Path, str]) -> None:
    folder, name = project
    assert load_agent(f"../proj/{name}.py:translate").name == "TranslateAgent"
    assert load_agent(f"{name}:summarise", folder).name == "SummaryAgent"


def test_a_file_whose_name_is_taken_is_refused(capsys: pytest.CaptureFixture[str], project: tuple[Path, str]) -> None:
    folder, _ = project
    (folder / "json.py").write_text("x = 1\n")
    import json  # noqa: F401  (already imported: the file cannot be imported under that name)

    code, err = _agent(capsys, "../proj/json.py:x")
    assert code == 2 and err.startswith('routeyard: ../proj/json.py cannot be imported as "json": that name is taken')


def test_redis_unreachable_is_one_line_naming_both_settings(
    capsys: pytest.CaptureFixture[str], project: tuple[Path, str]
) -> None:
    _, name = project
    port = free_port()
    code = main(["--redis", f"redis://127.0.0.1:{port}/0", "agent", f"../proj/{name}.py:translate"])
    err = capsys.readouterr().err
    assert (code, err) == (
        1,
        f"routeyard agent: cannot reach Redis at redis://127.0.0.1:{port}/0 "
        "(set --redis or ROUTEYARD_REDIS__URL; routeyard dev prints both)\n",
    )


def test_a_password_in_the_redis_url_is_not_shown() -> None:
    assert shown_url("redis://app:s3cret@db:6379/0") == "redis://app:***@db:6379/0"
    assert shown_url("redis://db:6379/0") == "redis://db:6379/0"


def test_a_task_group_of_one_kind_of_failure_raises_that_failure() -> None:
    with pytest.raises(KafkaConnectionError), one_failure():
        raise ExceptionGroup("agents", [KafkaConnectionError("a"), ExceptionGroup("inner", [KafkaConnectionError()])])
    with pytest.raises(ExceptionGroup), one_failure():
        raise ExceptionGroup("agents", [KafkaConnectionError("a"), ValueError("b")])
