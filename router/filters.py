"""Filter chains: the catalog's filters, which of them a turn runs, and what their answers change.

A filter is a step of the turn's durable correlation (``router/correlation.py``), sent as a task
on ``<prefix>filter.<name>`` and answered on the replies topic like an agent; a filter worker
(``routeyard worker filters``) runs it. Input filters run one by one after the decision and
before the agents (the catalog's global chain, then each routed agent's own, in route order);
output filters run one by one on the agents' replies before the response::

    filters:                      # defined once; global unless ``global: false``
      - name: PiiRedactor
        kind: python              # an @filter("PiiRedactor") run by `routeyard worker filters mod:obj`
        stage: input
      - name: Guard
        kind: http                # Plano's filter contract: POST of the chat-completions body
        url: http://guard.internal/v1/filter
        api_key_env: GUARD_KEY
        stage: input
        timeout: 2s
        retries: 2
        global: false             # only for the agents that list it
    agents:
      - name: WeatherAgent
        filters: [Guard]

Everything here is pure: the correlation calls it to plan a chain and to read its answers.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from typing import Annotated, Any, Literal

import msgspec
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from routeyard.router.endpoint import EnvName, HttpUrl
from routeyard.schemas import AgentReply, Message, PriorReply

__all__ = [
    "FilterSpec",
    "changed_messages",
    "changed_replies",
    "check_filters",
    "input_chain",
    "output_chain",
    "prior",
]

_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_.-]{0,99}$")
FilterKind = Literal["python", "http"]
Stage = Literal["input", "output"]


class FilterSpec(BaseModel):
    """One filter of the catalog."""

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)

    name: str = Field(description="The filter's name (as for agents); its task topic is <prefix>filter.<name>.")
    kind: FilterKind = Field(
        description="python: an @filter run by 'routeyard worker filters MODULE:OBJ'; http: a service speaking "
        "Plano's filter contract at url."
    )
    stage: Stage = Field(default="input", description="input: before the agents; output: on their replies.")
    url: HttpUrl | None = Field(default=None, description="With kind http: the filter's endpoint.")
    api_key_env: EnvName | None = Field(
        default=None, description="With kind http: the environment variable holding the bearer token."
    )
    timeout_s: Annotated[float, Field(gt=0, le=3600)] = Field(
        default=5.0, alias="timeout", description="How long one attempt may take: seconds, or '500ms', '5s', '1m'."
    )
    retries: int = Field(default=0, ge=0, le=10, description="Further attempts after an error or a timeout.")
    global_: bool = Field(
        default=True,
        alias="global",
        description="Run for every turn (true), or only for the agents that list it in their filters (false).",
    )

    @field_validator("name")
    @classmethod
    def _name(cls, name: str) -> str:
        if not _NAME.match(name):
            raise ValueError(f"filter name {name!r} must start with a letter and use letters, digits, '_', '.', '-'")
        return name

    @field_validator("timeout_s", mode="before")
    @classmethod
    def _timeout(cls, value: Any) -> float:
        from routeyard.router.catalog import parse_duration  # the catalog imports this module

        return parse_duration(value)

    @model_validator(mode="after")
    def _kind_fields(self) -> FilterSpec:
        if self.kind == "http" and self.url is None:
            raise ValueError(f"filter {self.name!r} is kind http: it needs a url")
        if self.kind == "python" and (self.url is not None or self.api_key_env is not None):
            raise ValueError(f"filter {self.name!r} is kind python: url and api_key_env are for kind http")
        if self.kind == "http" and self.stage == "output":
            raise ValueError(f"filter {self.name!r}: http filters run at stage input (Plano's filter contract)")
        return self


def check_filters(
    filters: Sequence[FilterSpec], per_agent: dict[str, tuple[str, ...]], agents: Iterable[str] = ()
) -> None:
    """ValueError (one line) for duplicate filter names, a filter named as an agent (metrics, replies
    and breakers tell them apart by name), or an agent listing an unknown or global filter."""
    names = [f.name for f in filters]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ValueError(f"duplicate filter names: {', '.join(duplicates)}")
    shared = sorted(set(names) & set(agents))
    if shared:
        raise ValueError(f"filters and agents must have different names: {', '.join(shared)}")
    by_name = {f.name: f for f in filters}
    for agent, listed in per_agent.items():
        for name in listed:
            spec = by_name.get(name)
            if spec is None:
                raise ValueError(f"agent {agent!r}: filter {name!r} is not in the catalog's filters")
            if spec.global_:
                raise ValueError(f"agent {agent!r}: filter {name!r} already runs for every turn (global)")
        if len(set(listed)) != len(listed):
            raise ValueError(f"agent {agent!r} lists a filter twice")


def _chain(
    filters: Sequence[FilterSpec], per_agent: dict[str, tuple[str, ...]], routes: Iterable[str], stage: Stage
) -> list[FilterSpec]:
    """The filters of ``stage`` a turn routed to ``routes`` runs: global ones, then each agent's own (once)."""
    by_name = {f.name: f for f in filters}
    chosen = [f for f in filters if f.global_]
    for agent in routes:
        chosen += [by_name[n] for n in per_agent.get(agent, ()) if n in by_name and by_name[n] not in chosen]
    return [f for f in chosen if f.stage == stage]


def input_chain(
    filters: Sequence[FilterSpec], per_agent: dict[str, tuple[str, ...]], routes: Sequence[str]
) -> list[FilterSpec]:
    return _chain(filters, per_agent, routes, "input") if routes else []


def output_chain(
    filters: Sequence[FilterSpec], per_agent: dict[str, tuple[str, ...]], routes: Sequence[str]
) -> list[FilterSpec]:
    return _chain(filters, per_agent, routes, "output") if routes else []


def changed_messages(context: list[Message], answers: Iterable[AgentReply | None]) -> list[Message]:
    """The messages after the input filters that answered (in chain order): the last change wins."""
    messages = context
    for reply in answers:
        if reply is not None and reply.verdict == "changed" and reply.messages is not None:
            messages = reply.messages
    return messages


def changed_replies(replies: list[AgentReply], answers: Iterable[AgentReply | None]) -> list[AgentReply]:
    """The agents' replies after the output filters: each change replaces the content of the
    reply of the same agent (a filter cannot add replies, nor turn an error into an answer)."""
    for answer in answers:
        if answer is None or answer.verdict != "changed" or answer.replies is None:
            continue
        new = {p.agent: p.content for p in answer.replies}
        replies = [
            msgspec.structs.replace(r, content=new[r.agent]) if r.agent in new and r.status == "ok" else r
            for r in replies
        ]
    return replies


def prior(replies: Iterable[AgentReply]) -> list[PriorReply]:
    """Replies as an output filter's task carries them."""
    return [PriorReply(agent=r.agent, status=r.status, content=r.content or r.error or "") for r in replies]
