"""The one place that maps an exception to the ``routeyard`` command's exit status and message.

    exit 2      the command cannot run as given: a usage error, malformed settings (one line per
                problem), a bad catalog or dataset, a missing embedding model or library
                (``UsageError``, ``SettingsError``, ``CatalogError``, ``DatasetError``,
                ``EncoderUnavailable``)
    exit 1      it ran but got no answer: the broker or Redis unreachable (``CannotReach``), a
                turn rejected or unanswered (``TurnRejected``, ``TurnTimeout``)
    exit 130    interrupted (Ctrl-C)

Anything else propagates: a traceback and exit 1. The tree itself is drawn in
``routeyard.consumers.errors``.
"""

from __future__ import annotations

from typing import NamedTuple

from routeyard.consumers.errors import (
    CannotReach,
    CatalogError,
    DatasetError,
    EncoderUnavailable,
    SettingsError,
    TurnRejected,
    TurnTimeout,
    UsageError,
)
from routeyard.consumers.kafka.errors import KafkaConnectionError
from routeyard.consumers.stores.connection import failure as redis_failure


class ExitStatus(NamedTuple):
    code: int
    message: str
    """Printed on stderr; empty: nothing is printed."""


_CANNOT_CONNECT = "routeyard: cannot connect: {exc} (check --bootstrap / --redis or ROUTEYARD_* settings)"
_RULES: tuple[tuple[tuple[type[BaseException], ...], int, str], ...] = (
    ((KeyboardInterrupt,), 130, ""),
    ((EncoderUnavailable,), 2, "routeyard: {exc} (or choose another engine: --engine rules)"),
    ((CatalogError, DatasetError, UsageError), 2, "routeyard: {exc}"),
    ((TurnRejected, TurnTimeout), 1, "routeyard send: {exc}"),
    ((CannotReach,), 1, "routeyard {exc.command}: {exc}"),
    ((KafkaConnectionError,), 1, _CANNOT_CONNECT),
)
"""(classes, exit status, message); the first that matches wins. Redis's: see ``exit_status``."""


def exit_status(exc: BaseException) -> ExitStatus | None:
    """The exit status and message for ``exc``; None: not the command's to explain (re-raise it)."""
    if isinstance(exc, SettingsError):
        return ExitStatus(2, "\n".join(f"routeyard: {problem}" for problem in exc.problems))
    for classes, code, message in _RULES:
        if isinstance(exc, classes):
            return ExitStatus(code, message.format(exc=exc))
    if redis_failure(exc) in ("denied", "unreachable"):
        return ExitStatus(1, _CANNOT_CONNECT.format(exc=exc))
    return None
