"""How the semantic engine reads a turn's text: its intents, and how it relates to the turn before.

- ``split_intents``: a message's intents. It splits on sentence ends, ";", commas, "and", "then",
  "also", "plus" and conditionals ("if so", "if not", "otherwise", "in that case"), and drops the
  connective that opens a part: "Will it rain in Rome tomorrow? If so, text Anna to bring an
  umbrella" has two intents, "Will it rain in Rome tomorrow" and "text Anna to bring an umbrella".
  Parts of fewer than two words ("Yes", "Thanks") name no agent and are dropped.
- ``Handover``: what the text says about the conversation's previous agent: the agent that wrote the
  last assistant message (``Message.name``, where the pipeline recorded it), whether the user's
  message opens with a reply to that message ("ok", "thanks", "no, not now": a reply phrase of
  ``SemanticSettings.reply_openers``), whether that message closed the agent's task ("anything
  else?", "your table is booked": ``task_closers``), whether the reply's first sentence thanks it
  (``reply_thanks``: the answer it thanks for is done, so the reply hands nothing back).

Pure functions over strings; the thresholds that use them are in ``semantic.score_turn``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from functools import lru_cache
from typing import Any, NamedTuple

from routeyard.router.settings import SemanticSettings
from routeyard.schemas import Message

__all__ = ["Handover", "find_switch", "handover", "split_intents"]

_CONDITIONAL = (
    r"if\s+(?:so|not|yes|it\s+(?:is|does|will|isn't|doesn't|won't)|that's\s+the\s+case)|otherwise|in\s+that\s+case"
)
_CONNECTIVE = rf"and\s+then|and\s+also|and|then|also|plus|as\s+well\s+as|{_CONDITIONAL}"
_INTENT = re.compile(
    rf"[.!?;]+(?:\s+|$)|,\s*|\s+-\s+|\s+(?:{_CONNECTIVE})\s*,?\s+|^\s*(?:{_CONDITIONAL})\s*,?\s+", re.IGNORECASE
)
_LEADING = re.compile(rf"^(?:(?:{_CONNECTIVE}|but|so|please|now)\b[\s,]*)+", re.IGNORECASE)
_WORD = re.compile(r"\w+")
_SENTENCE = re.compile(r"[.!?;]+(?:\s+|$)")


class Handover(NamedTuple):
    """How the last user message relates to the conversation's previous agent."""

    previous: str | None
    """The agent that wrote the last assistant message, where the conversation records it."""
    reply: bool
    """The message opens with a reply to the assistant ("ok", "thanks", "no, not now")."""
    closed: bool
    """The assistant's message closed its task ("anything else?", "your table is booked"), or there is none."""
    thanked: bool = False
    """The message's opening sentence thanks the assistant ("Great, thanks. ..."): the answer it got is done."""


def split_intents(text: str) -> tuple[str, ...]:
    """The intents of a message (of two words or more), or () when it has fewer than two."""
    parts = (_LEADING.sub("", p.strip()) for p in _INTENT.split(text) if p)
    intents = tuple(p for p in parts if len(_WORD.findall(p)) >= 2)
    return intents if len(intents) > 1 else ()


def handover(
    conversation: Sequence[Message],
    last: int,
    openers: tuple[str, ...],
    closers: tuple[str, ...],
    thanks: tuple[str, ...] = (),
) -> Handover:
    """``Handover`` for the user message at index ``last`` of ``conversation``."""
    text = conversation[last].content
    before = next((m for m in reversed(conversation[:last]) if m.role == "assistant" and m.content.strip()), None)
    closed = before is None or bool(_phrases(closers).search(before.content))
    reply = bool(_opening(openers).match(text))
    thanked = reply and bool(_phrases(thanks).search(_SENTENCE.split(text.strip(), maxsplit=1)[0]))
    return Handover(before.name if before else None, reply, closed, thanked)


def find_switch(last: Any, previous: int | None, context: Any | None, s: SemanticSettings) -> tuple[int, int] | None:
    """(previous agent, the message's own agent) when the message turns away from the previous
    agent: its own best agent (similarities ``last``, per agent) is at least ``switch_min_similarity``
    and ``switch_margin`` closer to it than the previous one is. The previous agent is the recorded
    one, else the best of the conversation's ``context`` (per agent; None: no conversation)."""
    import numpy as np

    if previous is None and context is not None:
        previous = int(np.argmax(context))
    if previous is None:
        return None
    own = int(np.argmax(last))
    strong = float(last[own]) >= s.switch_min_similarity
    ahead = float(last[own] - last[previous]) >= s.switch_margin
    return (previous, own) if own != previous and strong and ahead else None


@lru_cache(maxsize=16)
def _opening(phrases: tuple[str, ...]) -> re.Pattern[str]:
    """Matches a text that opens with one of ``phrases`` as whole words."""
    return re.compile(rf"^\W*(?:{_alternatives(phrases)})\b", re.IGNORECASE)


@lru_cache(maxsize=16)
def _phrases(phrases: tuple[str, ...]) -> re.Pattern[str]:
    """Matches a text that contains one of ``phrases`` as whole words."""
    return re.compile(rf"\b(?:{_alternatives(phrases)})\b", re.IGNORECASE)


def _alternatives(phrases: tuple[str, ...]) -> str:
    words = (r"\s+".join(re.escape(w) for w in p.split()) for p in phrases if p.strip())
    return "|".join(words) or r"(?!)"
