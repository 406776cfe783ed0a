"""The first hour with routeyard, scripted: what a newcomer types, in order, mistakes included, each
command run as a user runs it (a subprocess of ``python -m routeyard.consumers.cli``) and checked on
what it prints and its exit status. Issue 15 listed these commands from such an hour; each step
names the item it checks.

The stack is the newcomer's: a bare ``routeyard dev`` (the demo catalog and agents, the engine dev
picks) on embedded servers, and a project folder beside it with the user's own agent file.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

AGENT = """
    from routeyard import agent

    @agent("TranslateAgent", "Translates text")
    async def translate(task):
        return "translated"
"""
TYPO_CATALOG = """
agents:
  - name: WeatherAgent
    descripton: Weather forecasts
    rules: {patterns: ['\\b(rain', 'sun(']}
"""


class Newcomer:
    """A shell in ``work/``, beside the user's project in ``proj/``."""

    def __init__(self, root: Path) -> None:
        self.work, self.proj = root / "work", root / "proj"
        self.work.mkdir()
        self.proj.mkdir()
        (self.proj / "translator.py").write_text(textwrap.dedent(AGENT))
        (self.proj / "typo.yaml").write_text(TYPO_CATALOG)

    def run(self, *args: str, timeout: float = 120, **env: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            _command(*args), cwd=self.work, env=_env(**env), capture_output=True, text=True, timeout=timeout
        )

    def closed_pipe(self, *args: str) -> tuple[int, str]:
        """``routeyard ARGS | head -0``: the reader has left before the command writes."""
        process = subprocess.Popen(_command(*args), cwd=self.work, env=_env(), stdout=subprocess.PIPE,
                                   stderr=subprocess.PIPE, text=True)  # fmt: skip
        assert process.stdout is not None and process.stderr is not None
        process.stdout.close()
        return process.wait(timeout=120), process.stderr.read()


def _command(*args: str) -> list[str]:
    return [sys.executable, "-m", "routeyard.consumers.cli", *args]


def _env(**extra: str) -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("ROUTEYARD_")} | extra


def _wait_for(path: Path, text: str, timeout: float = 180.0) -> str:
    deadline = time.monotonic() + timeout
    content = ""
    while time.monotonic() < deadline:
        content = path.read_text() if path.exists() else ""
        if text in content:
            return content
        time.sleep(0.2)
    raise AssertionError(f"{text!r} not in {path} after {timeout:g} s:\n{content[-3000:]}")


def _one_line(done: subprocess.CompletedProcess[str], code: int) -> str:
    """The command failed with ``code`` and said why in exactly one line on stderr."""
    assert done.returncode == code, (done.returncode, done.stdout, done.stderr)
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr
    return lines[0]


def test_the_first_hour(tmp_path: Path) -> None:
    me = Newcomer(tmp_path)
    _before_anything_runs(me)
    log = me.work / "dev.log"
    with log.open("w") as out:
        dev = subprocess.Popen(
            _command("dev", "--gateway-port", "0"), cwd=me.work, env=_env(), stdout=out, stderr=out, text=True
        )
    try:
        _wait_for(log, "router worker up")
        _with_dev_running(me, log)
    finally:
        dev.send_signal(signal.SIGINT)
        dev.wait(60)
    assert dev.returncode == 0, log.read_text()[-3000:]
    assert "routeyard dev: stopped" in log.read_text()


def _before_anything_runs(me: Newcomer) -> None:
    # 3. --version and a top help that lists every command, without markup
    assert me.run("--version").stdout == "routeyard 0.1.0\n"
    top = me.run("--help").stdout
    for name in ("dev", "demo", "worker", "agent", "send", "schema", "catalog", "topics", "eval", "tune"):
        assert re.search(rf"^\s+{name}\s", top, re.M), name
    for name in ("replay", "explain", "dlq"):
        assert re.search(rf"^\s+{name}\s", top, re.M), name
    assert "::" not in top and "`" not in top

    # 1. settings mistakes: one line naming the variable; typos warned about; unused ones ignored
    line = _one_line(me.run("send", "c1", "hi", ROUTEYARD_ROUTER__MAX_BATCH="abc"), 2)
    assert line.startswith("routeyard: ROUTEYARD_ROUTER__MAX_BATCH='abc': expected an integer"), line
    demo_catalog = str(Path(__file__).parents[2] / "consumers" / "dev" / "demo" / "catalog.yaml")
    checked = me.run("catalog", "check", demo_catalog, ROUTEYARD_ROUTER__ENGINE="semantik")
    assert checked.returncode == 0, checked.stderr
    assert "ROUTEYARD_ROUTER__ENGINE='semantik'" in checked.stderr and "not used by this command" in checked.stderr
    assert checked.stdout.startswith(f"{demo_catalog}: 3 agents")
    typo = me.run("catalog", "check", demo_catalog, ROUTEYARD_KAFKA_BOOTSTRAP="x:1")
    assert "did you mean ROUTEYARD_KAFKA__BOOTSTRAP?" in typo.stderr, typo.stderr
    line = _one_line(me.run("--log-level", "debugg", "send", "c1", "hi"), 2)
    assert "invalid choice: 'DEBUGG' (choose from 'DEBUG', 'INFO'" in line, line

    # 3. global flags after the command are flags, not arguments
    line = _one_line(me.run("send", "--bootstrap", "127.0.0.1:1", "c1", "hi"), 1)
    assert line.startswith("routeyard: cannot connect"), line

    # 9. a catalog with a typo and two bad regexes: every problem, with the file and a suggestion
    done = me.run("catalog", "check", "../proj/typo.yaml")
    assert done.returncode == 2, done.stderr
    assert 'unknown field "descripton"; did you mean "description"?' in done.stderr
    assert "'\\b(rain'" in done.stderr and "'sun('" in done.stderr, done.stderr
    assert "typo.yaml:" in done.stderr

    # 2. agent targets that cannot load: one line each
    line = _one_line(me.run("agent", "translatr:translate"), 2)
    assert 'Could not import module "translatr"' in line, line
    line = _one_line(me.run("agent", "../proj/translator.py:translat"), 2)
    assert 'has no attribute "translat"' in line and "@agent objects in it: translate" in line, line

    # 9. the contract for people in other languages
    exported = me.run("schema", "export", "contract")
    assert exported.returncode == 0, exported.stderr
    asyncapi = json.loads((me.work / "contract" / "asyncapi.json").read_text())
    assert asyncapi["channels"] and (me.work / "contract" / "catalog.schema.json").is_file()


def _with_dev_running(me: Newcomer, log: Path) -> None:
    # 2. dev says how to attach, and wrote it down
    assert "export ROUTEYARD_KAFKA__BOOTSTRAP=" in log.read_text()
    env = dict(line.split("=", 1) for line in (me.work / "dev.env").read_text().splitlines())
    assert set(env) == {"ROUTEYARD_KAFKA__BOOTSTRAP", "ROUTEYARD_REDIS__URL", "ROUTEYARD_TOPIC_PREFIX"}

    # 4. send: the event id first, then the turn as people read it; --json for scripts
    done = me.run("--env-file", "dev.env", "send", "--wait", "c1", "will it rain in Paris tomorrow?")
    assert done.returncode == 0, done.stderr
    event_id, *transcript = done.stdout.splitlines()
    assert re.fullmatch(r"[0-9a-f]{32}", event_id), done.stdout
    assert transcript[0].startswith("  decision: [WeatherAgent]"), transcript
    assert transcript[1] == "  response: complete" and "WeatherAgent" in transcript[2], transcript
    scripted = me.run("send", "--env-file", "dev.env", "--wait", "--json", "c2", "book a table for two tonight")
    assert json.loads(scripted.stdout)["routes"] == ["RestaurantAgent"], scripted.stdout

    # 5. dev's console: one line for the turn, never its text
    console = _wait_for(log, f"turn {event_id}")
    assert re.search(rf"turn {event_id} conversation c1: complete \[WeatherAgent\] \d+ ms", console)
    assert "Paris" not in console

    # 10. explain says why
    explained = me.run("--env-file", "dev.env", "explain", event_id)
    assert explained.returncode == 0, explained.stderr
    assert re.search(r"^why: .*WeatherAgent", explained.stdout, re.M), explained.stdout
    assert "raw output" not in explained.stdout

    # 4. a turn nobody answers: one line naming explain
    assert me.run("--env-file", "dev.env", "--prefix", "quiet.", "topics", "create").returncode == 0
    done = me.run("--env-file", "dev.env", "--prefix", "quiet.", "send", "--wait", "--timeout", "2", "c3", "hi")
    assert _one_line(done, 1) == f"routeyard send: no response in 2 s; see: routeyard explain {done.stdout.strip()}"
    done = me.run("--env-file", "dev.env", "--prefix", "nowhere.", "send", "--wait", "c3", "hi")
    assert "no topic 'nowhere.responses'" in _one_line(done, 1)

    # 2. an agent attached with the broker only: Python agents need Redis too
    dead_redis = "redis://127.0.0.1:1/0"
    done = me.run("--bootstrap", env["ROUTEYARD_KAFKA__BOOTSTRAP"], "--redis", dead_redis, "agent",
                  "../proj/translator.py:translate")  # fmt: skip
    assert "cannot reach Redis at redis://127.0.0.1:1/0" in _one_line(done, 1)
    # 3. dev starts its own servers and says so instead of ignoring --bootstrap
    assert "dev starts its own broker and Redis" in _one_line(me.run("dev", "--bootstrap", "127.0.0.1:1"), 2)

    # 3. a bare replay compares like with like: the engine dev recorded with, the demo catalog
    replayed = me.run("--env-file", "dev.env", "replay", timeout=300)
    assert replayed.returncode == 0, replayed.stderr
    assert replayed.stdout.startswith("# routeyard replay: routeyard.conversations"), replayed.stdout[:500]

    # 3. dlq list has a header, and a closed pipe is no traceback
    listed = me.run("--env-file", "dev.env", "dlq", "list")
    assert listed.returncode == 0 and listed.stdout.splitlines()[0].split()[0] == "ID", listed.stdout
    assert me.closed_pipe("--env-file", "dev.env", "dlq", "list") == (141, "")
