"""Which decoded events may be routed: each refusal is an ``InvalidEvent`` whose message says why
in one line (it becomes the dead letter's reason and the sender's ``rejected`` answer).

Checks without configuration: ids of 1-256 characters, the tenant's form, a user message with
text, agents inside the catalog. With ``EventRules`` (from the router's settings): the tenant
allow-list, ``created_at`` (from 2000 on, representable in UTC, not too far ahead or too old) and
``reply_topic`` (never routeyard's own namespace, an agent's topic or Kafka's internal topics;
a gateway instance's ``<prefix>gateway.<instance>`` is the one exception).
"""

from __future__ import annotations

import re
from datetime import UTC, datetime

import msgspec
from routeyard.router.catalog import Catalog
from routeyard.router.errors import InvalidEvent
from routeyard.router.variants import variant_topic
from routeyard.schemas import ConversationEvent, Topics, valid_topic

__all__ = ["EventRules", "InvalidEvent", "answerable", "gateway_topic", "utc", "validate"]

_TENANT = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")  # fullmatch: ``$`` would accept a trailing newline
"""Never ``_`` (the key part of "no tenant") and never ``:`` (the key separator): see
routeyard.consumers.stores.context."""
MAX_ID_LENGTH = 256


class EventRules(msgspec.Struct, frozen=True, kw_only=True):
    """The configured part of validation (``Settings.event_rules()`` builds it)."""

    topics: Topics
    tenants: frozenset[str] | None = None
    """The tenant allow-list (None: any well-formed tenant, or none)."""
    max_clock_skew_s: float = 300.0
    max_event_age_s: float | None = None


def validate(
    event: ConversationEvent, catalog: Catalog, rules: EventRules | None = None, *, now: datetime | None = None
) -> None:
    """Raise ``InvalidEvent`` with the reason if the event must not be routed. Without ``rules``
    only the checks that need no configuration run (ids, tenant form, user message, agents)."""
    for name, value in (("event_id", event.event_id), ("conversation_id", event.conversation_id)):
        if not 0 < len(value) <= MAX_ID_LENGTH:
            raise InvalidEvent(f"{name} must have 1-{MAX_ID_LENGTH} characters")
    if event.tenant is not None and not _TENANT.fullmatch(event.tenant):
        raise InvalidEvent("tenant must be 1-64 letters, digits, '_', '.' or '-', starting with a letter or digit")
    if not any(m.role == "user" and m.content.strip() for m in event.messages):
        raise InvalidEvent("the turn has no user message with text")
    if event.agents is not None:
        unknown = sorted(set(event.agents) - set(catalog.names))
        if unknown:
            raise InvalidEvent(f"unknown agents in the turn's restriction: {', '.join(unknown)}")
    if rules is not None:
        _check_tenant_allowed(event.tenant, rules.tenants)
        _check_created_at(event.created_at, rules, now or datetime.now(UTC))
        _check_reply_topic(event.reply_topic, catalog, rules.topics)


def _check_tenant_allowed(tenant: str | None, allowed: frozenset[str] | None) -> None:
    if allowed is not None and (tenant or "") not in allowed:
        raise InvalidEvent(f"tenant {tenant!r} is not in router.tenants" if tenant else "the event has no tenant")


EARLIEST = datetime(2000, 1, 1, tzinfo=UTC)
"""No event is older: an earlier ``created_at`` (year 1, or year 0 once in UTC) is a wrong clock or
hostile, and dates near datetime's limits fail arithmetic later (latency, encoding)."""


def _check_created_at(created_at: datetime, rules: EventRules, now: datetime) -> None:
    try:  # naive means UTC; an offset may take year 1 (or 9999) out of datetime's range
        moment = utc(created_at)
    except (OverflowError, ValueError):
        raise InvalidEvent("created_at is not representable in UTC") from None
    if moment < EARLIEST:
        raise InvalidEvent("created_at is before 2000-01-01")
    ahead = (moment - now).total_seconds()
    if ahead > rules.max_clock_skew_s:
        raise InvalidEvent(f"created_at is {ahead:.0f}s in the future (more than router.max_clock_skew_s)")
    limit = rules.max_event_age_s
    if limit is not None and -ahead > limit:
        raise InvalidEvent(f"created_at is {-ahead:.0f}s old (more than router.max_event_age_s)")


def utc(moment: datetime) -> datetime:
    """``moment`` in UTC (naive means UTC); ``validate`` made sure it is representable."""
    return moment.astimezone(UTC) if moment.tzinfo else moment.replace(tzinfo=UTC)


def answerable(topic: str, catalog: Catalog, topics: Topics) -> bool:
    """Whether a response may go to ``topic`` (a sender's reply_topic)."""
    try:
        _check_reply_topic(topic, catalog, topics)
    except InvalidEvent:
        return False
    return True


def _check_reply_topic(topic: str | None, catalog: Catalog, topics: Topics) -> None:
    """A response may go to the responses topic or a client's own topic, never into routeyard's
    own namespace (whose topics it may create), an agent's topic or Kafka's internal topics."""
    if topic is None:
        return
    if not valid_topic(topic):
        raise InvalidEvent("reply_topic is not a valid topic name (1-249 of letters, digits, '.', '_', '-')")
    if topic == topics.responses or _gateway_topic(topic, catalog, topics):
        return
    if _reserved(topic, catalog, topics):
        raise InvalidEvent(f"reply_topic {topic!r} is reserved (routeyard's own topics, an agent's or Kafka's)")


GATEWAY_TOPIC = "gateway."
"""A gateway instance's reply topic is ``<prefix>gateway.<instance>``: the one name inside
routeyard's namespace that a sender may name as its reply_topic."""
_INSTANCE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")


def gateway_topic(topics: Topics, instance: str) -> str:
    """The reply topic of gateway ``instance`` (1-64 letters, digits, '_' or '-')."""
    if not _INSTANCE.fullmatch(instance):
        raise ValueError(f"gateway instance {instance!r} must be 1-64 letters, digits, '_' or '-'")
    return f"{topics.prefix}{GATEWAY_TOPIC}{instance}"


def _gateway_topic(topic: str, catalog: Catalog, topics: Topics) -> bool:
    """Exactly ``<prefix>gateway.<instance>`` (no other spelling of it) and no agent's topic."""
    head = topics.prefix + GATEWAY_TOPIC
    if not topics.prefix or not topic.startswith(head) or not _INSTANCE.fullmatch(topic[len(head) :]):
        return False
    agent_topics = _agent_topics(catalog, topics)
    return _fold(topic) not in agent_topics


def _reserved(topic: str, catalog: Catalog, topics: Topics) -> bool:
    """Kafka's internal topics (``__*``), routeyard's prefix and agents' topics. Kafka treats ``.``
    and ``_`` as the same in topic names (their metrics collide), so they are compared as one."""
    folded = _fold(topic)
    if topic.startswith("__") or (topics.prefix and folded.startswith(_fold(topics.prefix))):
        return True
    agent_topics = _agent_topics(catalog, topics)
    return folded in agent_topics or folded in {_fold(t) for t in topics.core()}


def _agent_topics(catalog: Catalog, topics: Topics) -> set[str]:
    """Every agent's task topic, its variants' too (folded)."""
    names = {spec.topic or topics.agent(spec.name) for spec in catalog.agents}
    names |= {variant_topic(topics, spec.name, v) for spec in catalog.agents for v in spec.variants}
    return {_fold(name) for name in names}


def _fold(name: str) -> str:
    return name.replace(".", "_")
