"""``routeyard chat`` as a user runs it: a child process reading piped lines, against a pipeline on the
real broker and Valkey. Each line prints its decision, the streamed replies labelled by agent and a
status line; /quit ends it; agent text cannot drive the terminal; a refused turn is one line."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import AsyncIterator

import pytest
from routeyard.consumers.agents.agent import agent
from routeyard.consumers.dev.embedded import EmbeddedBroker, EmbeddedValkey
from routeyard.consumers.settings import Settings
from routeyard.schemas import AgentTask

from tests.integration.stack import Recorder, catalog, make_settings, running, spec

pytestmark = pytest.mark.integration

CATALOG = catalog(spec("StoryAgent", "story"), spec("WeatherAgent", "weather"), spec("RudeAgent", "rude"))


@agent("StoryAgent", "tells a story, piece by piece")
async def story(task: AgentTask) -> AsyncIterator[str]:
    for piece in ["Once ", "upon ", "a time."]:
        await asyncio.sleep(0.02)
        yield piece


@agent("RudeAgent", "tries to clear the user's terminal")
async def rude(task: AgentTask) -> AsyncIterator[str]:
    yield "\x1b[2J\x1b]0;pwned\x07gotcha\r"


async def _chat(settings: Settings, stdin: str, *flags: str) -> tuple[int, str, str]:
    env = {
        **os.environ,
        "ROUTEYARD_TOPIC_PREFIX": settings.topic_prefix,
        "ROUTEYARD_KAFKA__BOOTSTRAP": settings.kafka.bootstrap,
    }
    command = [sys.executable, "-m", "routeyard.consumers.cli", "chat", "c-chat", "--timeout", "20", *flags]
    process = await asyncio.create_subprocess_exec(
        *command, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    out, err = await asyncio.wait_for(process.communicate(stdin.encode()), 90)
    assert "Traceback" not in err.decode(), err.decode()[-2000:]
    return process.returncode or 0, out.decode(), err.decode()


async def test_piped_lines_print_decisions_streamed_replies_and_status_until_quit(
    broker: EmbeddedBroker, valkey: EmbeddedValkey, prefix: str
) -> None:
    settings = make_settings(broker, valkey, prefix)
    agents = [story, rude, Recorder().agent("WeatherAgent")]
    # "rude" before the weather: the recording agent echoes "weather in Oslo?", and a one-word turn
    # after a question goes back to the agent that asked (the continuation policy)
    lines = "tell me a story\n\nrude\n  weather in Oslo?  \n/quit\nweather after quit\n"
    async with running(settings, CATALOG, agents) as client:
        await client.ask("warm-up", "weather?", timeout=30)
        code, out, _ = await _chat(settings, lines)
    assert code == 0
    printed = out.splitlines()
    decisions = [line for line in printed if line.startswith("  decision: ")]
    assert [d.split("]")[0] for d in decisions] == [
        "  decision: [StoryAgent",
        "  decision: [RudeAgent",
        "  decision: [WeatherAgent",
    ]
    assert f"    {'StoryAgent':<16}< Once upon a time." in printed
    assert f"    {'WeatherAgent':<16}< WeatherAgent: weather in Oslo?" in printed
    assert f"    {'RudeAgent':<16}< [2J]0;pwnedgotcha" in printed
    assert "\x1b" not in out and "\x07" not in out and "\r" not in out
    statuses = [line for line in printed if line.startswith("  response: ")]
    assert len(statuses) == 3 and all(s.startswith("  response: complete in ") for s in statuses)
    story_at, status_at = printed.index(f"    {'StoryAgent':<16}< Once upon a time."), printed.index(statuses[0])
    assert printed.index(decisions[0]) < story_at < status_at


async def test_a_refused_turn_is_one_line_and_the_chat_goes_on_to_the_end_of_input(
    broker: EmbeddedBroker, valkey: EmbeddedValkey, prefix: str
) -> None:
    settings = make_settings(broker, valkey, prefix)
    huge = "x" * (70 * 1024)
    async with running(settings, CATALOG, [Recorder().agent("WeatherAgent")]) as client:
        await client.ask("warm-up", "weather?", timeout=30)
        code, out, err = await _chat(settings, f"weather?\n{huge}\nweather again?", "--agents", "NoSuchAgent")
    assert code == 0
    refused = [line for line in out.splitlines() if line.startswith("  rejected: ")]
    assert len(refused) == 2 and all("unknown agents" in line for line in refused)
    assert err.splitlines() == ["  refused: a line longer than 65536 bytes"]
