"""The workload both engine test modules use: a 12-agent catalog and 2-10-turn conversations."""

from __future__ import annotations

import random

from routeyard.router.catalog import catalog_from_dict
from routeyard.router.engines.base import EngineResult, RoutingRequest
from routeyard.router.plano.parse import known_routes
from routeyard.schemas import Message

CATALOG = catalog_from_dict(
    {
        "agents": [
            {"name": "WeatherAgent", "description": "Weather forecasts and current conditions for any city"},
            {"name": "FlightAgent", "description": "Searches, books and changes flights"},
            {"name": "HotelAgent", "description": "Finds and books hotels and apartments"},
            {"name": "CodeAgent", "description": "Writes, explains and debugs code in any language"},
            {"name": "MathAgent", "description": "Solves equations and explains calculations"},
            {"name": "BillingAgent", "description": "Invoices, refunds and payment problems"},
            {"name": "ShippingAgent", "description": "Tracks parcels and changes delivery addresses"},
            {"name": "CalendarAgent", "description": "Schedules, moves and cancels meetings"},
            {"name": "TranslateAgent", "description": "Translates text between languages"},
            {"name": "RecipeAgent", "description": "Suggests recipes from the ingredients at hand"},
            {"name": "NewsAgent", "description": "Summarises today's news on a topic"},
            {"name": "Helpdesk", "description": "Anything the other agents do not cover", "default": True},
        ]
    }
)
NAMES = set(CATALOG.names)
TOPICS = [
    "Will it rain in Lisbon tomorrow?",
    "Book me a flight from Paris to Oslo on Friday and a hotel near the station.",
    "Why does my Python script raise KeyError: 'id'?",
    "What is the integral of x^2 from 0 to 3?",
    "I was charged twice for order 1182, please refund one.",
    "Where is my parcel? The tracking number is ZX93.",
    "Move my 3pm meeting with Ana to Thursday.",
    "Translate 'good morning, how are you' into Japanese.",
    "I have eggs, spinach and feta. What can I cook?",
    "Anything new about the European elections?",
]


def conversation(rng: random.Random, turns: int) -> list[Message]:
    messages = []
    for i in range(turns):
        role = "user" if (turns - i) % 2 == 1 else "assistant"
        text = rng.choice(TOPICS) if role == "user" else f"Sure, here is what I found ({rng.randint(1, 99)})."
        messages.append(Message(role=role, content=text))
    return messages


def batch(size: int, seed: int = 7) -> list[RoutingRequest]:
    rng = random.Random(seed)
    return [
        RoutingRequest(event_id=f"e{i}", conversation=conversation(rng, rng.randint(2, 10)), agents=CATALOG.agents)
        for i in range(size)
    ]


def assert_valid_or_cut_off(results: list[EngineResult]) -> int:
    """Every result names catalog agents only or failed as cut off; returns how many are valid."""
    valid = 0
    for result in results:
        if result.failed:
            assert "cut off" in (result.error or ""), result
            continue
        _, dropped = known_routes(result.routes, NAMES)
        assert dropped == [], result
        assert result.confidence is not None and 0.0 < result.confidence <= 1.0, result
        valid += 1
    return valid
