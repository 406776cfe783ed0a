"""The demo's agents: canned answers, but real consumers on real topics."""

from __future__ import annotations

import re

from routeyard.consumers.agents.agent import Agent, agent
from routeyard.schemas import AgentTask

_CITY = re.compile(r"\bin ([A-Z][a-z]+(?: [A-Z][a-z]+)?)")


def _last_city(task: AgentTask) -> str | None:
    for message in reversed(task.messages):
        if message.role == "user" and (found := _CITY.search(message.content)):
            return found.group(1)
    return None


@agent("WeatherAgent", "Provides weather forecasts and current conditions for any location")
async def weather(task: AgentTask) -> str:
    city = _last_city(task)
    if city is None:
        return "Which city should I look at?"
    day = "tomorrow" if "tomorrow" in task.messages[-1].content.lower() else "today"
    return f"{city} {day}: 21°C, light clouds, no rain expected."


@agent("RestaurantAgent", "Finds restaurants and books tables")
async def restaurant(task: AgentTask) -> str:
    return "Booked a table for two at Luigi's (12 Via Roma) at 8 pm."


@agent("MessagingAgent", "Sends text messages to the user's contacts")
async def messaging(task: AgentTask) -> str:
    earlier = [r.content for r in task.prior_replies if r.status == "ok"]
    if earlier:
        return f"Texted Anna: “{earlier[-1]}”"
    return "Texted Anna."


AGENTS: list[Agent] = [weather, restaurant, messaging]
