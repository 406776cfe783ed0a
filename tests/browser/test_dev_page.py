"""The chat page as a user meets it: served by ``routeyard dev --engine rules`` (the real gateway,
the real broker and Valkey), opened in headless Chromium, a multi-intent message typed in. The turn
shows the routing decision (both agents, mode, engine, time to decide) and both agents' replies;
the follow-up keeps the conversation; the API key goes out as a Bearer token (dev is started with one).

The agents are async generators that write their replies in pieces: the final texts are asserted;
whether the page showed them growing (the gateway forwarding chunks as they arrive) is recorded in
``stream_seen`` and printed, not required.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import pytest
from routeyard.consumers.dev.embedded import free_port

from tests.browser.cdp import Chromium
from tests.browser.chatpage import DONE, SEEN, TURNS, WATCH_GROWTH, grew, type_and_send, type_key

pytestmark = [pytest.mark.browser, pytest.mark.integration]

KEY = "page-test-key"
AGENTS = """
    import asyncio

    from routeyard import agent

    @agent("TranslateAgent", "Translates text")
    async def translate(task):
        for piece in ["Bonjour ", "<b>le ", "monde</b>"]:
            yield piece
            await asyncio.sleep(0.3)

    @agent("SummaryAgent", "Summarises text")
    async def summarise(task):
        for piece in ["In short: ", "a ", "greeting"]:
            yield piece
            await asyncio.sleep(0.3)
"""
CATALOG = """
agents:
  - {name: TranslateAgent, description: Translates text, timeout: 20s, rules: {keywords: [translate]}}
  - {name: SummaryAgent, description: Summarises text, timeout: 20s, rules: {keywords: [summarise]}}
"""
MESSAGE = "translate hello world, then summarise it"
REPLIES = {"TranslateAgent": "Bonjour <b>le monde</b>", "SummaryAgent": "In short: a greeting"}


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``routeyard dev`` with two agents and one API key; the gateway's base URL."""
    root = tmp_path_factory.mktemp("dev-page")
    (root / "agents.py").write_text(textwrap.dedent(AGENTS))
    (root / "agents.yaml").write_text(CATALOG)
    args = ["dev", "--engine", "rules", "--catalog", "agents.yaml", "--agents", "agents.py:translate"]
    args += ["agents.py:summarise", "--kafka-port", str(free_port()), "--redis-port", str(free_port())]
    args += ["--gateway-port", str(free_port())]
    env = {k: v for k, v in os.environ.items() if not k.startswith("ROUTEYARD_")}
    env["ROUTEYARD_GATEWAY__API_KEYS"] = f'{{"{KEY}": "acme"}}'
    log = root / "dev.log"
    with log.open("w") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "routeyard.consumers.cli", *args], cwd=root, env=env, stdout=out, stderr=out
        )
    try:
        yield _gateway_url(log, process)
    finally:
        process.send_signal(signal.SIGINT)
        process.wait(60)


def _gateway_url(log: Path, process: subprocess.Popen[bytes], timeout: float = 90.0) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and process.poll() is None:
        found = re.search(r"gateway: (http://\S+)/v1", log.read_text())
        if found:
            return found.group(1)
        time.sleep(0.2)
    raise AssertionError(f"routeyard dev served no gateway within {timeout:g} s:\n{log.read_text()[-3000:]}")


def test_dev_serves_the_page_and_a_multi_intent_turn_shows_both_agents(
    browser: Chromium, screenshots: Path, gateway: str
) -> None:
    browser.navigate(gateway + "/")
    type_key(browser, KEY)
    browser.evaluate(WATCH_GROWTH)
    type_and_send(browser, MESSAGE)
    browser.wait_for(DONE.format(n=1), timeout=60)
    stream_seen = grew(browser.evaluate(SEEN), REPLIES)
    print(f"replies shown growing piece by piece: {stream_seen}")
    conversation = browser.evaluate("document.getElementById('conversation').textContent")
    type_and_send(browser, "translate it again")
    browser.wait_for(DONE.format(n=2), timeout=60)
    turns = browser.evaluate(TURNS)
    shot = browser.screenshot(screenshots / "page-dev-multi-intent.png")

    first, second = turns
    assert first["status"] == "complete", (first, browser.console)
    assert first["agents"] == "TranslateAgent,SummaryAgent"
    assert re.search(r"mode parallel.*engine rules.*decided in \d+\.\d ms", first["decision"]), first["decision"]
    assert first["replies"] == REPLIES
    assert first["elementsInReplies"] == 0  # the agent's markup is shown as text
    assert re.fullmatch(r"conversation [0-9a-f]{32}", conversation), conversation
    assert (second["status"], second["agents"]) == ("complete", "TranslateAgent"), second
    assert browser.evaluate("document.getElementById('conversation').textContent") == conversation
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_page_without_the_key_shows_the_gateways_401(browser: Chromium, gateway: str) -> None:
    browser.navigate(f"{gateway}/?q={quote(MESSAGE)}")  # a fresh profile: no key stored
    browser.wait_for(DONE.format(n=1), timeout=30)
    (turn,) = browser.evaluate(TURNS)
    assert turn["status"] == "error"
    assert turn["footer"].startswith("HTTP 401: a valid API key is needed"), turn["footer"]
