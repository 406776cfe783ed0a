"""What every ``routeyard`` command shares on its command line: the parser class (usage errors in one
line), the global flags (accepted before or after the command), and the argument types that more
than one command uses (``--since``), so each is parsed and worded the same everywhere.
"""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import NoReturn

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


class Parser(argparse.ArgumentParser):
    """An ArgumentParser whose usage errors are one line: ``routeyard send: error: ... (see --help)``."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def add_global_flags(parser: argparse.ArgumentParser, *, top: bool) -> None:
    """The flags every command takes. At the top (``top``) they have their defaults; each command's
    copy has none (SUPPRESS), so ``routeyard --redis X send ...`` is not undone by ``send``'s copy."""
    default = None if top else argparse.SUPPRESS
    add = parser.add_argument
    add(
        "--bootstrap", default=default, metavar="HOST:PORT", help="Kafka bootstrap servers (ROUTEYARD_KAFKA__BOOTSTRAP)"
    )
    add("--redis", default=default, metavar="URL", help="Redis URL (ROUTEYARD_REDIS__URL)")
    add("--prefix", default=default, help="topic prefix (ROUTEYARD_TOPIC_PREFIX; default routeyard.)")
    add("--env-file", default=default, type=Path, metavar="FILE", help="read ROUTEYARD_* settings from this file too")
    add(
        "--log-level",
        default="INFO" if top else argparse.SUPPRESS,
        type=str.upper,
        choices=LOG_LEVELS,
        metavar="LEVEL",
        help=f"log level: {', '.join(LOG_LEVELS)} (default INFO)",
    )


def global_flags() -> argparse.ArgumentParser:
    """A parent parser with the global flags, for each command's parser (``parents=[...]``)."""
    parent = argparse.ArgumentParser(add_help=False)
    add_global_flags(parent, top=False)
    return parent


def package_version() -> str:
    try:
        return version("routeyard")
    except PackageNotFoundError:  # a checkout that was never installed
        return "unknown"


def timestamp(text: str) -> datetime:
    """``--since``/``--until``: an ISO 8601 time; without a zone it is UTC."""
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"not an ISO 8601 time: {text!r} (e.g. 2025-06-01 or 2025-06-01T12:00:00+02:00)"
        ) from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def plural(count: int, noun: str, many: str | None = None) -> str:
    """``1 agent``, ``2 agents``, ``0 agents``."""
    return f"{count} {noun if count == 1 else many or noun + 's'}"


def quiet_broken_pipe() -> int:
    """The reader of our stdout went away (``routeyard dlq show 6:1 | head -5``): stop quietly, as
    Python's documentation advises (stdout to devnull, so the exit flush cannot fail again)."""
    import os

    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    return 141  # 128 + SIGPIPE, as a shell reports a process a pipe stopped
