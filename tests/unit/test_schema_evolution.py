"""Schema evolution: frozen payloads written by earlier versions still decode to the same values.

The rules are stated in the module docstring of ``schemas/messages.py`` ("Schema-evolution
rules"): fields are never removed and never change type (1), new fields have defaults (2),
unknown fields are ignored (3), enumerated values may gain members and readers treat an unknown
one conservatively (4), and ``v`` records the writer's version without readers branching on it (5).

``payloads/v1/`` holds hand-written payloads exactly as a version-1 writer produced them: one
with every v1 field per wire message (``<Name>.json``) and one with only the required fields
(``<Name>.minimal.json``). Never edit them: add a ``payloads/v2/`` directory when ``v`` is bumped.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import msgspec
import pytest
from routeyard.schemas import (
    SCHEMA_VERSION,
    WIRE_MESSAGES,
    AgentReply,
    AgentTask,
    ConversationEvent,
    ConversationResponse,
    DeadLetter,
    DecodeError,
    Message,
    PriorReply,
    RoutingDecision,
    dead_letter_decoder,
    decision_decoder,
    encode,
    event_decoder,
    reply_decoder,
    response_decoder,
    task_decoder,
)

V1 = Path(__file__).parent / "payloads" / "v1"

DECODERS: dict[str, msgspec.json.Decoder[Any]] = {
    "ConversationEvent": event_decoder,
    "RoutingDecision": decision_decoder,
    "AgentTask": task_decoder,
    "AgentReply": reply_decoder,
    "ConversationResponse": response_decoder,
    "DeadLetter": dead_letter_decoder,
}

# The fields of every wire message as version 1 defined them (frozen: never edit).
V1_FIELDS: dict[str, tuple[str, ...]] = {
    "ConversationEvent": (
        "event_id",
        "conversation_id",
        "messages",
        "tenant",
        "agents",
        "reply_topic",
        "mode",
        "created_at",
        "metadata",
        "v",
    ),
    "RoutingDecision": (
        "event_id",
        "conversation_id",
        "routes",
        "mode",
        "engine",
        "tenant",
        "selected",
        "dropped",
        "raw_output",
        "latency_ms",
        "fallback_reason",
        "default_used",
        "catalog_version",
        "model",
        "confidence",
        "scores",
        "decided_at",
        "v",
    ),
    "AgentTask": (
        "task_id",
        "event_id",
        "conversation_id",
        "agent",
        "messages",
        "reply_topic",
        "deadline",
        "tenant",
        "prior_replies",
        "step",
        "attempt",
        "metadata",
        "v",
    ),
    "AgentReply": (
        "task_id",
        "event_id",
        "conversation_id",
        "agent",
        "status",
        "content",
        "error",
        "tenant",
        "finished_at",
        "v",
    ),
    "ConversationResponse": (
        "event_id",
        "conversation_id",
        "status",
        "tenant",
        "routes",
        "replies",
        "timed_out",
        "skipped",
        "created_at",
        "responded_at",
        "v",
    ),
    "DeadLetter": (
        "original",
        "error",
        "stage",
        "source_topic",
        "source_partition",
        "source_offset",
        "key",
        "error_type",
        "failed_at",
        "v",
    ),
}
V1_REQUIRED: dict[str, tuple[str, ...]] = {
    "ConversationEvent": ("event_id", "conversation_id", "messages"),
    "RoutingDecision": ("event_id", "conversation_id", "routes", "mode", "engine"),
    "AgentTask": ("task_id", "event_id", "conversation_id", "agent", "messages", "reply_topic", "deadline"),
    "AgentReply": ("task_id", "event_id", "conversation_id", "agent"),
    "ConversationResponse": ("event_id", "conversation_id", "status"),
    "DeadLetter": ("original", "error", "stage", "source_topic", "source_partition", "source_offset"),
}


def _at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


WEATHER_REPLY = AgentReply(
    task_id="ev-0001:0:WeatherAgent",
    event_id="ev-0001",
    conversation_id="conv-42",
    agent="WeatherAgent",
    status="ok",
    content="Sunny, 24°C.",
    error=None,
    tenant="acme",
    finished_at=_at("2024-03-01T12:00:02"),
    v=1,
)

FULL: dict[str, msgspec.Struct] = {
    "ConversationEvent": ConversationEvent(
        event_id="ev-0001",
        conversation_id="conv-42",
        messages=[
            Message(role="system", content="You are a helpful travel assistant."),
            Message(role="user", content="What's the weather in Paris?"),
            Message(role="assistant", content="Sunny, 24°C.", name="WeatherAgent"),
            Message(role="user", content="Book a table for two tonight"),
        ],
        tenant="acme",
        agents=["WeatherAgent", "RestaurantAgent"],
        reply_topic="acme.responses",
        mode="sequential",
        created_at=_at("2024-03-01T12:00:00"),
        metadata={"trace_id": "4bf92f3577b34da6"},
        v=1,
    ),
    "RoutingDecision": RoutingDecision(
        event_id="ev-0001",
        conversation_id="conv-42",
        routes=["RestaurantAgent"],
        mode="sequential",
        engine="vllm",
        tenant="acme",
        selected=["RestaurantAgent"],
        dropped=["HotelAgent"],
        raw_output='{"route": ["RestaurantAgent", "HotelAgent"]}',
        latency_ms=83.25,
        fallback_reason=None,
        default_used=False,
        catalog_version="3f2a9c1b7d0e",
        model="katanemo/Plano-Orchestrator-4B",
        confidence=0.92,
        scores={"RestaurantAgent": 0.92, "WeatherAgent": 0.03},
        decided_at=_at("2024-03-01T12:00:00.083250"),
        v=1,
    ),
    "AgentTask": AgentTask(
        task_id="ev-0001:1:RestaurantAgent",
        event_id="ev-0001",
        conversation_id="conv-42",
        agent="RestaurantAgent",
        messages=[Message(role="user", content="Book a table for two tonight")],
        reply_topic="routeyard.replies",
        deadline=_at("2024-03-01T12:00:30"),
        tenant="acme",
        prior_replies=[
            PriorReply(agent="WeatherAgent", status="ok", content="Sunny, 24°C."),
            PriorReply(agent="FlightAgent", status="error", content="flight API timeout"),
        ],
        step=1,
        attempt=2,
        metadata={"trace_id": "4bf92f3577b34da6"},
        v=1,
    ),
    "AgentReply": AgentReply(
        task_id="ev-0001:1:RestaurantAgent",
        event_id="ev-0001",
        conversation_id="conv-42",
        agent="RestaurantAgent",
        status="error",
        content="",
        error="no tables left",
        tenant="acme",
        finished_at=_at("2024-03-01T12:00:05.5"),
        v=1,
    ),
    "ConversationResponse": ConversationResponse(
        event_id="ev-0001",
        conversation_id="conv-42",
        status="partial",
        tenant="acme",
        routes=["WeatherAgent", "RestaurantAgent", "FlightAgent"],
        replies=[WEATHER_REPLY],
        timed_out=["RestaurantAgent"],
        skipped=["FlightAgent"],
        created_at=_at("2024-03-01T12:00:00"),
        responded_at=_at("2024-03-01T12:00:30"),
        v=1,
    ),
    "DeadLetter": DeadLetter(
        original=b'{"event_id": 1}',
        error="Expected `str`, got `int` - at `$.event_id`",
        stage="decode",
        source_topic="routeyard.conversations",
        source_partition=2,
        source_offset=1234,
        key=b"conv-42",
        error_type="ValidationError",
        failed_at=_at("2024-03-01T12:00:00.25"),
        v=1,
    ),
}

# Minimal payloads: the required fields; every other field takes its default. Timestamps that
# default to "now" are checked separately and pinned to EPOCH here.
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
NOW_DEFAULTED: dict[str, str] = {
    "ConversationEvent": "created_at",
    "RoutingDecision": "decided_at",
    "AgentReply": "finished_at",
    "ConversationResponse": "responded_at",
    "DeadLetter": "failed_at",
}
MINIMAL: dict[str, msgspec.Struct] = {
    "ConversationEvent": ConversationEvent(
        event_id="ev-0002",
        conversation_id="conv-43",
        messages=[Message(role="user", content="hello")],
        created_at=EPOCH,
    ),
    "RoutingDecision": RoutingDecision(
        event_id="ev-0002",
        conversation_id="conv-43",
        routes=[],
        mode="parallel",
        engine="rules",
        decided_at=EPOCH,
    ),
    "AgentTask": AgentTask(
        task_id="ev-0002:0:ChitChatAgent",
        event_id="ev-0002",
        conversation_id="conv-43",
        agent="ChitChatAgent",
        messages=[Message(role="user", content="hello")],
        reply_topic="routeyard.replies",
        deadline=_at("2024-03-01T12:01:00"),
    ),
    "AgentReply": AgentReply(
        task_id="ev-0002:0:ChitChatAgent",
        event_id="ev-0002",
        conversation_id="conv-43",
        agent="ChitChatAgent",
        finished_at=EPOCH,
    ),
    "ConversationResponse": ConversationResponse(
        event_id="ev-0002",
        conversation_id="conv-43",
        status="no_route",
        responded_at=EPOCH,
    ),
    "DeadLetter": DeadLetter(
        original=b"\x00\xff",
        error="not JSON",
        stage="decode",
        source_topic="routeyard.conversations",
        source_partition=0,
        source_offset=0,
        failed_at=EPOCH,
    ),
}

NAMES = sorted(V1_FIELDS)


def _written_as(original: Any, rewritten: Any) -> Any:
    """``rewritten`` restricted to the keys of ``original`` (recursively): what a v1 reader sees."""
    if isinstance(original, dict) and isinstance(rewritten, dict):
        return {k: _written_as(v, rewritten.get(k, "<missing>")) for k, v in original.items()}
    if isinstance(original, list) and isinstance(rewritten, list) and len(original) == len(rewritten):
        return [_written_as(o, r) for o, r in zip(original, rewritten, strict=True)]
    return rewritten


def _raw(name: str, variant: str = "") -> bytes:
    return (V1 / f"{name}{variant}.json").read_bytes()


def test_every_v1_message_has_frozen_payloads() -> None:
    assert set(V1_FIELDS) <= set(WIRE_MESSAGES)
    assert sorted(p.name for p in V1.glob("*.json")) == sorted(
        f"{name}{variant}.json" for name in V1_FIELDS for variant in ("", ".minimal")
    )


@pytest.mark.parametrize("name", NAMES)
def test_full_payloads_hold_exactly_the_v1_fields(name: str) -> None:
    payload = json.loads(_raw(name))
    assert sorted(payload) == sorted(V1_FIELDS[name])
    assert payload["v"] == 1


@pytest.mark.parametrize("name", NAMES)
def test_minimal_payloads_hold_exactly_the_v1_required_fields(name: str) -> None:
    assert sorted(json.loads(_raw(name, ".minimal"))) == sorted(V1_REQUIRED[name])


@pytest.mark.parametrize("name", NAMES)
def test_full_v1_payload_decodes_to_the_expected_value(name: str) -> None:
    assert DECODERS[name].decode(_raw(name)) == FULL[name]


@pytest.mark.parametrize("name", NAMES)
def test_minimal_v1_payload_decodes_with_defaults(name: str) -> None:
    decoded = DECODERS[name].decode(_raw(name, ".minimal"))
    stamp = NOW_DEFAULTED.get(name)
    if stamp is not None:
        value = getattr(decoded, stamp)
        assert isinstance(value, datetime)
        assert value.tzinfo is not None
        decoded = msgspec.structs.replace(decoded, **{stamp: EPOCH})
    assert decoded == MINIMAL[name]
    assert decoded.v == SCHEMA_VERSION  # type: ignore[attr-defined]  # no ``v``: the reader's own (rule 5)


@pytest.mark.parametrize("name", NAMES)
def test_no_v1_field_removed_and_no_required_field_added(name: str) -> None:
    """Rules 1 and 2, checked on the current structs."""
    fields = {f.encode_name: f for f in msgspec.structs.fields(WIRE_MESSAGES[name])}
    assert set(V1_FIELDS[name]) <= set(fields)
    required = {n for n, f in fields.items() if f.required}
    assert required <= set(V1_REQUIRED[name])


@pytest.mark.parametrize("name", NAMES)
def test_current_writer_keeps_v1_values_for_v1_readers(name: str) -> None:
    """Re-encoding a v1 payload writes every v1 field with the same JSON value (types unchanged)."""
    original = json.loads(_raw(name))
    rewritten = json.loads(encode(DECODERS[name].decode(_raw(name))))
    assert _written_as(original, rewritten) == original


@pytest.mark.parametrize(
    ("name", "field", "unknown"),
    [
        ("AgentReply", "status", "cancelled"),
        ("ConversationResponse", "status", "degraded"),
        ("ConversationEvent", "mode", "fanout"),
        ("RoutingDecision", "mode", "fanout"),
    ],
)
def test_unknown_enumerated_value_is_rejected_not_guessed(name: str, field: str, unknown: str) -> None:
    """Rule 4: enums are closed; a value outside them is a clear decode error (-> dead letter)."""
    payload = json.loads(_raw(name))
    payload[field] = unknown
    with pytest.raises(DecodeError, match=f"Invalid enum value '{unknown}'"):
        DECODERS[name].decode(json.dumps(payload))


@pytest.mark.parametrize("name", NAMES)
def test_newer_writer_fields_are_ignored_by_this_reader(name: str) -> None:
    """Rule 3, on the frozen payloads: a v2 payload with extra fields reads as its v1 part."""
    payload = json.loads(_raw(name))
    payload["v"] = 2
    payload["added_in_v2"] = {"anything": [1, "two", None]}
    decoded = DECODERS[name].decode(json.dumps(payload))
    assert msgspec.structs.replace(decoded, v=1) == FULL[name]
    assert decoded.v == 2  # type: ignore[attr-defined]


V2 = Path(__file__).parent / "payloads" / "v2"


def test_v2_rejected_response_decodes_with_its_reason() -> None:
    """Version 2's deliberate exception to rule 4: ``rejected`` joined ``ConversationResponse.status``
    (with ``reason``) so that a refused turn answers its sender. Frozen: never edit the payload."""
    decoded = response_decoder.decode((V2 / "ConversationResponse.rejected.json").read_bytes())
    assert decoded == ConversationResponse(
        event_id="ev-0003",
        conversation_id="conv-44",
        status="rejected",
        tenant="acme",
        reason="unknown agents in the turn's restriction: HotelAgent",
        responded_at=datetime(2024, 3, 1, 12, 0, 0, 10000, tzinfo=UTC),
        v=2,
    )


def test_v2_decision_decodes_without_the_v3_reason() -> None:
    """A decision written by version 2 (before ``reason``) decodes with ``reason`` None, and its
    re-encoding keeps every v2 value. Frozen: never edit the payload."""
    raw = (V2 / "RoutingDecision.json").read_bytes()
    decoded = decision_decoder.decode(raw)
    assert decoded.v == 2 and decoded.reason is None
    assert decoded.engine == "semantic" and decoded.scores == {"WeatherAgent": 0.71, "HotelAgent": 0.2}
    original = json.loads(raw)
    assert _written_as(original, json.loads(encode(decoded))) == original


V3 = Path(__file__).parent / "payloads" / "v3"


@pytest.mark.parametrize(
    ("name", "field", "default"), [("ConversationEvent", "stream", False), ("AgentTask", "stream_topic", None)]
)
def test_v3_payload_decodes_without_the_v4_stream_fields(name: str, field: str, default: object) -> None:
    """Version 4 added ``ConversationEvent.stream`` and ``AgentTask.stream_topic``: a v3 turn asks for no
    stream, a v3 task streams nowhere, and re-encoding keeps every v3 value. Frozen: never edit them."""
    raw = (V3 / f"{name}.json").read_bytes()
    decoded = DECODERS[name].decode(raw)
    assert decoded.v == 3 and getattr(decoded, field) == default  # type: ignore[attr-defined]
    assert decoded.conversation_id == "conv-46" and decoded.tenant == "acme"  # type: ignore[attr-defined]
    original = json.loads(raw)
    assert _written_as(original, json.loads(encode(decoded))) == original


def test_a_v3_reader_ignores_what_v4_adds() -> None:
    """Rule 3 for the new fields: a v4 task with a stream topic reads, for a reader that knows only v3's
    fields, as the same task (the v4-only keys are simply extra)."""
    raw = json.loads((V3 / "AgentTask.json").read_bytes())
    newer = {**raw, "v": 4, "stream_topic": "routeyard.streams"}
    assert task_decoder.decode(json.dumps(newer)).stream_topic == "routeyard.streams"
    assert set(newer) - set(raw) == {"stream_topic"}


V4 = Path(__file__).parent / "payloads" / "v4"


@pytest.mark.parametrize("name", ["RoutingDecision", "AgentTask", "AgentReply", "ConversationResponse"])
def test_v4_payloads_decode_and_keep_every_value(name: str) -> None:
    """Frozen v4 payloads (written by the v4 code, never edit them) decode under v5 with every field
    v5 adds at its default, and re-encode to the same values."""
    raw = (V4 / f"{name}.json").read_bytes()
    decoded = DECODERS[name].decode(raw)
    assert decoded.v == 4 and decoded.conversation_id == "conv-47"  # type: ignore[attr-defined]
    original = json.loads(raw)
    assert _written_as(original, json.loads(encode(decoded))) == original
