"""The turn log (``routeyard.turns``): with ``log_turns`` (``routeyard dev`` sets it) one INFO line
per turn answered (ids, routes, status, milliseconds) and one per agent timeout, never the
messages' text; without it, nothing at INFO. On the memory bus with the real Valkey."""

from __future__ import annotations

import logging
import re

import pytest
from routeyard.consumers.dev.embedded import EmbeddedValkey
from routeyard.consumers.kafka.memory import MemoryBus
from routeyard.consumers.settings import Settings

from tests.integration.stack import Recorder, catalog, make_settings, running, settled, spec

pytestmark = pytest.mark.memory

CATALOG = catalog(
    spec("WeatherAgent", "weather"),
    spec("RestaurantAgent", "table"),
    spec("SlowAgent", "slow", timeout="1s"),
)
SECRET = "the-secret-word-xyzzy"


def _settings(valkey: EmbeddedValkey, prefix: str, *, log_turns: bool) -> Settings:
    return make_settings(MemoryBus(), valkey, prefix).model_copy(update={"log_turns": log_turns})


def _turn_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "routeyard.turns" and r.levelno == logging.INFO]


async def test_one_line_per_turn_with_ids_routes_status_and_ms(
    valkey: EmbeddedValkey, prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    settings = _settings(valkey, prefix, log_turns=True)
    agents = Recorder()
    with caplog.at_level(logging.INFO, logger="routeyard.turns"):
        async with running(settings, CATALOG, [agents.agent("WeatherAgent"), agents.agent("RestaurantAgent")]) as c:
            first = await c.ask("c1", f"weather in Paris? {SECRET}", timeout=30)
            second = await c.ask("c2", f"weather and a table {SECRET}", timeout=30)
            await settled(settings, 0.5)
    lines = _turn_lines(caplog)
    assert len(lines) == 2, lines
    assert re.fullmatch(rf"turn {first.event_id} conversation c1: complete \[WeatherAgent\] \d+ ms", lines[0])
    assert re.fullmatch(
        rf"turn {second.event_id} conversation c2: complete \[WeatherAgent, RestaurantAgent\] \d+ ms", lines[1]
    )
    assert not any(SECRET in r.getMessage() for r in caplog.records)


async def test_an_agent_timeout_is_one_line(
    valkey: EmbeddedValkey, prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    settings = _settings(valkey, prefix, log_turns=True)
    agents = Recorder()
    with caplog.at_level(logging.INFO, logger="routeyard.turns"):
        async with running(settings, CATALOG, [agents.agent("WeatherAgent"), agents.agent("SlowAgent", delay=5)]) as c:
            response = await c.ask("c3", "weather, slow please", timeout=30)
    assert response.timed_out == ["SlowAgent"]
    lines = _turn_lines(caplog)
    assert len(lines) == 2, lines
    assert lines[0] == f"turn {response.event_id} conversation c3: SlowAgent timed out after 1 s (attempt 1)"
    assert re.fullmatch(
        rf"turn {response.event_id} conversation c3: partial \[WeatherAgent, SlowAgent\] \d+ ms", lines[1]
    )


async def test_without_log_turns_the_lines_are_debug_only(
    valkey: EmbeddedValkey, prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    settings = _settings(valkey, prefix, log_turns=False)
    with caplog.at_level(logging.DEBUG, logger="routeyard.turns"):
        async with running(settings, CATALOG, [Recorder().agent("WeatherAgent")]) as client:
            response = await client.ask("c4", "weather?", timeout=30)
    assert _turn_lines(caplog) == []
    debug = [r.getMessage() for r in caplog.records if r.name == "routeyard.turns"]
    assert any(m.startswith(f"turn {response.event_id} conversation c4: complete") for m in debug), debug
    assert any(m.startswith(f"decision {response.event_id}: [WeatherAgent] engine=rules") for m in debug), debug
