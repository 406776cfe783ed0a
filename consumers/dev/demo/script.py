"""Scripted conversations for ``routeyard demo``: single intent, a referential follow-up,
multi-intent in both modes, and a thank-you that needs no agent."""

from __future__ import annotations

from routeyard.schemas import Mode

Turn = tuple[str, Mode | None]

CONVERSATIONS: dict[str, list[Turn]] = {
    "demo-weather": [
        ("What's the weather in Paris today?", None),
        ("And tomorrow?", None),
        ("Thanks!", None),
    ],
    "demo-dinner": [
        ("Book a table for two tonight and text Anna the address", "sequential"),
        ("Perfect, thank you!", None),
    ],
    "demo-parallel": [
        ("Will it rain in Rome tonight? Also book a table for dinner", "parallel"),
    ],
}
