"""Two example agents written with routeyard's ``@agent`` decorator.

An agent is an async function that takes an ``AgentTask`` and returns the text of its answer.
routeyard does everything around it: it consumes the agent's topic (``<prefix>agent.<Name>``)
in a consumer group, skips tasks it has already answered, enforces the task's deadline, turns
an exception into an error reply, publishes the reply and commits the offset.

Run them (with the catalog beside this file, which tells the router when to pick each one)::

    routeyard dev --catalog examples/catalog.yaml \\
        --agents examples.agents:weather examples.agents:calendar

What a task carries that these agents use:

- ``task.messages``: the conversation so far, oldest first, ending with the turn to handle.
  routeyard keeps it in Redis, so "And tomorrow?" arrives together with the earlier
  "What's the weather in Paris?" and the agent can resolve what "tomorrow" refers to.
- ``task.prior_replies``: in *sequential* mode, the replies of the agents that ran before this
  one for the same turn. "Check the weather in Rome and add a picnic to my calendar" routes to
  WeatherAgent then CalendarAgent, and the calendar agent sees the forecast.

The logic is deliberately deterministic (no network, no model) so the examples are testable.
"""

from __future__ import annotations

import re

from routeyard import Agent, AgentTask, Message, agent

# --- WeatherAgent ---------------------------------------------------------------------------

# A made-up forecast table: (conditions, temperature in °C) for today and tomorrow.
FORECASTS: dict[str, tuple[tuple[str, int], tuple[str, int]]] = {
    "Paris": (("light rain", 14), ("sunny", 19)),
    "Rome": (("sunny", 24), ("sunny", 26)),
    "London": (("cloudy", 12), ("rain", 11)),
    "Berlin": (("windy", 9), ("cloudy", 10)),
}
UNKNOWN_CITY = (("mild", 18), ("mild", 18))

# "in Paris", "for New York": a capitalised word (or two) after "in" or "for".
_CITY = re.compile(r"\b(?:in|for) ([A-Z][a-z]+(?: [A-Z][a-z]+)?)")


def _user_texts(messages: list[Message]) -> list[str]:
    """The user's messages, newest first (assistant messages are other agents' answers)."""
    return [m.content for m in reversed(messages) if m.role == "user"]


def last_city(messages: list[Message]) -> str | None:
    """The city the user mentioned most recently, looking back through the whole conversation."""
    for text in _user_texts(messages):
        if found := _CITY.search(text):
            return found.group(1)
    return None


def day_in(messages: list[Message]) -> str:
    """The day named by the most recent user message that names one; 'today' if none does."""
    for text in _user_texts(messages):
        lowered = text.lower()
        if "tomorrow" in lowered:
            return "tomorrow"
        if "today" in lowered or "tonight" in lowered:
            return "today"
    return "today"


@agent("WeatherAgent", "Provides weather forecasts and current conditions for any location")
async def weather(task: AgentTask) -> str:
    # The city may have been named several turns ago ("What's the weather in Paris?" ...
    # "And tomorrow?"), so search the conversation, not only the latest message.
    city = last_city(task.messages)
    if city is None:
        return "Which city should I look at?"
    day = day_in(task.messages)
    conditions, celsius = FORECASTS.get(city, UNKNOWN_CITY)[1 if day == "tomorrow" else 0]
    return f"{city} {day}: {conditions}, {celsius}°C."


# --- CalendarAgent --------------------------------------------------------------------------

# "add a picnic to my calendar", "schedule a meeting with Bob", "remind me to call Anna".
_WHAT = re.compile(
    r"\b(?:add|schedule|book|put|remind me (?:to|about))\s+(?:an? |the )?(.{1,80}?)"
    r"(?:\s+(?:to|in|on) my calendar\b|\s+(?:today|tomorrow)\b|[.!?]|$)",
    re.IGNORECASE,
)
_WET = re.compile(r"\b(rain|storm|snow|shower)", re.IGNORECASE)


MAX_TEXT = 1000
"""Only the start of a turn is searched, and the thing to add is at most 80 characters: a lazy
``.+?`` tried from every "add" of a 32 KB turn took seconds (quadratic); bounded, it is linear."""


def what_to_add(text: str) -> str:
    """The thing to put in the calendar, or 'event' when the turn does not say."""
    found = _WHAT.search(text[:MAX_TEXT])
    return found.group(1).strip() if found else "event"


def weather_note(task: AgentTask) -> str:
    """In sequential mode, a warning drawn from WeatherAgent's reply to the same turn."""
    for reply in task.prior_replies:
        if reply.agent == "WeatherAgent" and reply.status == "ok" and _WET.search(reply.content):
            return " Rain is forecast: I added a reminder to bring an umbrella."
    return ""


@agent("CalendarAgent", "Adds events, meetings and reminders to the user's calendar")
async def calendar(task: AgentTask) -> str:
    # What to add comes from the latest turn; the day may come from an earlier one
    # ("Will it rain in Paris tomorrow?" ... "Then add a museum visit to my calendar").
    what = what_to_add(task.messages[-1].content)
    return f"Added '{what}' to your calendar for {day_in(task.messages)}.{weather_note(task)}"


AGENTS: list[Agent] = [weather, calendar]
"""Both agents, for ``run_pipeline(settings, catalog, AGENTS, stop)`` in your own code."""
