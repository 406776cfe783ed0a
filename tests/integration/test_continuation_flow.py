"""Dialogue state through the pipeline: an agent asks for the user's phone number (``Ask``: its reply
is marked awaiting_input), the user answers "(220) 234-2345", and the turn goes back to that agent,
although ContactsAgent is what the engine picks for a phone number (its rules and its description)."""

from __future__ import annotations

from pathlib import Path

import pytest
from routeyard.consumers.agents.agent import Agent, Ask, agent
from routeyard.consumers.dev.embedded import EmbeddedValkey
from routeyard.consumers.kafka.bus import Bus
from routeyard.router.catalog import catalog_from_dict
from routeyard.router.settings import SemanticSettings
from routeyard.schemas import AgentTask, decision_decoder

from tests.integration.stack import make_settings, read_all, running

CATALOG = catalog_from_dict(
    {
        "agents": [
            {
                "name": "BookingAgent",
                "description": "Books tables at restaurants for a date, a time and a number of people",
                "examples": ["Book a table for two tonight", "reserve a table at an Italian place"],
                "rules": {"keywords": ["book", "table"]},
            },
            {
                "name": "ContactsAgent",
                "description": "Looks up, saves and shares phone numbers and contact details",
                "examples": ["What's Anna's phone number?", "(415) 555-0100", "my number is 650-555-0199"],
                "rules": {"keywords": ["phone", "contact"], "patterns": [r"\(\d{3}\) \d{3}-\d{4}"]},
            },
        ]
    }
)


def booking(question: str, *, ask: bool) -> Agent:
    async def handle(task: AgentTask) -> str:
        last = next(m.content for m in reversed(task.messages) if m.role == "user")
        if "book" in last.lower():
            return Ask(question) if ask else question
        return f"Booked; we will call {last}"

    return agent("BookingAgent", "books tables")(handle)


async def contacts(task: AgentTask) -> str:
    return "Saved."


@pytest.mark.parametrize("engine", ["rules", "semantic"])
@pytest.mark.parametrize(
    ("question", "ask", "back"),
    [
        ("What's your phone number?", True, True),
        ("Your phone number, please.", True, True),  # no question mark: awaiting_input alone
        ("Your phone number, please.", False, False),  # neither: the engine's choice stands
    ],
)
async def test_an_answer_goes_back_to_the_agent_that_asked(
    bus: Bus, valkey: EmbeddedValkey, prefix: str, onnx_cache: Path, engine: str, question: str, ask: bool, back: bool
) -> None:
    settings = make_settings(bus, valkey, prefix, engine=engine)
    settings = settings.model_copy(update={"semantic": SemanticSettings(cache_dir=onnx_cache)})
    agents = [booking(question, ask=ask), agent("ContactsAgent", "contacts")(contacts)]
    async with running(settings, CATALOG, agents) as client:
        first = await client.ask("c1", "Book a table for two tonight at 7", timeout=60)
        second = await client.ask("c1", "(220) 234-2345", timeout=60)
    assert (first.routes, first.content, first.replies[0].awaiting_input) == (["BookingAgent"], question, ask)
    decisions = [decision_decoder.decode(v) for v in await read_all(settings, settings.topics.decisions)]
    answer = decisions[-1]
    if back:
        assert (second.routes, second.content) == (["BookingAgent"], "Booked; we will call (220) 234-2345")
        assert answer.continuation == "BookingAgent"
    else:
        assert answer.continuation is None and second.routes == answer.selected
    assert answer.selected == ["ContactsAgent"]  # the engine's own choice (a pattern; the examples), recorded
