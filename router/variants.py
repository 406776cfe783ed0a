"""Agent variants and canaries: which variant of an agent a conversation gets (pure).

A catalog agent may list ``variants`` (each with its own task topic, a weight 0-100 and a
``shadow`` flag). The engines still see one agent; the router worker picks the variant at
dispatch. Assignment is sticky per conversation: a stable hash (SHA-256) of tenant, conversation
id and the agent's salt, mapped into [0, 100), picks the variant by cumulative weight. The
consumers layer pins the first choice in Redis, so changing weights does not move a live
conversation; a pin to a variant that was removed or rolled back is replaced by a fresh choice
among the variants left (``choose``).

Rollback: a variant whose circuit breaker (named ``Agent@variant``) is open, or whose error and
timeout rate over the health window exceeds the threshold (with at least a minimum count of
outcomes), gets no new conversations, and its pinned ones move (``verdict``).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from pydantic import BaseModel, ConfigDict, Field, field_validator
from routeyard.router.correlation import Effect
from routeyard.schemas import AgentTask, Message, Topics, encode, valid_topic

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,49}$")
BUCKETS = 10_000
"""The hash is mapped to [0, 100) in steps of 0.01: weights are whole percent."""


class VariantSpec(BaseModel):
    """One variant of a catalog agent."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(description="The variant's name, unique within its agent (e.g. 'stable', 'v2').")
    topic: str | None = Field(
        default=None, description="The variant's task topic (default: <prefix>agent.<agent>.<variant>)."
    )
    weight: int = Field(
        default=0, ge=0, le=100, description="Percent of new conversations (non-shadow weights sum to 100)."
    )
    shadow: bool = Field(
        default=False,
        description="Gets a copy of each task the agent gets; its replies are recorded, never sent to the caller.",
    )

    @field_validator("name")
    @classmethod
    def _name(cls, name: str) -> str:
        if not _NAME.match(name):
            raise ValueError(f"variant name {name!r} must be letters, digits, '_', '.', '-' (at most 50)")
        return name

    @field_validator("topic")
    @classmethod
    def _topic(cls, topic: str | None) -> str | None:
        if topic is not None and not valid_topic(topic):
            raise ValueError(f"topic {topic!r} is not a valid Kafka topic name")
        return topic


def check_variants(variants: Sequence[VariantSpec]) -> None:
    """ValueError (one line) unless names are unique and the served variants' weights sum to 100."""
    if not variants:
        return
    names = [v.name for v in variants]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ValueError(f"duplicate variant names: {', '.join(duplicates)}")
    served = [v for v in variants if not v.shadow]
    total = sum(v.weight for v in served)
    if not served or total != 100:
        raise ValueError(f"the weights of the non-shadow variants must sum to 100, got {total}")


def served(variants: Sequence[VariantSpec]) -> list[VariantSpec]:
    return [v for v in variants if not v.shadow]


def shadows(variants: Sequence[VariantSpec]) -> list[VariantSpec]:
    return [v for v in variants if v.shadow]


def stable(variants: Sequence[VariantSpec]) -> str:
    """The stable variant: the served one with the highest weight (the first on a tie)."""
    return max(served(variants), key=lambda v: v.weight).name


def point(tenant: str | None, conversation_id: str, salt: str) -> float:
    """The conversation's stable place in [0, 100)."""
    digest = hashlib.sha256(f"{tenant or ''}\x00{conversation_id}\x00{salt}".encode()).digest()
    return (int.from_bytes(digest[:8], "big") % BUCKETS) * 100 / BUCKETS


def choose(
    variants: Sequence[VariantSpec], tenant: str | None, conversation_id: str, salt: str, out: Collection[str] = ()
) -> str:
    """The variant the conversation falls in by weight, among the served ones not in ``out``
    (rolled back); with all of them out, the stable one."""
    left = [v for v in served(variants) if v.name not in out and v.weight > 0]
    if not left:
        return stable(variants)
    total = sum(v.weight for v in left)
    at = point(tenant, conversation_id, salt) * total / 100
    edge = 0.0
    for v in left:
        edge += v.weight
        if at < edge:
            return v.name
    return left[-1].name


@dataclass(frozen=True)
class Health:
    """A variant's outcomes over the window, and whether its breaker is open."""

    ok: int = 0
    error: int = 0
    timeout: int = 0
    breaker_open: bool = False

    @property
    def total(self) -> int:
        return self.ok + self.error + self.timeout


def verdict(variant: str, health: Health, *, threshold: float, min_count: int) -> str | None:
    """Why ``variant`` must be rolled back, or None while it is healthy."""
    if health.breaker_open:
        return f"rolled back: {variant} circuit open"
    if health.total < max(1, min_count):
        return None
    rate = (health.error + health.timeout) / health.total
    if rate > threshold:
        return f"rolled back: {variant} error rate {rate:.2f} > {threshold:.2f}"
    return None


def variant_topic(topics: Topics, agent: str, variant: VariantSpec) -> str:
    """The variant's task topic (default ``<prefix>agent.<agent>.<variant>``)."""
    return variant.topic or f"{topics.agent(agent)}.{variant.name}"


def breaker_name(agent: str, variant: str) -> str:
    """The circuit breaker of one variant (the agent's own breaker stays the agent's)."""
    return f"{agent}@{variant}"


def plan_pin(
    variants: Sequence[VariantSpec], tenant: str | None, conversation_id: str, salt: str, out: Collection[str]
) -> tuple[str, tuple[str, ...]]:
    """(the variant a conversation without a valid pin gets, the variants a pin may keep)."""
    want = choose(variants, tenant, conversation_id, salt, out)
    allowed = tuple(v.name for v in served(variants) if v.name not in out)  # weight 0: drains, keeps its pins
    return want, allowed or (want,)


def note(
    variants: Sequence[VariantSpec],
    tenant: str | None,
    conversation_id: str,
    salt: str,
    got: str,
    replaced: str | None,
    rolled: Mapping[str, str],
) -> str | None:
    """Why the conversation is not on the variant it was pinned to or would fall in; None: it is."""
    if replaced is not None:
        why = rolled.get(replaced) or f"pinned variant {replaced} is no longer served"
        return f"{why}; moved to {got}"
    natural = choose(variants, tenant, conversation_id, salt)
    if natural != got and natural in rolled:
        return f"{rolled[natural]}; sent to {got}"
    return None


def shadow_effects(
    spec_topics: Mapping[str, str],
    *,
    agent: str,
    event_id: str,
    conversation_id: str,
    tenant: str | None,
    context: list[Message],
    metadata: dict[str, str],
    shadows_topic: str,
    deadline: float,
    headers: list[tuple[str, bytes]] | None,
) -> list[Effect]:
    """A copy of the agent's task for each shadow variant (``spec_topics``: variant -> topic),
    answered on the shadows topic: the correlator never sees these replies."""
    effects = []
    for variant, topic in spec_topics.items():
        task = AgentTask(
            task_id=f"{event_id}:shadow:{agent}:{variant}",
            event_id=event_id,
            conversation_id=conversation_id,
            tenant=tenant,
            agent=agent,
            messages=context,
            reply_topic=shadows_topic,
            deadline=datetime.fromtimestamp(deadline, UTC),
            metadata=metadata,
            variant=variant,
            shadow=True,
        )
        effects.append(
            Effect(id=f"task:{task.task_id}", topic=topic, key=conversation_id, value=encode(task), headers=headers)
        )
    return effects
