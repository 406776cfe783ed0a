"""Dialogue state for every engine: a turn that answers an agent's question goes back to that agent.

When the assistant message just before the routed user turn came from agent X (``Message.name``,
which the correlator keeps when it appends replies to the context) and X asked the user something
(its reply was marked ``awaiting_input``, or it ends with a question), a turn that reads as an answer
("(220) 234-2345", "yes", "tomorrow at 7") goes to X alone, whatever the engine chose, unless the
turn clearly asks for something else:

- it is long, or holds an explicit request ("can you", "I need", "book", ...), or is a closing
  ("no, that's all", "bye"): the engine's choice stands;
- the engine chose other agents (not X) with a confidence of at least ``override``: the engine's
  choice stands. (A rules-engine match reports no confidence: a keyword or pattern in an answer,
  such as a phone-number pattern, is not a new request; explicit requests are caught above.)

Plain functions over typed values; the router worker and ``routeyard eval`` call ``continue_turn``
after the engine (and the no-route policy), before circuit breakers move routes.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import msgspec
from routeyard.router.engines.base import EngineResult, RoutingRequest
from routeyard.router.plan import Routing
from routeyard.schemas import Message

MAX_ANSWER_WORDS = 12
"""A longer turn is a request of its own, not an answer."""
DEFAULT_OVERRIDE = 0.9
"""The engine's certainty for another agent at or above which an answer-like turn still follows it."""

_REQUEST = re.compile(
    r"\b(?:can|could|would|will) you\b|\bi(?:'d| would)? (?:like|want|need)\b|\blooking for\b|\bi'm trying\b"
    r"|\bi (?:have|need) to\b|\b(?:book|find|search|look up|look for|show me|tell me|reserve|order|play|send|text"
    r"|call|check|get me|buy)\b|\bhelp me\b|\bwhat about\b|\bhow (?:do|can) i\b"
    r"|\bwhat(?:'s| is) the (?:weather|forecast)\b",
    re.IGNORECASE,
)
_CLOSING = re.compile(
    r"^\W*(?:no|nope|nah|nothing|not (?:right )?now|not at (?:this|the) (?:moment|time))\b"
    r"|^\W*i (?:do not|don'?t)\W*$"
    r"|\b(?:that ?'?s (?:all|it)|that is (?:all|it)|nothing else|all i needed|i'?m good|bye|goodbye|good bye)\b"
    r"|\b(?:thanks|thank you|cheers)\b",
    re.IGNORECASE,
)
_OPEN = re.compile(
    r"\b(?:anything|something|what) ?else\b|\bany ?(?:thing )?(?:other|more)\b|\b(?:some|any) more\b"
    r"|\belse (?:can|could|may|might) i\b|\bhow (?:else )?(?:can|may) i help\b|\banyway else\b|\bfurther\b"
    r"|\bof (?:service|help)\b",
    re.IGNORECASE,
)
"""An open question ("anything else?") invites a new request, not an answer: the engine decides."""
_TRAILING = " \t\n\"')]*_~"


def asker(conversation: Sequence[Message]) -> str | None:
    """The agent whose message just before the last user turn asked the user something, if any."""
    users = [i for i, m in enumerate(conversation) if m.role == "user" and m.content.strip()]
    if not users or users[-1] == 0:
        return None
    before = [m for m in conversation[: users[-1]] if m.role != "system"]
    last = before[-1] if before else None
    if last is None or last.role != "assistant" or not last.name:
        return None
    return last.name if last.awaiting_input or asks(last.content) else None


def asks(text: str) -> bool:
    """The message ends with a question that wants an answer, not an open "anything else?"."""
    text = text.rstrip(_TRAILING)
    if not text.endswith("?"):
        return False
    question = re.split(r"(?<=[.!?])\s+", text)[-1]
    return not _OPEN.search(question)


def answers(text: str) -> bool:
    """The turn reads as an answer: short, no request of its own, not a closing."""
    words = text.split()
    return 0 < len(words) <= MAX_ANSWER_WORDS and not _REQUEST.search(text) and not _CLOSING.search(text)


def continue_turn(
    routing: Routing,
    result: EngineResult,
    request: RoutingRequest,
    *,
    override: float = DEFAULT_OVERRIDE,
) -> Routing:
    """``routing`` sent back to the agent that asked, where the turn answers it (``continuation`` set)."""
    agent = asker(request.conversation)
    if agent is None or agent not in {a.name for a in request.agents}:
        return routing
    turn = next(m.content for m in reversed(request.conversation) if m.role == "user" and m.content.strip())
    if not answers(turn) or _elsewhere(result, agent, override):
        return routing
    note = f"continuation: the turn answers {agent}'s question"
    reason = f"{routing.fallback_reason}; {note}" if routing.fallback_reason else None
    return msgspec.structs.replace(
        routing, routes=[agent], default_used=False, abstained=False, fallback_reason=reason, continuation=agent
    )


def _elsewhere(result: EngineResult, agent: str, override: float) -> bool:
    """The engine chose other agents than ``agent``, with a confidence of at least ``override``."""
    if result.failed or not result.routes or agent in result.routes or result.confidence is None:
        return False
    return result.confidence >= override
