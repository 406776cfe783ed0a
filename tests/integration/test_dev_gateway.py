"""The issue's "done when", as a user meets it: a bare ``routeyard dev`` (the demo's catalog and agents,
started as a subprocess with ``--gateway-port``) and the official ``openai`` client pointed at its
gateway: routed answers with stream=False and stream=True, a follow-up routed by the conversation's
context, a multi-intent turn. And the README's ``curl`` example, taken from README.md and run as it
is written (only the port changed), so the README cannot drift from what the gateway does.

The in-process gateway is covered on each bus by test_gateway.py; this file checks the front door
that ``routeyard dev`` itself opens.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from openai import OpenAI
from routeyard.consumers.dev.embedded import free_port

pytestmark = pytest.mark.integration

README = Path(__file__).resolve().parents[2] / "README.md"
WEATHER = "Paris today: 21°C, light clouds, no rain expected."
TABLE = "Booked a table for two at Luigi's (12 Via Roma) at 8 pm."


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A bare ``routeyard dev --engine rules --gateway-port 0`` (no API keys, as the README's quickstart
    starts it); the gateway's base URL as dev prints it."""
    root = tmp_path_factory.mktemp("dev-gateway")
    args = ["dev", "--engine", "rules", "--gateway-port", "0"]
    args += ["--kafka-port", str(free_port()), "--redis-port", str(free_port())]
    env = {k: v for k, v in os.environ.items() if not k.startswith("ROUTEYARD_")}
    log = root / "dev.log"
    with log.open("w") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "routeyard.consumers.cli", *args], cwd=root, env=env, stdout=out, stderr=out
        )
    try:
        yield _printed_url(log, process)
    finally:
        process.send_signal(signal.SIGINT)
        process.wait(60)


def _printed_url(log: Path, process: subprocess.Popen[bytes], timeout: float = 120.0) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and process.poll() is None:
        text = log.read_text()
        found = re.search(r"gateway: (http://\S+)/v1", text)
        if found and "router worker up" in text:
            return found.group(1)
        time.sleep(0.2)
    raise AssertionError(f"routeyard dev served no gateway within {timeout:g} s:\n{log.read_text()[-3000:]}")


def client(url: str) -> OpenAI:
    return OpenAI(base_url=f"{url}/v1", api_key="KEY", max_retries=0, timeout=60)


def test_openai_client_without_streaming_gets_a_routed_answer_and_a_follow_up_by_context(gateway: str) -> None:
    openai = client(gateway)
    ask = [{"role": "user", "content": "What's the weather in Paris?"}]
    raw = openai.chat.completions.with_raw_response.create(model="routeyard", messages=ask)  # type: ignore[arg-type]
    first = raw.parse()
    conversation = raw.headers["x-conversation-id"]  # minted: the request named none
    history = [*ask, {"role": "assistant", "content": first.choices[0].message.content}]
    history.append({"role": "user", "content": "And tomorrow?"})
    follow_up = openai.chat.completions.create(model="routeyard", messages=history, user=conversation)  # type: ignore[arg-type]

    assert re.fullmatch(r"[0-9a-f]{32}", conversation), conversation
    assert first.choices[0].message.content == WEATHER
    assert raw.headers["x-routeyard-agents"] == "WeatherAgent"
    extension = first.model_extra["routeyard"]  # type: ignore[index]
    assert (extension["status"], extension["routes"]) == ("complete", ["WeatherAgent"])
    assert extension["decision"]["engine"] == "rules"
    # "And tomorrow?" names neither weather nor a city: the conversation's context routed it, and the
    # agent saw the earlier turn (its city) through routeyard's own history.
    assert follow_up.choices[0].message.content == "Paris tomorrow: 21°C, light clouds, no rain expected."
    assert follow_up.model_extra["routeyard"]["routes"] == ["WeatherAgent"]  # type: ignore[index]


def test_openai_client_streams_a_multi_intent_turn_labelled_by_agent(gateway: str) -> None:
    ask = [{"role": "user", "content": "What's the weather in Paris? And book a table for dinner."}]
    stream = client(gateway).chat.completions.create(model="routeyard", messages=ask, stream=True)  # type: ignore[arg-type]
    chunks = list(stream)

    first, last = chunks[0].model_extra["routeyard"], chunks[-1].model_extra["routeyard"]  # type: ignore[index]
    by_agent: dict[str, str] = {}
    for chunk in chunks[1:-1]:
        agent = chunk.model_extra["routeyard"]["agent"]  # type: ignore[index]
        by_agent[agent] = by_agent.get(agent, "") + (chunk.choices[0].delta.content or "")
    assert chunks[0].choices[0].delta.role == "assistant"
    assert sorted(first["decision"]["routes"]) == ["RestaurantAgent", "WeatherAgent"], first
    # what a plain OpenAI client shows: both answers, a blank line between them (in the order they came)
    assert "".join(by_agent.values()) in (f"{WEATHER}\n\n{TABLE}", f"{TABLE}\n\n{WEATHER}"), by_agent
    assert {agent: text.strip() for agent, text in by_agent.items()} == {
        "WeatherAgent": WEATHER,
        "RestaurantAgent": TABLE,
    }
    assert chunks[-1].choices[0].finish_reason == "stop"
    assert last["status"] == "complete" and last["event_id"] == first["event_id"]
    assert {r["agent"]: r["content"] for r in last["replies"]} == {"WeatherAgent": WEATHER, "RestaurantAgent": TABLE}


def test_the_readme_curl_runs_as_written(gateway: str) -> None:
    port = gateway.rsplit(":", 1)[1]
    command = readme_curl().replace("http://127.0.0.1:8080/", f"http://127.0.0.1:{port}/")
    done = subprocess.run(shlex.split(command), capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    answer: dict[str, Any] = json.loads(done.stdout)
    assert answer["object"] == "chat.completion"
    assert answer["choices"][0]["message"]["content"] == WEATHER
    assert answer["routeyard"]["conversation_id"] == "c1" and answer["routeyard"]["routes"] == ["WeatherAgent"]


def readme_curl() -> str:
    """The README's first ``curl`` block, continuation lines joined: exactly what a reader pastes."""
    blocks = re.findall(r"```bash\n(curl .*?)```", README.read_text(), re.DOTALL)
    assert blocks, "README.md has no ```bash block starting with curl"
    command = blocks[0].replace("\\\n", " ")
    assert "http://127.0.0.1:8080/v1/chat/completions" in command, command
    return command
