"""The routeyard command's conventions, as a user meets them: --version, global flags before or
after the command, help on every argument, a top help that lists every command without markup,
the same --since wording everywhere, counts in words, a quiet end when the reader of a pipe leaves."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from routeyard.consumers.cli import main as cli
from routeyard.consumers.cli.main import main
from routeyard.consumers.tools import dlq

CATALOG = "agents:\n  - name: A\n    description: answers questions about a\n"


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in list(os.environ):
        if name.upper().startswith("ROUTEYARD_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "x.yaml").write_text(CATALOG, encoding="utf-8")


def parsers(parser: argparse.ArgumentParser) -> Iterator[argparse.ArgumentParser]:
    yield parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in dict.fromkeys(action.choices.values()):
                yield from parsers(child)


def commands(parser: argparse.ArgumentParser) -> list[str]:
    (sub,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return list(sub.choices)


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as caught:
        main(["--version"])
    assert caught.value.code == 0 and capsys.readouterr().out == "routeyard 0.1.0\n"


@pytest.mark.parametrize(
    "argv",
    [
        ["--bootstrap", "h:1", "--prefix", "p.", "send", "c1", "hi"],
        ["send", "--bootstrap", "h:1", "--prefix", "p.", "c1", "hi"],
        ["send", "c1", "hi", "--bootstrap", "h:1", "--prefix", "p."],
        ["--bootstrap", "h:1", "send", "--prefix", "p.", "c1", "hi"],
    ],
)
def test_global_flags_before_or_after_the_command(argv: list[str]) -> None:
    args = cli._parser().parse_args(argv)
    assert (args.bootstrap, args.prefix, args.conversation, args.text) == ("h:1", "p.", "c1", "hi")
    assert args.redis is None and args.log_level == "INFO"  # the command's copies did not undo the top's


def test_global_flags_after_a_dlq_action() -> None:
    args = cli._parser().parse_args(["dlq", "list", "--bootstrap", "h:1", "--log-level", "debug"])
    assert (args.bootstrap, args.log_level) == ("h:1", "DEBUG")


def test_every_flag_and_positional_has_help() -> None:
    missing = [
        f"{p.prog}: {'/'.join(a.option_strings) or a.dest}"
        for p in parsers(cli._parser())
        for a in p._actions
        if not isinstance(a, argparse._SubParsersAction) and not a.help
    ]
    assert missing == []


def test_help_gives_units_and_defaults(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["send", "--help"])
    assert "--timeout SECONDS     with --wait: seconds to wait (default 60)" in capsys.readouterr().out


def test_the_top_help_lists_every_command_without_markup(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["--help"])
    text = capsys.readouterr().out
    assert "::" not in text and "`" not in text
    table = text.split("Settings come from")[0]
    assert [c for c in commands(cli._parser()) if f"routeyard {c} " not in table] == []


def test_dev_refuses_a_broker_it_would_ignore(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["dev", "--bootstrap", "127.0.0.1:9092"]) == 2
    assert capsys.readouterr().err == (
        "routeyard: dev starts its own broker and Redis; to attach to yours use `routeyard worker`\n"
    )


def test_since_errors_are_worded_the_same_in_every_command(capsys: pytest.CaptureFixture[str]) -> None:
    said = []
    for argv in (["replay", "--since", "yesterday"], ["dlq", "list", "--since", "yesterday"]):
        with pytest.raises(SystemExit) as caught:
            main(argv)
        assert caught.value.code == 2
        (line,) = capsys.readouterr().err.splitlines()
        said.append(line.split(": error: ")[1].split(" (see ")[0])
    assert said[0] == said[1]
    assert said[0].startswith("argument --since: not an ISO 8601 time: 'yesterday'")


def test_dlq_list_prints_a_header(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    async def no_letters(*args: object, **kwargs: object) -> list[dlq.Letter]:
        return []

    monkeypatch.setattr(dlq, "read_letters", no_letters)
    assert main(["dlq", "list"]) == 0
    assert capsys.readouterr().out.split() == ["ID", "FAILED", "AT", "STAGE", "SOURCE", "EVENT", "ID", "REASON"]


def test_counts_are_in_words(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["catalog", "check", "x.yaml"]) == 0
    assert capsys.readouterr().out.startswith("x.yaml: 1 agent, version ")


def test_a_closed_pipe_ends_quietly(tmp_path: Path) -> None:
    """``routeyard ... | head -1``: the reader leaves before we write; no BrokenPipeError traceback."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    process = subprocess.Popen(
        [sys.executable, "-m", "routeyard.consumers.cli", "catalog", "check", "x.yaml"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=tmp_path,
        env=env,
    )
    assert process.stdout is not None and process.stderr is not None
    process.stdout.close()  # long before the interpreter has started and written
    err = process.stderr.read().decode()
    assert (process.wait(timeout=60), err) == (141, "")
