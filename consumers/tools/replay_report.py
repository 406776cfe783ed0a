"""``routeyard replay``, part two: contexts, comparisons, scores and the report, over typed values
(no I/O but reading the labels file and writing ``--out``).

The context of a replayed turn is what the live router had in Redis: the conversation's earlier
turns in stream order (leaving out events it dead-lettered), each followed by the agents' ok
replies of its recorded response, cut to ``router.context_max_messages`` (forgotten after
``router.context_ttl_s`` of silence), then the turn's own messages.

Routes are the final ones (default agent applied) and are compared as ordered lists, since
sequential mode runs agents in that order. Change kinds, recorded -> candidate:

    same                identical routes               reordered   the same agents, another order
    added               every recorded agent and more  removed     some recorded agents dropped
    no_route_to_route   recorded none, candidate some  different   anything else
    route_to_no_route   recorded some, candidate none
    rejected            the candidate would dead-letter the event (e.g. it restricts the turn to
                        agents missing from the candidate catalog)
    unrecorded          no decision on the decisions topic for the event (not compared)
"""

from __future__ import annotations

import itertools
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

import msgspec
from routeyard.consumers.errors import LabelsError as LabelsError
from routeyard.consumers.kafka.bus import Record
from routeyard.router.engines.scoring import Report, compare_markdown, score
from routeyard.router.evaluation.evaluate import Case, Outcome
from routeyard.schemas import ConversationEvent, Message, RoutingDecision

ChangeKind = Literal[
    "same", "added", "removed", "no_route_to_route", "route_to_no_route", "reordered", "different", "rejected",
    "unrecorded",
]  # fmt: skip
CHANGE_LABELS = {
    "added": "added agent",
    "removed": "removed agent",
    "no_route_to_route": "no route -> route",
    "route_to_no_route": "route -> no route",
    "reordered": "same agents, other order",
    "different": "different agents",
    "rejected": "rejected by the candidate",
}
NAMES = ("recorded", "candidate")
TEXT_CHARS = 100


class TurnComparison(msgspec.Struct, frozen=True, kw_only=True):
    """One replayed turn: where it was, both decisions, and the context the candidate saw."""

    event_id: str
    conversation_id: str
    partition: int
    offset: int
    timestamp: datetime
    text: str
    """The turn's last user message, cut to ``TEXT_CHARS`` characters."""
    kind: ChangeKind
    recorded: RoutingDecision | None
    candidate: RoutingDecision | None
    """Made as the live router makes its decisions (None: the candidate rejects the event)."""
    rejected: str | None = None
    expected: list[str] | None = None
    """The label, when the labels file names the event."""
    context: list[Message] = []


class ReadStats(msgspec.Struct, frozen=True, kw_only=True):
    prefix: str
    read: int
    """Records on the conversations topic."""
    undecodable: int = 0
    duplicates: int = 0
    """Records repeating an event id seen before (replayed once)."""


class ReplaySummary(msgspec.Struct, frozen=True, kw_only=True):
    source: ReadStats
    candidate: str
    """The candidate's engine and catalog version."""
    selected: int
    compared: int
    """Selected turns with a recorded decision."""
    agreed: int
    agreement: float
    unrecorded: int
    changes: dict[str, int]
    """Change kind -> compared turns, ``same`` left out."""
    recorded: dict[str, int]
    """Recorded "engine, catalog version" -> compared turns."""
    labelled: int = 0
    dispatch_topic: str | None = None
    dispatched: int = 0


class ReplayReport(msgspec.Struct, frozen=True, kw_only=True):
    summary: ReplaySummary
    turns: list[TurnComparison]
    scores: dict[str, Report] | None = None
    """``{"recorded": ..., "candidate": ...}`` on the labelled turns with a recorded decision."""


def routes(decision: RoutingDecision | None) -> list[str] | None:
    return decision.routes if decision is not None else None


def change_kind(recorded: Sequence[str] | None, candidate: Sequence[str] | None) -> ChangeKind:
    if recorded is None or candidate is None:
        return "unrecorded" if recorded is None else "rejected"
    if list(recorded) == list(candidate):
        return "same"
    if not recorded or not candidate:
        return "no_route_to_route" if not recorded else "route_to_no_route"
    before, after = set(recorded), set(candidate)
    if before == after:
        return "reordered"
    if before < after:
        return "added"
    return "removed" if after < before else "different"


def _version(decision: RoutingDecision) -> str:
    return f"{decision.engine}, catalog {decision.catalog_version or '?'}"


def summarize(
    turns: Sequence[TurnComparison], source: ReadStats, *, candidate: str, dispatch: tuple[str | None, int]
) -> ReplaySummary:
    """The counts of ``turns``; ``dispatch`` is (shadow topic, events republished)."""
    compared = [t for t in turns if t.recorded is not None]
    agreed = sum(t.kind == "same" for t in compared)
    return ReplaySummary(
        source=source,
        candidate=candidate,
        selected=len(turns),
        compared=len(compared),
        agreed=agreed,
        agreement=agreed / len(compared) if compared else 0.0,
        unrecorded=len(turns) - len(compared),
        changes=dict(Counter(t.kind for t in compared if t.kind != "same").most_common()),
        recorded=dict(Counter(_version(t.recorded) for t in compared if t.recorded).most_common()),
        labelled=sum(t.expected is not None for t in turns),
        dispatch_topic=dispatch[0],
        dispatched=dispatch[1],
    )


# -- contexts and comparisons ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Entry:
    """A decoded event of the conversations topic, with its record."""

    event: ConversationEvent
    record: Record

    @property
    def timestamp(self) -> int:
        return int(self.record.timestamp)


def rebuild_contexts(
    entries: Sequence[Entry],
    wanted: set[str],
    replies: Mapping[str, list[Message]],
    kept: Callable[[Entry], bool],
    *,
    size: int,
    ttl_s: float,
) -> dict[str, list[Message]]:
    """Event id -> the conversation the router routed it with, for the ``wanted`` events.
    ``kept(entry)``: the router appended that event to the context (it did not dead-letter it)."""
    history: dict[tuple[str | None, str], tuple[int, list[Message]]] = {}
    contexts: dict[str, list[Message]] = {}
    for entry in entries:
        event = entry.event
        key = (event.tenant, event.conversation_id)
        last, before = history.get(key, (entry.timestamp, []))
        if entry.timestamp - last > ttl_s * 1000:  # Redis would have expired the context
            before = []
        if event.event_id in wanted:
            contexts[event.event_id] = [*before, *event.messages][-size:]
        if kept(entry):
            history[key] = (entry.timestamp, [*before, *event.messages, *replies.get(event.event_id, [])][-size:])
    return contexts


def compare(
    entry: Entry,
    context: list[Message],
    recorded: RoutingDecision | None,
    candidate: RoutingDecision | str,
    expected: list[str] | None,
) -> TurnComparison:
    """One turn's comparison; ``candidate`` is the candidate's decision or why it rejects the event."""
    event, record = entry.event, entry.record
    decided = candidate if isinstance(candidate, RoutingDecision) else None
    text = next((m.content for m in reversed(event.messages) if m.role == "user"), "")
    return TurnComparison(
        event_id=event.event_id,
        conversation_id=event.conversation_id,
        partition=record.partition,
        offset=record.offset,
        timestamp=datetime.fromtimestamp(record.timestamp / 1000, UTC),
        text=text if len(text) <= TEXT_CHARS else text[: TEXT_CHARS - 3] + "...",
        kind=change_kind(routes(recorded), routes(decided)),
        recorded=recorded,
        candidate=decided,
        rejected=candidate if isinstance(candidate, str) else None,
        expected=expected,
        context=context,
    )


# -- labels ---------------------------------------------------------------------------------------


class _Label(msgspec.Struct):
    event_id: str
    expected_routes: list[str]


_LABEL = msgspec.json.Decoder(_Label)


def load_labels(path: str | Path) -> dict[str, list[str]]:
    """JSON Lines of ``{"event_id": ..., "expected_routes": [...]}`` -> expected routes by event id."""
    path = Path(path)
    try:
        lines = path.read_bytes().splitlines()
    except OSError as exc:
        raise LabelsError(f"cannot read labels {path}: {exc.strerror}") from None
    labels: dict[str, list[str]] = {}
    for lineno, line in enumerate(lines, 1):
        try:
            label = _LABEL.decode(line) if line.strip() else None
        except msgspec.DecodeError as exc:
            raise LabelsError(f"{path}:{lineno}: {exc}") from None
        if label is not None:
            labels[label.event_id] = label.expected_routes
    return labels


def score_labels(turns: Sequence[TurnComparison]) -> dict[str, Report] | None:
    """routeyard.router.engines.scoring Reports of both sides on the same turns: labelled, with a recorded decision.
    Each turn is tagged with its change kind (accuracy per tag: on the changed turns, on the rest).
    A failed decision (``engine failed`` reason) or a rejected event counts as failed."""
    scored = [t for t in turns if t.expected is not None and t.recorded is not None]
    if not scored:
        return None
    cases = [
        Case(id=t.event_id, agents=(), conversation=t.context, expected=frozenset(t.expected or ()), tags=(t.kind,))
        for t in scored
    ]
    return {
        "recorded": score(cases, [_outcome(t, t.recorded, i) for i, t in enumerate(scored)]),
        "candidate": score(cases, [_outcome(t, t.candidate, i) for i, t in enumerate(scored)]),
    }


def _outcome(turn: TurnComparison, decision: RoutingDecision | None, index: int) -> Outcome:
    """Each turn its own "batch", so throughput is decisions per second of engine time."""
    if decision is None:
        return Outcome(case_id=turn.event_id, predicted=frozenset(), error=f"rejected: {turn.rejected}", batch=index)
    reason = decision.fallback_reason or ""
    return Outcome(
        case_id=turn.event_id,
        predicted=frozenset(decision.routes),
        error=reason if reason.startswith("engine failed") else None,
        engine=decision.engine,
        latency_ms=decision.latency_ms,
        batch=index,
        continuation=decision.continuation,
        batch_s=decision.latency_ms / 1000,
    )


# -- rendering ------------------------------------------------------------------------------------


def _cell(value: object) -> str:
    return str(value).replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")


def _table(header: Sequence[str], rows: Iterable[Sequence[object]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(_cell(cell) for cell in row) + " |" for row in rows]


def _routes_text(decision: RoutingDecision | None) -> str:
    if decision is None:
        return "(rejected)"
    return ", ".join(decision.routes) or "(none)"


def _output(turn: TurnComparison) -> str:
    c = turn.candidate
    parts = [c.raw_output or "", c.fallback_reason or ""] if c is not None else [turn.rejected or ""]
    return "; ".join(p for p in parts if p)[:200] or "-"


def pick_examples(turns: Sequence[TurnComparison], n: int) -> list[TurnComparison]:
    """Up to ``n`` changed turns, taken in turn from each change kind, shown in stream order."""
    changed = [t for t in turns if t.kind not in ("same", "unrecorded")]
    by_kind: dict[str, list[TurnComparison]] = {}
    for turn in changed:
        by_kind.setdefault(turn.kind, []).append(turn)
    mixed = [t for group in itertools.zip_longest(*by_kind.values()) for t in group if t is not None]
    chosen = {t.event_id for t in mixed[:n]}
    return [t for t in changed if t.event_id in chosen]


def _overview(s: ReplaySummary) -> list[str]:
    rows: list[tuple[str, object]] = [
        ("records read", s.source.read),
        ("undecodable / duplicate records", f"{s.source.undecodable} / {s.source.duplicates}"),
        ("turns selected", s.selected),
        ("compared (with a recorded decision)", s.compared),
        ("agreement", f"{s.agreed}/{s.compared} ({100 * s.agreement:.1f}%)"),
        ("no recorded decision", s.unrecorded),
        ("recorded", "; ".join(f"{name} ({n})" for name, n in s.recorded.items()) or "-"),
        ("candidate", s.candidate),
    ]
    if s.dispatch_topic:
        rows.append(("republished to", f"{s.dispatch_topic} ({s.dispatched} events)"))
    return _table(["", "value"], rows)


def replay_markdown(report: ReplayReport, *, examples: int = 5) -> str:
    s = report.summary
    lines = [f"# routeyard replay: {s.source.prefix}conversations ({s.selected} turns)", "", *_overview(s)]
    changes = [(CHANGE_LABELS.get(kind, kind), n) for kind, n in s.changes.items()]
    lines += ["", "## Changes", "", *_table(["change", "turns"], changes or [("(none)", 0)])]
    shown = pick_examples(report.turns, examples)
    lines += ["", f"## Examples ({len(shown)} of {sum(s.changes.values())} changed turns)", ""]
    lines += _table(
        ["event", "message", "recorded", "candidate", "candidate output"],
        [(t.event_id, t.text, _routes_text(t.recorded), _routes_text(t.candidate), _output(t)) for t in shown],
    )
    if report.scores is not None:
        recorded, candidate = report.scores["recorded"], report.scores["candidate"]
        lines += ["", compare_markdown(recorded, candidate, NAMES, f"Labelled turns ({recorded.n})")]
    return "\n".join(lines)


def write_report(report: ReplayReport, markdown: str, out: Path) -> list[Path]:
    """replay.json (summary and scores), turns.jsonl (one comparison a line), replay.md."""
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / "replay.json", out / "turns.jsonl", out / "replay.md"]
    document = {"summary": report.summary, "scores": report.scores}
    paths[0].write_bytes(msgspec.json.format(msgspec.json.encode(document), indent=2) + b"\n")
    paths[1].write_bytes(b"".join(msgspec.json.encode(t) + b"\n" for t in report.turns))
    paths[2].write_text(markdown + "\n", encoding="utf-8")
    return paths
