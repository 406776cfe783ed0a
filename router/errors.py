"""The error tree: every routeyard error says whether retrying can help.

The router layer's errors are defined here; the consumers layer's (the client's, the command
line's) are in ``routeyard.consumers.errors``, which re-exports these too and draws the whole tree::

    RouteyardError                  retriable=False, fatal=False: the input is at fault -> dead letter
    |-- InvalidEvent                an event that decoded but cannot be routed (router.validation)
    |-- DatasetError                an evaluation dataset missing or malformed (eval, tune)
    |-- CatalogError                an impossible catalog; raised at boot                     fatal
    |-- EngineDead                  the engine is gone for good                               fatal
    |   '-- VllmEngineDead          the vLLM engine process died                              fatal
    |-- EncoderUnavailable          the embedding model or its libraries are missing          fatal
    '-- DependencyUnavailable       Redis or the broker cannot be reached for now             retriable

``routeyard.consumers.retry.classify`` is the one place that turns any exception (these, and the Redis,
Kafka and msgspec ones) into an action: retry with backoff, dead-letter, or exit the process;
``routeyard.consumers.cli.exits`` is the one place that turns them into the command's exit status.
"""

from __future__ import annotations

from typing import ClassVar

__all__ = [
    "CatalogError",
    "DatasetError",
    "DependencyUnavailable",
    "EncoderUnavailable",
    "EngineDead",
    "InvalidEvent",
    "RouteyardError",
    "VllmEngineDead",
]


class RouteyardError(Exception):
    """Base of routeyard's own errors.

    ``retriable``: the same work may succeed later (retry it in place with backoff).
    ``fatal``: this process cannot go on (exit; a supervisor restarts it, uncommitted work is
    redelivered). Neither: the input itself is at fault (dead-letter it).
    """

    retriable: ClassVar[bool] = False
    fatal: ClassVar[bool] = False


class DatasetError(RouteyardError, ValueError):
    """The dataset is missing, unreadable or malformed. Not retriable: fix the file or the path."""


class CatalogError(RouteyardError, ValueError):
    """The catalog file is missing, unreadable or invalid. Not retriable: fix the file."""

    fatal = True


class EngineDead(RouteyardError, RuntimeError):
    """The engine cannot decide anything any more. Not retriable: the worker must exit."""

    fatal = True


class VllmEngineDead(EngineDead):
    """The vLLM engine process died. Not retriable: exit so a supervisor restarts the worker."""


class EncoderUnavailable(RouteyardError, RuntimeError):
    """The embedding model cannot be loaded (missing folder or library). Not retriable."""

    fatal = True


class DependencyUnavailable(RouteyardError):
    """A dependency (Redis, the broker) did not answer; retrying later may succeed."""

    retriable = True


class InvalidEvent(RouteyardError, ValueError):
    """The event decoded but cannot be routed. Not retriable: it goes to the dead-letter topic,
    and its sender gets a ``rejected`` answer with the reason."""
