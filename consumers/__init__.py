"""The processes on the bus: router worker, correlator, agent runtime, client, dev mode.

Thin: decode -> call the router layer -> publish -> commit. ``consumers.app`` is the one place
that creates clients and engines.
"""

from consumers.agent import Agent, agent
from consumers.client import RouteyardClient
from consumers.settings import Settings

__all__ = ["Agent", "RouteyardClient", "Settings", "agent"]
