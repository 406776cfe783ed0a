"""routeyard: an event-driven router for multi-agent systems.

Services publish conversation turns to Kafka; router workers decide which agents handle each
turn; agents are topic consumers; one correlated response comes back. What users import::

    from routeyard import agent, AgentTask, RouteyardClient, Settings

Everything lives under this one namespace: ``routeyard.schemas`` (the wire contract),
``routeyard.router`` (deciding) and ``routeyard.consumers`` (the processes on the bus). A
project's own ``schemas`` or ``router`` never collides with them. Names are loaded on first use,
so ``import routeyard`` stays cheap (no Kafka, Redis or engine import until one is needed).
"""

from __future__ import annotations

import importlib
import os
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# In a source checkout this folder holds only this file; the layers are its siblings
# (../schemas, ../router, ../consumers), which an install maps to routeyard.* (pyproject.toml).
_checkout = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if not os.path.isdir(os.path.join(os.path.dirname(__file__), "schemas")) and all(
    os.path.isfile(os.path.join(_checkout, layer, "__init__.py")) for layer in ("schemas", "router", "consumers")
):
    __path__.append(_checkout)

_PUBLIC: dict[str, str] = {
    "Agent": "routeyard.consumers.agents.agent",
    "Ask": "routeyard.consumers.agents.agent",
    "agent": "routeyard.consumers.agents.agent",
    "RouteyardClient": "routeyard.consumers.client",
    "SyncRouteyardClient": "routeyard.consumers.blocking",
    "TurnRejected": "routeyard.consumers.errors",
    "TurnTimeout": "routeyard.consumers.errors",
    "Settings": "routeyard.consumers.settings",
    "AgentChunk": "routeyard.schemas",
    "AgentReply": "routeyard.schemas",
    "AgentTask": "routeyard.schemas",
    "ConversationEvent": "routeyard.schemas",
    "ConversationResponse": "routeyard.schemas",
    "DeadLetter": "routeyard.schemas",
    "Message": "routeyard.schemas",
    "PriorReply": "routeyard.schemas",
    "RoutingDecision": "routeyard.schemas",
    "Topics": "routeyard.schemas",
}

__all__ = [
    "Agent",
    "AgentChunk",
    "AgentReply",
    "AgentTask",
    "Ask",
    "ConversationEvent",
    "ConversationResponse",
    "DeadLetter",
    "Message",
    "PriorReply",
    "RouteyardClient",
    "RoutingDecision",
    "Settings",
    "SyncRouteyardClient",
    "Topics",
    "TurnRejected",
    "TurnTimeout",
    "__version__",
    "agent",
]

if TYPE_CHECKING:
    from routeyard.consumers.agents.agent import Agent, Ask, agent
    from routeyard.consumers.blocking import SyncRouteyardClient
    from routeyard.consumers.client import RouteyardClient
    from routeyard.consumers.errors import TurnRejected, TurnTimeout
    from routeyard.consumers.settings import Settings
    from routeyard.schemas import (
        AgentChunk,
        AgentReply,
        AgentTask,
        ConversationEvent,
        ConversationResponse,
        DeadLetter,
        Message,
        PriorReply,
        RoutingDecision,
        Topics,
    )


def __getattr__(name: str) -> Any:
    module = _PUBLIC.get(name)
    if module is None:
        raise AttributeError(f"module 'routeyard' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
