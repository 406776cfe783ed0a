"""The router worker's checks on a decoded event: each bad event is refused with a reason that says why."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from routeyard.consumers.settings import Settings
from routeyard.router.catalog import catalog_from_dict
from routeyard.router.validation import InvalidEvent, gateway_topic, validate
from routeyard.schemas import ConversationEvent, Message

CATALOG = catalog_from_dict({"agents": [{"name": "WeatherAgent", "description": "weather", "topic": "weather.tasks"}]})
NOW = datetime(2026, 1, 1, 12, tzinfo=UTC)
SETTINGS = Settings.model_validate({"topic_prefix": "ry."})


def event(**fields: Any) -> ConversationEvent:
    base: dict[str, Any] = {
        "event_id": "e1",
        "conversation_id": "c1",
        "messages": [Message(role="user", content="weather?")],
        "created_at": NOW,
    }
    return ConversationEvent(**{**base, **fields})


def reason(e: ConversationEvent, settings: Settings = SETTINGS) -> str:
    with pytest.raises(InvalidEvent) as caught:
        validate(e, CATALOG, settings.event_rules(), now=NOW)
    return str(caught.value)


def test_a_good_event_passes() -> None:
    validate(event(tenant="acme", reply_topic="acme.responses"), CATALOG, SETTINGS.event_rules(), now=NOW)
    validate(event(created_at=NOW - timedelta(days=30)), CATALOG, SETTINGS.event_rules(), now=NOW)  # a backlog is fine


@pytest.mark.parametrize("tenant", ["_", ".x", "a:b", "", "x" * 65, "acme corp", "acme\n", "acme\r\n"])
def test_malformed_tenants(tenant: str) -> None:
    assert "tenant must be" in reason(event(tenant=tenant))


def test_tenant_allow_list() -> None:
    strict = SETTINGS.model_copy(update={"router": SETTINGS.router.model_copy(update={"tenants": frozenset({"acme"})})})
    validate(event(tenant="acme"), CATALOG, strict.event_rules(), now=NOW)
    assert "'globex' is not in router.tenants" in reason(event(tenant="globex"), strict)
    assert "no tenant" in reason(event(), strict)


def test_created_at_in_the_future_or_too_old() -> None:
    assert "in the future" in reason(event(created_at=NOW + timedelta(hours=1)))
    assert "in the future" in reason(event(created_at=datetime(9999, 1, 1)))  # naive: read as UTC
    aged = SETTINGS.model_copy(update={"router": SETTINGS.router.model_copy(update={"max_event_age_s": 3600})})
    assert "old" in reason(event(created_at=NOW - timedelta(hours=2)), aged)


@pytest.mark.parametrize(
    "topic",
    [
        "ry.conversations",
        "ry.decisions",
        "ry.replies",
        "ry.deadletter",
        "ry.agent.Other",
        "weather.tasks",
        "a b",
        "__consumer_offsets",  # Kafka's own
        "__transaction_state",
        "ry_conversations",  # '.' and '_' collide in Kafka's topic names
        "ry.conversations.",  # inside routeyard's prefix: routeyard may create it
        "ry.responses.other",
        "weather_tasks",
        "ry.gateway.",  # a gateway's reply topic needs an instance
        "ry.gateway.a.b",
        "ry_gateway.g1",  # only the exact spelling, not the one Kafka folds into it
        "ry.gateway.x" + "y" * 64,
        "ry.gatewayx",
    ],
)
def test_reply_topic_never_points_into_routeyard(topic: str) -> None:
    assert "reply_topic" in reason(event(reply_topic=topic))


def test_reply_topic_may_be_the_responses_topic() -> None:
    validate(event(reply_topic="ry.responses"), CATALOG, SETTINGS.event_rules(), now=NOW)


def test_reply_topic_may_be_a_gateway_instances_topic() -> None:
    topic = gateway_topic(SETTINGS.topics, "g-1")
    assert topic == "ry.gateway.g-1"
    validate(event(reply_topic=topic), CATALOG, SETTINGS.event_rules(), now=NOW)


def test_a_gateway_topic_that_is_an_agents_topic_stays_reserved() -> None:
    catalog = catalog_from_dict({"agents": [{"name": "A", "description": "a", "topic": "ry.gateway.g1"}]})
    with pytest.raises(InvalidEvent, match="reply_topic"):
        validate(event(reply_topic="ry.gateway.g1"), catalog, SETTINGS.event_rules(), now=NOW)


def test_gateway_instance_names_are_checked() -> None:
    with pytest.raises(ValueError, match="instance"):
        gateway_topic(SETTINGS.topics, "a.b")


def test_ids_messages_and_agents() -> None:
    assert "event_id" in reason(event(event_id=""))
    assert "conversation_id" in reason(event(conversation_id="c" * 257))
    assert "no user message" in reason(event(messages=[Message(role="assistant", content="hi")]))
    assert "no user message" in reason(event(messages=[Message(role="user", content="  \n")]))
    assert "unknown agents" in reason(event(agents=["WeatherAgent", "Ghost"]))
