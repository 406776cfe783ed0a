"""The ``rules`` engine: deterministic keyword/regex routing.

Routes the latest user message to every agent whose ``rules`` match it:

- a keyword matches as a whole word or phrase (case-insensitive; "book" does not match "booking";
  the words of a multi-word keyword may be separated by any whitespace);
- a pattern is a regular expression searched with ``re.IGNORECASE``.

Routes are ordered by where each agent first matches in the message, ties by catalog order, so
"book a table and then text Anna" goes to the restaurant agent before the messaging agent. An
agent without rules never matches.

When nothing matches:

1. a closing turn ("Thanks!", "ok thank you, bye") gets no route;
2. otherwise, with ``follow_up`` on, a short referential turn - at most ``FOLLOW_UP_MAX_WORDS``
   words that continue the previous request ("and tomorrow?", "ok, what about Rome?", "in Oslo?":
   a leading "and/or/also/but/then/what about/how about/same", or a question) - reuses the
   routes of the most recent earlier user message that matched. Anything else ("thanks, that's
   all", "hi") gets no route: reusing routes re-runs their agents, and an agent with side effects
   (booking, texting) would repeat them;
3. otherwise no route.

Regexes are compiled once per agent tuple. Pinning routes with rules is a real feature, and this
is also the fast engine for tests and pipeline benchmarks.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from functools import lru_cache

import msgspec
from routeyard.router.catalog import AgentSpec
from routeyard.router.engines.base import EngineBase, EngineResult, RoutingRequest
from routeyard.schemas import Message

DEFAULT_STOP_PATTERNS: tuple[str, ...] = (
    r"(?:many )?thank(?:s| you)(?: (?:so|very) much| a lot| again)?",
    r"thx",
    r"cheers",
    r"(?:good ?)?bye",
    r"see (?:you|ya)(?: later| soon)?",
    r"ok(?:ay)?",
    r"great",
    r"cool",
    r"perfect",
    r"got it",
    r"(?:that'?s|that is|that will be|that'll be) (?:all|it|everything)(?: for now| for today)?",
    r"nothing (?:else|more)",
    r"all (?:good|set|done)",
    r"no,? thanks?(?: you)?",
    r"never ?mind",
)
"""Closing phrases. A turn is a stop turn when it consists only of such phrases, punctuation,
whitespace and "and" (so "Thanks!" and "ok thank you, bye" are; "thanks, and the weather?" is not).
Greetings are deliberately absent: "hi" usually comes before a question."""

NO_USER_MESSAGE = "no user message to route"

FOLLOW_UP_MAX_WORDS = 6
_FILLER = r"(?:(?:ok(?:ay)?|thanks?|thank you|great|cool|perfect|sure|yes|yeah|hmm|right)\b[\W_]*)*"
_REFERENTIAL = re.compile(
    rf"^\W*{_FILLER}(?:(?:and|or|also|but|then|plus|same)\b|(?:what|how) about\b|.*\?\W*$)",
    re.IGNORECASE | re.DOTALL,
)
"""A turn that continues the previous request: after optional acknowledgements, it starts with a
connective ("and tomorrow", "ok, what about Rome") or it is a question ("in Oslo?")."""

_SEPARATOR = r"(?:[\W_]|\band\b)*"


class _AgentMatcher(msgspec.Struct, frozen=True):
    name: str
    regexes: tuple[re.Pattern[str], ...]
    rules: tuple[str, ...] = ()
    """Each regex's rule as the catalog wrote it (``keyword 'weather'``, ``pattern '\\brain\\b'``)."""

    def first_match(self, text: str) -> int | None:
        """Where this agent's rules first match ``text``, or None."""
        hit = self.first_rule(text)
        return hit[0] if hit else None

    def first_rule(self, text: str) -> tuple[int, str] | None:
        """Where this agent's rules first match ``text`` and which rule matched there, or None."""
        hits = [(m.start(), i) for i, m in enumerate(r.search(text) for r in self.regexes) if m is not None]
        if not hits:
            return None
        start, i = min(hits)
        return start, self.rules[i] if i < len(self.rules) else "a rule"


class RulesEngine(EngineBase):
    """Deterministic keyword/regex routing over each agent's ``rules``."""

    name = "rules"

    def __init__(self, *, stop_patterns: Sequence[str] | None = None, follow_up: bool = True) -> None:
        patterns = DEFAULT_STOP_PATTERNS if stop_patterns is None else tuple(stop_patterns)
        self._stop = compile_stop(patterns)
        self._follow_up = follow_up

    async def decide(self, requests: Sequence[RoutingRequest]) -> list[EngineResult]:
        return [self.route(request) for request in requests]

    def route(self, request: RoutingRequest) -> EngineResult:
        """Decide one request (pure, synchronous)."""
        texts = _user_texts(request.conversation)
        if not texts:
            return EngineResult(error=NO_USER_MESSAGE)
        matchers = compile_agents(request.agents)
        routes = match(matchers, texts[-1])
        if routes:
            return _result(routes, _matched(matchers, texts[-1]))
        if self._follow_up and self._continues(texts[-1]):
            back, routes = _earlier_routes(matchers, texts[:-1])
            if routes:
                which = "the previous user message" if back == 1 else f"the user message {back} back"
                why = f"no rule matched; a short follow-up: the routes of {which}"
                return _result(routes, f"{why} ({_matched(matchers, texts[-1 - back])})")
        return _result([], "no rule matched" + ("; a closing turn" if self._is_stop(texts[-1]) else ""))

    def _is_stop(self, text: str) -> bool:
        return self._stop is not None and self._stop.fullmatch(text.strip()) is not None

    def _continues(self, text: str) -> bool:
        """A short referential turn that is not a closing (see the module's docstring)."""
        if len(text.split()) > FOLLOW_UP_MAX_WORDS or self._is_stop(text):
            return False
        return _REFERENTIAL.match(text) is not None


def compile_stop(patterns: Sequence[str]) -> re.Pattern[str] | None:
    """One regex matching a message made only of closing phrases (None: no stop patterns)."""
    if not patterns:
        return None
    phrases = "|".join(f"(?:{p})" for p in patterns)
    return re.compile(rf"{_SEPARATOR}(?:\b(?:{phrases})\b{_SEPARATOR})+", re.IGNORECASE)


@lru_cache(maxsize=64)
def compile_agents(agents: tuple[AgentSpec, ...]) -> tuple[_AgentMatcher, ...]:
    """Each agent's keywords and patterns compiled once (agents without rules are left out)."""
    matchers = (_AgentMatcher(a.name, _agent_regexes(a), _agent_rules(a)) for a in agents)
    return tuple(m for m in matchers if m.regexes)


def keyword_regex(keyword: str) -> re.Pattern[str]:
    """A keyword or phrase as a whole-word, case-insensitive regex."""
    words = (re.escape(word) for word in keyword.split())
    return re.compile(r"(?<!\w)" + r"\s+".join(words) + r"(?!\w)", re.IGNORECASE)


def match(matchers: Sequence[_AgentMatcher], text: str) -> list[str]:
    """Names of the agents matching ``text``, by position of first match, then catalog order."""
    hits = [(pos, i, m.name) for i, m in enumerate(matchers) if (pos := m.first_match(text)) is not None]
    return [name for _, _, name in sorted(hits)]


def _agent_regexes(agent: AgentSpec) -> tuple[re.Pattern[str], ...]:
    keywords = [keyword_regex(k) for k in agent.rules.keywords if k.strip()]
    patterns = [re.compile(p, re.IGNORECASE) for p in agent.rules.patterns]
    return (*keywords, *patterns)


def _agent_rules(agent: AgentSpec) -> tuple[str, ...]:
    """The rules of ``_agent_regexes``, in the same order, as the catalog wrote them."""
    keywords = [f"keyword '{k}'" for k in agent.rules.keywords if k.strip()]
    return (*keywords, *(f"pattern '{p}'" for p in agent.rules.patterns))


def _matched(matchers: Sequence[_AgentMatcher], text: str) -> str:
    """``WeatherAgent: keyword 'weather'; MessagingAgent: pattern '\\btext\\b'`` (rules, never the text)."""
    hits = [(hit[0], i, f"{m.name}: {hit[1]}") for i, m in enumerate(matchers) if (hit := m.first_rule(text))]
    return "; ".join(rule for _, _, rule in sorted(hits))


def _user_texts(conversation: Sequence[Message]) -> list[str]:
    return [m.content for m in conversation if m.role == "user"]


def _earlier_routes(matchers: Sequence[_AgentMatcher], earlier: Sequence[str]) -> tuple[int, list[str]]:
    """The routes of the most recent earlier message that matched, and how many messages back it is."""
    for back, text in enumerate(reversed(earlier), 1):
        routes = match(matchers, text)
        if routes:
            return back, routes
    return 0, []


def _result(routes: list[str], reason: str) -> EngineResult:
    return EngineResult(
        routes=routes,
        raw_output=json.dumps({"route": routes}),
        scores=dict.fromkeys(routes, 1.0),
        reason=reason,
    )
