"""Every user-facing routeyard error, in one tree; each says whether retrying can help.

    RouteyardError                  retriable=False, fatal=False: the input is at fault -> dead letter
    |-- InvalidEvent                an event that decoded but cannot be routed (dead-lettered)
    |-- DatasetError                an evaluation dataset missing or malformed (eval, tune)      exit 2
    |-- CatalogError                an impossible catalog; raised at boot                 fatal  exit 2
    |-- EngineDead                  the engine is gone for good                           fatal
    |   '-- VllmEngineDead          the vLLM engine process died                          fatal
    |-- EncoderUnavailable          the embedding model or its libraries are missing      fatal  exit 2
    |-- DependencyUnavailable       Redis or the broker cannot be reached for now     retriable
    |-- ShutdownTimeout             in-flight work not drained in time after SIGTERM      fatal
    |-- EmbeddedServerError         `routeyard dev`'s tansu or Valkey would not start     fatal
    |-- PlotsUnavailable            matplotlib is missing: `routeyard eval` skips its plots
    |-- TurnRejected                RouteyardClient.ask: the router refused the turn             exit 1
    |-- TurnTimeout                 RouteyardClient.ask: no response in time (a TimeoutError)    exit 1
    '-- UsageError                  the command line, or a file it names, is wrong               exit 2
        |-- SettingsFileError       --env-file names no file
        |-- ReplayError             bad replay options (selection, dispatch prefix)
        |-- LabelsError             a malformed replay labels file
        '-- DlqError                bad dlq options (unknown id, malformed range, foreign topic)

The router layer's part of the tree is defined in ``routeyard.router.errors`` (the router layer
never imports this one) and re-exported here. ``routeyard.consumers.retry.classify`` maps any
exception to what a worker does (retry, dead-letter, exit); ``routeyard.consumers.cli.exits`` maps
it to the ``routeyard`` command's exit status (the column on the right).

``InvalidEvent``, ``TurnRejected`` and ``TurnTimeout`` are still defined beside the code that raises
them (the router worker and the client) and are loaded from there on first use.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from routeyard.router.errors import (
    CatalogError,
    DatasetError,
    DependencyUnavailable,
    EncoderUnavailable,
    EngineDead,
    RouteyardError,
    VllmEngineDead,
)

__all__ = [
    "CatalogError",
    "DatasetError",
    "DependencyUnavailable",
    "DlqError",
    "EmbeddedServerError",
    "EncoderUnavailable",
    "EngineDead",
    "InvalidEvent",
    "LabelsError",
    "PlotsUnavailable",
    "ReplayError",
    "RouteyardError",
    "SettingsFileError",
    "ShutdownTimeout",
    "TurnRejected",
    "TurnTimeout",
    "UsageError",
    "VllmEngineDead",
]

if TYPE_CHECKING:
    from routeyard.consumers.client import TurnRejected, TurnTimeout
    from routeyard.consumers.workers.router import InvalidEvent

_ELSEWHERE: dict[str, str] = {
    "InvalidEvent": "routeyard.consumers.workers.router",
    "TurnRejected": "routeyard.consumers.client",
    "TurnTimeout": "routeyard.consumers.client",
}


class UsageError(RouteyardError, ValueError):
    """The command line, or a file it names, is wrong. Not retriable: the command exits 2."""


class SettingsFileError(UsageError):
    """--env-file names no file."""


class ReplayError(UsageError):
    """Bad replay options: a negative or inverted selection, a refused dispatch prefix. Not retriable."""


class LabelsError(UsageError):
    """The labels file is missing, unreadable or malformed. Not retriable: fix the file."""


class DlqError(UsageError):
    """Bad dlq options: an unknown id, a malformed range, a foreign source topic. Not retriable."""


class ShutdownTimeout(RouteyardError):
    """In-flight work did not finish within ``lifecycle.shutdown_timeout_s`` of the stop signal.
    It was cancelled uncommitted (so it is redelivered); the process exits non-zero."""

    fatal = True


class EmbeddedServerError(RouteyardError, RuntimeError):
    """An embedded server is unavailable or failed to start. Not retriable."""

    fatal = True


class PlotsUnavailable(RouteyardError, RuntimeError):
    """matplotlib is not installed. Not retriable: ``pip install matplotlib``."""


def __getattr__(name: str) -> Any:
    module = _ELSEWHERE.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
