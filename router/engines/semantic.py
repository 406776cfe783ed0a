"""The ``semantic`` engine: routing by sentence-embedding similarity, on CPU, offline.

An agent is a set of prototypes: its description, the description's sentences and the items of a
"Can: a; b" / "Handles: a, b" list (phrased as requests: "help me with a"), and its catalog
examples. Its similarity to a text is the best cosine similarity over its prototypes. A turn is
decided from its similarities by ``score_turn``, a pure function:

1. context, per agent: the best similarity of the last ``context_turns`` earlier user messages,
   mixed with the end of the assistant message the user answers where ``assistant_weight`` > 0
   (off by default: the rules below read that message's text instead);
2. scores: the last message's similarities mixed with the context, the more so the weaker the
   message (``weak_context_weight`` below ``weak_similarity``, ``context_weight`` from
   ``strong_similarity``): "and tomorrow?" goes where the conversation was; after an assistant
   message that closed its agent's task ("anything else?"), the context counts ``closed_context``
   as much: the next message usually starts a new request;
3. no route when the message is a closing ("thanks, that's all"; a small-talk phrase counts
   ``small_talk_in_context`` as much mid-conversation) at least ``closing_similarity`` and
   ``closing_margin`` closer than to any agent, or when best score - ``negative_weight`` x that
   closeness is below ``min_similarity`` (weak, off-topic or chit-chat turns);
4. otherwise the best agent, agents within ``extra_margin`` of it, and each intent's best agent
   when it reaches ``clause_min_similarity``, ``clause_margin`` ahead of the intent's next agent
   (``semantic_intents.split_intents``: sentences, ";", ",", "and", "then", "also", "if so"):
   "book the table and text Anna the address" goes to two agents, in the order the message names them;
5. a switch (``semantic_intents.find_switch``): when the message's own best agent is
   ``switch_min_similarity`` close and ``switch_margin`` ahead of the previous agent (the one that
   wrote the last assistant message, else the context's best), it replaces the previous agent;
   with ``handover``, the previous agent keeps the turn too when the message opens with a reply
   to its still open task ("No, not now. Find me a flight" after "Shall I book the hotel?"), unless
   that reply's first sentence thanks it (``reply_thanks``: "Great, thanks. Now a taxi");
6. no switch: while the previous agent's task is open, a turn that went to one other agent
   returns to the previous agent when the message itself is less than ``stay_margin`` closer to
   the other one ("What is the entrance fee?" stays with the agent that just suggested a museum).

``scores`` in each result are the per-agent scores of step 2. Each prototype text is encoded once
(a catalog's matrix is assembled once per ``agents`` tuple) and recent conversation texts are
kept, so an earlier turn is not encoded again. ``routeyard.router.evaluation.tuning`` fits the thresholds.
"""

from __future__ import annotations

import asyncio
import threading
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any, NamedTuple

from routeyard.router.catalog import AgentSpec
from routeyard.router.engines.base import EngineBase, EngineResult, RoutingRequest
from routeyard.router.engines.embedding import Encoder, OnnxMiniLM, VectorCache
from routeyard.router.engines.semantic_index import AgentIndex, agent_prototypes
from routeyard.router.engines.semantic_intents import Handover, find_switch, handover, split_intents
from routeyard.router.engines.semantic_reason import ClauseCheck, Why, reason
from routeyard.router.plano.parse import answer_json
from routeyard.router.settings import CLOSINGS, SMALL_TALK, SemanticSettings
from routeyard.schemas import Message

__all__ = ["CLOSINGS", "SMALL_TALK", "SemanticEngine", "SemanticSettings", "TurnScores", "TurnTexts", "score_turn"]

NO_USER_MESSAGE = "no user message to route"


class TurnTexts(NamedTuple):
    """The texts a turn is decided from: the last user message, its clauses (none when it has one),
    earlier user messages (most recent first) and the end of the assistant message before it."""

    last: str
    clauses: tuple[str, ...]
    earlier: tuple[str, ...]
    assistant: str | None
    handover: Handover | None = None

    def all(self) -> list[str]:
        return [self.last, *self.clauses, *self.earlier, *([self.assistant] if self.assistant else [])]


class TurnScores(NamedTuple):
    """A turn's similarities, all ``score_turn`` needs: per agent, of the last message (agents,),
    its clauses (clauses, agents), earlier user messages (earlier, agents) and the assistant message
    (agents,) or None; the last message's closeness to closings and to small talk; each clause's
    closeness to either (clauses,)."""

    last: Any
    clauses: Any
    earlier: Any
    assistant: Any | None
    closing: float
    small_talk: float
    clause_negative: Any
    previous: int | None = None
    """The agent that wrote the last assistant message, where the conversation says (else inferred)."""
    reply: bool = False
    """The message opens with a reply to the assistant's last message."""
    closed: bool = True
    """The assistant's last message closed its task (or there is none)."""
    thanked: bool = False
    """The message's opening sentence thanks the assistant for an answer that is done."""


class Verdict(NamedTuple):
    routes: list[int]
    """Agent indices: in the order the message's clauses name them, then best first."""
    scores: Any
    """Per-agent scores after context mixing."""
    why: Why | None = None
    """What decided, in the settings' terms (rendered by ``semantic_reason.reason``)."""


def turn_texts(conversation: Sequence[Message], s: SemanticSettings) -> TurnTexts | None:
    """The last user message, its clauses, earlier user messages and the assistant message before it."""
    users = [i for i, m in enumerate(conversation) if m.role == "user" and m.content.strip()]
    if not users:
        return None
    earlier = tuple(conversation[i].content for i in reversed(users[:-1]))[: s.context_turns]
    before = [m.content for m in conversation[: users[-1]] if m.role == "assistant" and m.content.strip()]
    assistant = " ".join(before[-1].split()[-s.assistant_words :]) if before and s.assistant_weight > 0 else None
    text = conversation[users[-1]].content
    relation = handover(conversation, users[-1], s.reply_openers, s.task_closers, s.reply_thanks)
    return TurnTexts(text, split_intents(text), earlier, assistant, relation)


def score_turn(turn: TurnScores, s: SemanticSettings) -> Verdict:
    """Routes and per-agent scores from a turn's similarities (pure: no model involved)."""
    import numpy as np

    context = _context(turn, s)
    scores = _mix(turn, context, s)
    order = np.argsort(-scores, kind="stable")
    best, top = int(order[0]), float(scores[order[0]])
    small_talk = turn.small_talk * (1.0 if context is None else s.small_talk_in_context)
    negative = max(turn.closing, small_talk)
    closing = negative >= s.closing_similarity and negative - float(turn.last.max()) >= s.closing_margin
    why = Why(
        best=best,
        top=top,
        runner_up=int(order[1]) if len(order) > 1 else None,
        second=float(scores[order[1]]) if len(order) > 1 else 0.0,
        negative=negative,
        negative_kind="closing" if turn.closing >= small_talk else "small talk",
        last_max=float(turn.last.max()),
        closing=closing,
    )
    if closing or top - s.negative_weight * negative < s.min_similarity:
        return Verdict([], scores, why)
    chosen = {best} | {int(i) for i in np.flatnonzero(scores >= top - s.extra_margin)}
    named = [int(np.argmax(row)) for row in turn.clauses]  # each clause's agent, in message order
    checks = [
        _clause(agent, row, closeness, s)
        for agent, row, closeness in zip(named, turn.clauses, turn.clause_negative, strict=True)
    ]
    chosen |= {c.agent for c in checks if c.added}
    switch = find_switch(turn.last, turn.previous, context, s)
    if switch is not None:
        previous, own = switch
        chosen = (chosen - {previous}) | {own}
        if s.handover and turn.reply and not turn.closed and not turn.thanked:
            chosen.add(previous)
    stayed = switch is None and _stays(turn, chosen, s)
    if stayed and turn.previous is not None:
        chosen = {turn.previous}
    ranked = sorted(chosen, key=lambda i: -float(scores[i]))
    kept = ranked[: s.max_routes]
    routes = sorted(kept, key=lambda i: named.index(i) if i in named else len(named))
    extras = tuple(i for i in ranked if i != best and scores[i] >= top - s.extra_margin)
    handed = switch is not None and switch[0] in chosen
    why = why._replace(
        extras=extras,
        clauses=tuple(checks),
        capped=tuple(ranked[s.max_routes :]),
        switch=switch,
        handover=handed,
        stayed=turn.previous if stayed else None,
    )
    return Verdict(routes, scores, why)


def _stays(turn: TurnScores, chosen: set[int], s: SemanticSettings) -> bool:
    """Whether the previous agent keeps a turn that went to one other agent: its task is still open
    and the message itself is hardly closer to the chosen agent (less than ``stay_margin``). A user
    in the middle of a task who does not clearly turn to another agent is still talking to this one;
    the conversation's context, which mixes earlier requests, must not pull the turn away."""
    previous = turn.previous
    if s.stay_margin <= 0 or previous is None or turn.closed or len(chosen) != 1 or previous in chosen:
        return False
    (agent,) = chosen
    return float(turn.last[agent] - turn.last[previous]) < s.stay_margin


def _clause(agent: int, row: Any, negative: float, s: SemanticSettings) -> ClauseCheck:
    """Whether a clause adds its best agent: close enough, ahead enough, closer than to a closing."""
    import numpy as np

    runner_up = int(np.argsort(-row, kind="stable")[1]) if len(row) > 1 else None
    first, second = float(row[agent]), float(row[runner_up]) if runner_up is not None else 0.0
    added = first >= s.clause_min_similarity and first - second >= s.clause_margin and first > negative
    return ClauseCheck(agent, first, runner_up, first - second, negative, added)


def _context(turn: TurnScores, s: SemanticSettings) -> Any | None:
    """Per-agent similarity of the conversation before the last message (None: no conversation)."""
    import numpy as np

    parts: list[tuple[float, Any]] = []
    earlier = turn.earlier[: s.context_turns]
    if len(earlier):
        decay = s.context_decay ** np.arange(len(earlier))
        parts.append((1.0 - s.assistant_weight, (decay[:, None] * earlier).max(axis=0)))
    if turn.assistant is not None and s.assistant_weight > 0:
        parts.append((s.assistant_weight, turn.assistant))
    total = sum(w for w, _ in parts)
    return sum(w * p for w, p in parts) / total if total > 0 else None


def _mix(turn: TurnScores, context: Any | None, s: SemanticSettings) -> Any:
    if context is None:
        return turn.last
    span = max(s.strong_similarity - s.weak_similarity, 1e-6)
    strength = min(max((float(turn.last.max()) - s.weak_similarity) / span, 0.0), 1.0)
    w = s.weak_context_weight + strength * (s.context_weight - s.weak_context_weight)
    if turn.closed and turn.previous is not None:
        w *= s.closed_context
    return (1.0 - w) * turn.last + w * context


def _turn_scores(turn: TurnTexts, vectors: dict[str, Any], index: AgentIndex, negatives: tuple[Any, Any]) -> TurnScores:
    import numpy as np

    rows = np.stack([vectors[key] for key in turn.all()])
    sims = index.similarities(rows)
    c, e = 1 + len(turn.clauses), 1 + len(turn.clauses) + len(turn.earlier)
    closing, small_talk = ((rows[:c] @ group.T).max(axis=1) for group in negatives)
    assistant = sims[e] if turn.assistant else None
    clause_negative = np.maximum(closing[1:], small_talk[1:])
    relation = turn.handover or Handover(None, False, True)
    previous = index.names.index(relation.previous) if relation.previous in index.names else None
    return TurnScores(
        sims[0],
        sims[1:c],
        sims[c:e],
        assistant,
        float(closing[0]),
        float(small_talk[0]),
        clause_negative,
        previous,
        relation.reply,
        relation.closed,
        relation.thanked,
    )


class SemanticEngine(EngineBase):
    """Routing by embedding similarity (see the module docstring)."""

    name = "semantic"

    def __init__(self, settings: SemanticSettings | None = None, *, encoder: Encoder | None = None) -> None:
        self.settings = settings or SemanticSettings()
        self._encoder = encoder
        self._caches: tuple[VectorCache, VectorCache] | None = None
        self._indexes: OrderedDict[tuple[AgentSpec, ...], AgentIndex] = OrderedDict()
        self._lock = threading.Lock()

    async def __aenter__(self) -> SemanticEngine:
        await asyncio.to_thread(self.encoder)  # load (or export) the model before the first turn
        return self

    async def decide(self, requests: Sequence[RoutingRequest]) -> list[EngineResult]:
        return await asyncio.to_thread(self.route, requests)

    def encoder(self) -> Encoder:
        if self._encoder is None:
            s = self.settings
            self._encoder = OnnxMiniLM(
                s.model, cache_dir=s.cache_dir, threads=s.threads, batch_size=s.batch_size, quantize=s.quantize
            )
        return self._encoder

    def route(self, requests: Sequence[RoutingRequest]) -> list[EngineResult]:
        """Decide a batch (synchronous): one encoder call for all new texts of the batch."""
        with self._lock:
            turns = self.prepare(requests)
            return [self._result(r, t) for r, t in zip(requests, turns, strict=True)]

    def prepare(self, requests: Sequence[RoutingRequest]) -> list[TurnScores | None]:
        """Each request's similarities (None: no user message, or no agents), for ``score_turn``."""
        texts = [turn_texts(r.conversation, self.settings) if r.agents else None for r in requests]
        vectors = self._cache()[0].get([key for t in texts if t for key in t.all()])
        negatives = self._negatives()
        return [
            _turn_scores(turn, vectors, self.index(request.agents), negatives) if turn else None
            for request, turn in zip(requests, texts, strict=True)
        ]

    def index(self, agents: tuple[AgentSpec, ...]) -> AgentIndex:
        """The catalog's prototype vectors (each prototype text is encoded once, ever)."""
        import numpy as np

        index = self._indexes.get(agents)
        if index is None:
            prototypes = [agent_prototypes(a, self.settings) for a in agents]
            texts = [p for group in prototypes for p in group]
            vectors = self._cache()[1].get(texts)
            starts = np.cumsum([0] + [len(p) for p in prototypes[:-1]])
            index = AgentIndex(tuple(a.name for a in agents), np.stack([vectors[t] for t in texts]), starts)
            self._indexes[agents] = index
            while len(self._indexes) > 64:
                self._indexes.popitem(last=False)
        return index

    def _cache(self) -> tuple[VectorCache, VectorCache]:
        """(conversation texts, prototypes)"""
        if self._caches is None:
            encoder = self.encoder()
            self._caches = (VectorCache(encoder, self.settings.text_cache), VectorCache(encoder, 1 << 16))
        return self._caches

    def _negatives(self) -> tuple[Any, Any]:
        """Closing and small-talk prototype vectors (rows)."""
        import numpy as np

        cache = self._cache()[1]
        closings, small_talk = (cache.get(g) for g in (self.settings.closings, self.settings.small_talk))
        return np.stack(list(closings.values())), np.stack(list(small_talk.values()))

    def _result(self, request: RoutingRequest, turn: TurnScores | None) -> EngineResult:
        if turn is None:
            return EngineResult(error=NO_USER_MESSAGE) if request.agents else EngineResult(raw_output=answer_json([]))
        verdict = score_turn(turn, self.settings)
        names = [a.name for a in request.agents]
        routes = [names[i] for i in verdict.routes]
        scores = {name: round(float(x), 4) for name, x in zip(names, verdict.scores, strict=True)}
        confidence = min(max(scores[routes[0]], 0.0), 1.0) if routes else None
        model = getattr(self._encoder, "name", None)
        why = reason(verdict.why, names, self.settings) if verdict.why else None
        return EngineResult(
            routes=routes, raw_output=answer_json(routes), confidence=confidence, scores=scores, model=model, reason=why
        )
