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
    |-- CannotReach                 a command's start-up check: a server it needs is not there   exit 1
    |-- BadReply                    an agent handler's reply is not text, or over agent.max_reply_bytes
    '-- UsageError                  the command line, or a file it names, is wrong               exit 2
        |-- SettingsFileError       --env-file names no file
        |-- SettingsError           ROUTEYARD_* settings a command uses are malformed (one line each)
        |-- ReplayError             bad replay options (selection, dispatch prefix)
        |-- LabelsError             a malformed replay labels file
        |-- DlqError                bad dlq options (unknown id, malformed range, foreign topic)
        '-- TopicSettingsError      a replication setting the Kafka cluster cannot meet

The router layer's part of the tree is defined in ``routeyard.router.errors`` (the router layer
never imports this one) and re-exported here. ``routeyard.consumers.retry.classify`` maps any
exception to what a worker does (retry, dead-letter, exit); ``routeyard.consumers.cli.exits`` maps
it to the ``routeyard`` command's exit status (the column on the right).

"""

from __future__ import annotations

from routeyard.router.errors import (
    CatalogError,
    DatasetError,
    DependencyUnavailable,
    EncoderUnavailable,
    EngineDead,
    InvalidEvent,
    RouteyardError,
    VllmEngineDead,
)

__all__ = [
    "BadReply",
    "CannotReach",
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
    "SettingsError",
    "SettingsFileError",
    "ShutdownTimeout",
    "TopicSettingsError",
    "TurnRejected",
    "TurnTimeout",
    "UsageError",
    "VllmEngineDead",
]


class UsageError(RouteyardError, ValueError):
    """The command line, or a file it names, is wrong. Not retriable: the command exits 2."""


class SettingsFileError(UsageError):
    """--env-file names no file."""


class SettingsError(UsageError):
    """ROUTEYARD_* settings (variables, --env-file, secrets directory) that a command uses are
    malformed. ``problems``: one line each, naming the variable, its value and the form expected.
    Not retriable: fix the settings."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


class ReplayError(UsageError):
    """Bad replay options: a negative or inverted selection, a refused dispatch prefix. Not retriable."""


class LabelsError(UsageError):
    """The labels file is missing, unreadable or malformed. Not retriable: fix the file."""


class DlqError(UsageError):
    """Bad dlq options: an unknown id, a malformed range, a foreign source topic. Not retriable."""


class TopicSettingsError(UsageError):
    """A replication factor or ``min.insync.replicas`` the cluster cannot meet (more than its
    brokers). Not retriable: fix ``ROUTEYARD_KAFKA__*``; the command exits 2."""


class ShutdownTimeout(RouteyardError):
    """In-flight work did not finish within ``lifecycle.shutdown_timeout_s`` of the stop signal.
    It was cancelled uncommitted (so it is redelivered); the process exits non-zero."""

    fatal = True


class EmbeddedServerError(RouteyardError, RuntimeError):
    """An embedded server is unavailable or failed to start. Not retriable."""

    fatal = True


class PlotsUnavailable(RouteyardError, RuntimeError):
    """matplotlib is not installed. Not retriable: ``pip install matplotlib``."""


class TurnRejected(RouteyardError):
    """The router refused the turn (it was dead-lettered); ``reason`` says why."""

    def __init__(self, event_id: str, reason: str) -> None:
        super().__init__(f"turn {event_id} rejected: {reason}")
        self.event_id = event_id
        self.reason = reason


class TurnTimeout(RouteyardError, TimeoutError):
    """No response in time. ``event_ids``: the turns still unanswered (see ``routeyard explain``)."""

    def __init__(self, event_ids: list[str], timeout: float) -> None:
        first = event_ids[0] if event_ids else "<event id>"
        turns = f" to {len(event_ids)} turns" if len(event_ids) > 1 else ""
        super().__init__(f"no response{turns} in {timeout:g} s; see: routeyard explain {first}")
        self.event_ids = event_ids


class CannotReach(RouteyardError):
    """A server the command needs did not answer its check at start (``routeyard agent``: Redis).
    ``command`` names the command, for its one-line message; exit 1."""

    def __init__(self, command: str, message: str) -> None:
        super().__init__(message)
        self.command = command


class BadReply(RouteyardError, ValueError):
    """An agent handler returned or yielded something the runtime cannot send: not text, or more than
    ``agent.max_reply_bytes`` in all. Not retriable: the task gets an error reply with this one line
    (it holds no secrets, so it is shown even without ``expose_errors``)."""
