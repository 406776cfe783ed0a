"""The filter runtime: a filter is an async function that passes, changes or blocks a turn.

    from routeyard.consumers.filters import FilterResult, filter
    from routeyard.schemas import AgentTask

    @filter("Guard")
    async def guard(task: AgentTask) -> FilterResult:
        if "rm -rf" in task.messages[-1].content:
            return FilterResult.blocked("shell commands are not allowed")
        return FilterResult.passed()

An input filter's task carries the turn's messages (as the filters before it left them); an
output filter's carries them too, and the agents' replies in ``prior_replies``. Both carry
``filter_notes``, the notes earlier filters of the turn left. Run filters with ``routeyard worker
filters mymodule:guard`` (the catalog says which turns run them, ``router/filters.py``).

The runtime is the agent runtime's (``consumers/agents/agent.py``): one consumer group per filter
on ``<prefix>filter.<name>``, bounded concurrency, deadlines, answered marks, error replies for
exceptions. Delivery is at least once: after a crash a filter may be called again with the same
``task.task_id`` (the stable request id to deduplicate on).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import msgspec
from routeyard.consumers.agents.agent import Agent, AgentRunner
from routeyard.consumers.errors import BadReply
from routeyard.consumers.kafka.bus import Consumer, Producer
from routeyard.consumers.settings import Settings
from routeyard.consumers.stores.marks import TaskMarks
from routeyard.schemas import AgentTask, Message, PriorReply, Verdict

__all__ = ["Filter", "FilterHandler", "FilterResult", "FilterRunner", "filter"]

MAX_REASON_CHARS = 500
MAX_NOTES = 1000


@dataclass(frozen=True)
class FilterResult:
    """What a filter decided: pass the turn on, change its messages (input) or replies (output),
    or block it with a reason the caller sees. ``notes`` go to the later filters of the turn."""

    verdict: Verdict = "passed"
    messages: list[Message] | None = None
    replies: list[PriorReply] | None = None
    reason: str = ""
    notes: dict[str, str] = field(default_factory=dict)

    @classmethod
    def passed(cls, notes: dict[str, str] | None = None) -> FilterResult:
        return cls(notes=notes or {})

    @classmethod
    def changed(
        cls,
        *,
        messages: list[Message] | None = None,
        replies: list[PriorReply] | None = None,
        notes: dict[str, str] | None = None,
    ) -> FilterResult:
        return cls(verdict="changed", messages=messages, replies=replies, notes=notes or {})

    @classmethod
    def blocked(cls, reason: str, notes: dict[str, str] | None = None) -> FilterResult:
        return cls(verdict="blocked", reason=reason, notes=notes or {})


FilterHandler = Callable[[AgentTask], Awaitable[FilterResult]]


@dataclass(frozen=True)
class Filter:
    name: str
    handler: FilterHandler
    topic: str | None = None


def filter(name: str, *, topic: str | None = None) -> Callable[[FilterHandler], Filter]:  # as @agent
    """Declare a filter; the name must match the catalog's ``filters:`` entry."""

    def wrap(handler: FilterHandler) -> Filter:
        return Filter(name=name, handler=handler, topic=topic)

    return wrap


async def _never(task: AgentTask) -> str:  # the runner calls the filter, never an agent handler
    raise AssertionError("a filter runs through FilterRunner._answer")


class FilterRunner(AgentRunner):
    """The agent runtime, answering with the filter's verdict instead of a text."""

    span_name = "routeyard.filter"

    def __init__(
        self, flt: Filter, *, settings: Settings, consumer: Consumer, producer: Producer, marks: TaskMarks
    ) -> None:
        as_agent = Agent(name=flt.name, description=f"filter {flt.name}", handler=_never, topic=flt.topic)
        super().__init__(as_agent, settings=settings, consumer=consumer, producer=producer, marks=marks)
        self.filter = flt

    async def _answer(self, task: AgentTask) -> tuple[str, dict[str, Any]]:
        result = await self.filter.handler(task)
        if not isinstance(result, FilterResult):
            raise BadReply(f"filter {self.filter.name} returned {type(result).__name__}, not FilterResult")
        return reply_fields(self.filter.name, task, result)


def reply_fields(name: str, task: AgentTask, result: FilterResult) -> tuple[str, dict[str, Any]]:
    """The reply's content (a block's reason) and verdict fields; BadReply if the result does not
    fit the task (changed messages from an output filter, a role that does not exist, ...)."""
    notes = _notes(name, result.notes)
    if result.verdict == "blocked":
        reason = " ".join(result.reason.split())[:MAX_REASON_CHARS] or "blocked"
        return reason, {"verdict": "blocked", "notes": notes}
    if result.verdict == "passed":
        return "", {"verdict": "passed", "notes": notes}
    want = "messages" if task.kind == "input_filter" else "replies"
    given = result.messages if want == "messages" else result.replies
    if given is None or (result.messages if want == "replies" else result.replies) is not None:
        raise BadReply(f"filter {name}: a {task.kind} changes {want} (and only {want})")
    kind = list[Message] if want == "messages" else list[PriorReply]
    try:
        checked = msgspec.convert(msgspec.to_builtins(given), kind)
    except (msgspec.ValidationError, TypeError) as exc:
        raise BadReply(f"filter {name}: changed {want} are not valid: {exc}") from None
    return "", {"verdict": "changed", want: checked, "notes": notes}


def _notes(name: str, notes: dict[str, str]) -> dict[str, str]:
    if len(notes) > MAX_NOTES or not all(isinstance(k, str) and isinstance(v, str) for k, v in notes.items()):
        raise BadReply(f"filter {name}: notes must be at most {MAX_NOTES} strings by name")
    return dict(notes)
