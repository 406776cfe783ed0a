"""A bad catalog, as a user meets it: every problem on its own line, ``FILE:LINE: WHERE: WHAT``,
"did you mean" for a misspelt field, regexes shown as written, YAML errors naming the file and line;
and ``routeyard catalog check`` printing them with exit status 2."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from routeyard.consumers.cli.main import main
from routeyard.router.catalog import CatalogError, load_catalog

TYPOS = """\
agents:
  - name: WeatherAgent
    descripton: Provides weather forecasts
    rules:
      keyword: [weather]
      patterns: ['\\b(rain', 'snow', '[hail']
  - name: TaxiAgent
    description: Books taxis
    timout: 30s
"""


def _write(tmp_path: Path, text: str, name: str = "agents.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def _problems(path: Path) -> list[str]:
    with pytest.raises(CatalogError) as info:
        load_catalog(path)
    return str(info.value).splitlines()


def test_every_problem_has_its_own_line_with_file_line_and_did_you_mean(tmp_path: Path) -> None:
    path = _write(tmp_path, TYPOS)
    header, *lines = _problems(path)
    assert header == f"{path}: invalid agent catalog (5 problems):"
    assert lines == [
        f'{path}:3: agents[0] (WeatherAgent): unknown field "descripton"; did you mean "description"?',
        f'{path}:5: agents[0] (WeatherAgent): rules: unknown field "keyword"; did you mean "keywords"?',
        f"{path}:6: agents[0] (WeatherAgent): rules.patterns[0]: invalid regular expression '\\b(rain': "
        "missing ), unterminated subpattern at position 2",
        f"{path}:6: agents[0] (WeatherAgent): rules.patterns[2]: invalid regular expression '[hail': "
        "unterminated character set at position 0",
        f'{path}:9: agents[1] (TaxiAgent): unknown field "timout"; did you mean "timeout"?',
    ]


def test_a_required_field_is_reported_when_no_key_was_meant_for_it(tmp_path: Path) -> None:
    path = _write(tmp_path, "agents:\n  - name: WeatherAgent\n    timeout: 5s\n")
    assert _problems(path)[1:] == [f"{path}:2: agents[0] (WeatherAgent): description: field required"]


def test_unknown_field_far_from_any_known_one_gets_no_guess(tmp_path: Path) -> None:
    path = _write(tmp_path, "agents:\n  - name: A\n    description: a\n    owner: team-x\n")
    assert _problems(path)[1:] == [f'{path}:4: agents[0] (A): unknown field "owner"']


@pytest.mark.parametrize(
    ("text", "line", "what"),
    [
        ("agents:\n  - name: A\n    description: [a\n", 4, "(while parsing a flow sequence that starts at line 3)"),
        ("agents:\n  - name: A\n    description: a\n    timeout: 3s: x\n", 4, "mapping values are not allowed here"),
    ],
)
def test_yaml_errors_name_the_file_and_line(tmp_path: Path, text: str, line: int, what: str) -> None:
    path = _write(tmp_path, text)
    (message,) = _problems(path)
    assert message.startswith(f"{path}:{line}: not valid YAML: ")
    assert what in message
    assert "<unicode string>" not in message


def test_catalog_check_prints_every_problem_one_per_line_and_exits_2(tmp_path: Path) -> None:
    path = _write(tmp_path, TYPOS)
    done = subprocess.run(
        [sys.executable, "-m", "routeyard.consumers.cli", "catalog", "check", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    lines = done.stderr.splitlines()
    assert lines[0] == f"routeyard: {path}: invalid agent catalog (5 problems):"
    assert len(lines) == 6 and all(line.startswith(f"{path}:") for line in lines[1:])
    assert "Traceback" not in done.stderr and done.stdout == ""


def test_catalog_check_of_broken_yaml_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _write(tmp_path, "agents:\n  - name: A\n    description: a\n    timeout: 3s: x\n")
    assert main(["catalog", "check", str(path)]) == 2
    assert capsys.readouterr().err == f"routeyard: {path}:4: not valid YAML: mapping values are not allowed here\n"
