"""``routeyard dev`` with agents attached from other shells, as a user runs it: the ready-to-paste
``export`` line and ``dev.env``; ``send --wait`` as a transcript (``--json`` for scripts) and its
timeout as one line; ``agent`` without Redis as one line; a log line per turn on dev's console;
fixed ports, so a restarted ``dev`` keeps its attached agents."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from routeyard.consumers.dev.embedded import free_port

pytestmark = pytest.mark.integration

AGENTS = """
    from routeyard import agent

    @agent("TranslateAgent", "Translates text")
    async def translate(task):
        return "translated"

    @agent("SummaryAgent", "Summarises text")
    async def summarise(task):
        return "summary"

    @agent("AttachedAgent", "Runs in another shell")
    async def attached(task):
        return "attached"
"""
CATALOG = """
agents:
  - {name: TranslateAgent, description: Translates text, timeout: 10s, rules: {keywords: [translate]}}
  - {name: SummaryAgent, description: Summarises text, timeout: 10s, rules: {keywords: [summarise]}}
  - {name: AttachedAgent, description: Runs in another shell, timeout: 10s, rules: {keywords: [attached]}}
"""


@dataclass
class Dev:
    cwd: Path
    kafka_port: int
    redis_port: int
    gateway_port: int
    process: subprocess.Popen[str] | None = None

    @property
    def log(self) -> Path:
        return self.cwd / "dev.log"

    def start(self) -> None:
        args = ["dev", "--engine", "rules", "--catalog", "../proj/agents.yaml", "--agents"]
        args += ["../proj/translator.py:translate", "../proj/translator.py:summarise"]
        args += ["--kafka-port", str(self.kafka_port)]
        args += ["--redis-port", str(self.redis_port)]
        args += ["--gateway-port", str(self.gateway_port)]
        with self.log.open("a") as log:
            self.process = subprocess.Popen(
                _command(*args), cwd=self.cwd, env=_env(), stdout=log, stderr=log, text=True
            )
        _wait_for(self.log, "routeyard.consumers.app: router worker up", self.log.read_text().count("worker up") + 1)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            self.process.wait(60)


def _command(*args: str) -> list[str]:
    return [sys.executable, "-m", "routeyard.consumers.cli", *args]


def _env(**extra: str) -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("ROUTEYARD_")} | extra


def _wait_for(path: Path, text: str, count: int = 1, timeout: float = 60.0) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        content = path.read_text() if path.exists() else ""
        if content.count(text) >= count:
            return content
        time.sleep(0.2)
    raise AssertionError(f"{text!r} not in {path} after {timeout:g} s:\n{content[-3000:]}")


def routeyard(dev: Dev, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(_command(*args), cwd=dev.cwd, env=_env(**env), capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def dev(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Dev]:
    root = tmp_path_factory.mktemp("dev-cli")
    (root / "proj").mkdir()
    (root / "proj" / "translator.py").write_text(textwrap.dedent(AGENTS))
    (root / "proj" / "agents.yaml").write_text(CATALOG)
    (root / "work").mkdir()
    running = Dev(root / "work", free_port(), free_port(), free_port())
    running.start()
    try:
        yield running
    finally:
        running.stop()


def test_dev_prints_the_export_line_and_writes_dev_env(dev: Dev) -> None:
    env = (
        f"ROUTEYARD_KAFKA__BOOTSTRAP=127.0.0.1:{dev.kafka_port} ROUTEYARD_REDIS__URL=redis://127.0.0.1:{dev.redis_port}/0"
        " ROUTEYARD_TOPIC_PREFIX=routeyard."
    )
    assert f"    export {env}\n" in dev.log.read_text()
    assert (dev.cwd / "dev.env").read_text() == env.replace(" ", "\n") + "\n"


def test_dev_serves_the_gateway_and_prints_its_url(dev: Dev) -> None:
    import httpx

    url = f"http://127.0.0.1:{dev.gateway_port}"
    _wait_for(dev.log, f"  gateway: {url}/v1")
    body = {"model": "routeyard", "messages": [{"role": "user", "content": "translate this"}]}
    answer = httpx.post(f"{url}/v1/chat/completions", json=body, timeout=30)
    assert answer.status_code == 200, answer.text
    assert answer.json()["choices"][0]["message"]["content"] == "translated"
    assert "GATEWAY IS OPEN" in dev.log.read_text()  # no keys: said loudly


def test_send_wait_prints_the_decision_and_each_reply(dev: Dev) -> None:
    done = routeyard(dev, "--env-file", "dev.env", "send", "--wait", "c1", "translate this, then summarise it")
    assert done.returncode == 0, done.stderr
    event_id, *transcript = done.stdout.splitlines()
    assert re.fullmatch(r"[0-9a-f]{32}", event_id)
    decision = r"  decision: \[TranslateAgent, SummaryAgent\] mode=parallel engine=rules \d+\.\d\d ms"
    assert re.fullmatch(decision, transcript[0]), transcript
    assert transcript[1:] == [
        "  response: complete",
        "    TranslateAgent  < translated",
        "    SummaryAgent    < summary",
    ]


def test_send_json_prints_the_raw_response_and_the_event_id_on_stderr(dev: Dev) -> None:
    done = routeyard(dev, "--env-file", "dev.env", "send", "--wait", "--json", "c2", "translate")
    assert done.returncode == 0, done.stderr
    response = json.loads(done.stdout)
    assert done.stderr.strip() == response["event_id"]
    assert (response["status"], response["routes"]) == ("complete", ["TranslateAgent"])


def test_send_timeout_is_one_line_naming_explain(dev: Dev) -> None:
    assert routeyard(dev, "--env-file", "dev.env", "--prefix", "quiet.", "topics", "create").returncode == 0
    done = routeyard(dev, "--env-file", "dev.env", "--prefix", "quiet.", "send", "--wait", "--timeout", "2", "c3", "hi")
    event_id = done.stdout.strip()
    assert (done.returncode, done.stderr) == (
        1,
        f"routeyard send: no response in 2 s; see: routeyard explain {event_id}\n",
    )


def test_dev_logs_one_line_per_turn_without_its_text(dev: Dev) -> None:
    done = routeyard(dev, "--env-file", "dev.env", "send", "--wait", "c4", "translate the-secret-xyzzy")
    event_id = done.stdout.splitlines()[0]
    log = _wait_for(dev.log, f"turn {event_id}")
    (line,) = [line for line in log.splitlines() if f"turn {event_id}" in line]
    assert re.search(
        rf"INFO routeyard.turns: turn {event_id} conversation c4: complete \[TranslateAgent\] \d+ ms$", line
    )
    assert "xyzzy" not in log


def test_agent_without_redis_is_one_line_naming_both_settings(dev: Dev) -> None:
    redis = f"redis://127.0.0.1:{free_port()}/0"
    done = routeyard(
        dev, "--bootstrap", f"127.0.0.1:{dev.kafka_port}", "agent", "../proj/translator.py:summarise",
        ROUTEYARD_REDIS__URL=redis,
    )  # fmt: skip
    assert (done.returncode, done.stderr) == (
        1,
        f"routeyard agent: cannot reach Redis at {redis} "
        "(set --redis or ROUTEYARD_REDIS__URL; routeyard dev prints both)\n",
    )


def test_a_taken_fixed_port_is_one_line(dev: Dev) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = routeyard(dev, "dev", "--engine", "rules", "--redis-port", str(port))
    assert (done.returncode, done.stderr) == (
        2,
        f"routeyard: --redis-port {port}: 127.0.0.1:{port} is in use (another routeyard dev?)\n",
    )


def test_an_attached_agent_survives_a_restart_of_dev_on_fixed_ports(dev: Dev) -> None:
    with (dev.cwd / "agent.log").open("w") as log:
        agent = subprocess.Popen(
            _command("--env-file", "dev.env", "agent", "--app-dir", "../proj", "translator:attached"),
            cwd=dev.cwd, env=_env(), stdout=log, stderr=log,
        )  # fmt: skip
    try:
        _wait_for(dev.cwd / "agent.log", "agent AttachedAgent up")
        first = routeyard(dev, "--env-file", "dev.env", "send", "--wait", "--timeout", "30", "c5", "attached")
        assert first.stdout.splitlines()[-1] == "    AttachedAgent   < attached", first.stderr
        dev.stop()
        dev.start()
        again = routeyard(dev, "--env-file", "dev.env", "send", "--wait", "--timeout", "60", "c5", "attached")
        assert again.returncode == 0, again.stderr + (dev.cwd / "agent.log").read_text()[-2000:]
        assert again.stdout.splitlines()[-1] == "    AttachedAgent   < attached"
    finally:
        agent.send_signal(signal.SIGINT)
        agent.wait(60)
