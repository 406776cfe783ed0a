"""The wire contract: round trips, decode errors, unknown fields, base64 bytes, exported JSON Schema."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st
from jsonschema import Draft202012Validator
from routeyard.schemas import (
    SCHEMA_VERSION,
    WIRE_MESSAGES,
    AgentChunk,
    AgentReply,
    AgentTask,
    ConversationEvent,
    ConversationResponse,
    DeadLetter,
    DecodeError,
    Message,
    PriorReply,
    RoutingDecision,
    Topics,
    chunk_decoder,
    dead_letter_decoder,
    decision_decoder,
    encode,
    event_decoder,
    export_schemas,
    json_schema,
    reply_decoder,
    response_decoder,
    task_decoder,
)

T0 = datetime(2024, 3, 1, 12, 0, 0, tzinfo=UTC)
T1 = datetime(2024, 3, 1, 12, 0, 1, 250000, tzinfo=UTC)

REPLY = AgentReply(
    task_id="ev1:0:WeatherAgent",
    event_id="ev1",
    conversation_id="c1",
    agent="WeatherAgent",
    status="error",
    content="partial text",
    error="upstream 503",
    tenant="acme",
    finished_at=T1,
    token="5f0c2a9e1b7d4c3a8e6f0b1d2c3a4e5f",
    retriable=False,
    v=7,
    verdict="changed",
    messages=[Message(role="user", content="[email]")],
    replies=[PriorReply(agent="WeatherAgent", status="ok", content="x")],
    notes={"email:1": "a@b.c"},
    awaiting_input=True,
)

# Every field set to a non-default value, so a round trip exercises all of them.
SAMPLES: dict[str, msgspec.Struct] = {
    "ConversationEvent": ConversationEvent(
        event_id="ev1",
        conversation_id="c1",
        messages=[Message(role="system", content="be brief"), Message(role="user", content="Weather? ☀ ü")],
        tenant="acme",
        agents=["WeatherAgent"],
        reply_topic="svc.responses",
        mode="sequential",
        created_at=T0,
        metadata={"trace": "abc"},
        v=7,
        stream=True,
    ),
    "RoutingDecision": RoutingDecision(
        event_id="ev1",
        conversation_id="c1",
        routes=["ChitChatAgent"],
        mode="sequential",
        engine="vllm",
        tenant="acme",
        selected=["WeatherAgent"],
        dropped=["HotelAgent"],
        raw_output='{"route": []}',
        latency_ms=12.5,
        fallback_reason="engine failed: x",
        default_used=True,
        catalog_version="abc123",
        model="plano-4b",
        confidence=0.25,
        scores={"WeatherAgent": 0.25},
        worker="router-a:42",
        abstained=True,
        circuit_open=["WeatherAgent"],
        decided_at=T0,
        v=7,
        reason="WeatherAgent 0.250 >= min_similarity 0.10",
        variants={"WeatherAgent": "v2"},
        variant_notes={"WeatherAgent": "rolled back: v3 error rate 0.40 > 0.20; moved to v2"},
        shadows={"WeatherAgent": ["v4"]},
        catalog_source="topic",
        registered=["WeatherAgent"],
        continuation="WeatherAgent",
    ),
    "AgentTask": AgentTask(
        task_id="ev1:1:RestaurantAgent",
        event_id="ev1",
        conversation_id="c1",
        agent="RestaurantAgent",
        messages=[
            Message(role="user", content="book"),
            Message(role="assistant", content="ok", name="X", awaiting_input=True),
        ],
        reply_topic="ry.replies",
        deadline=T1,
        tenant="acme",
        prior_replies=[PriorReply(agent="WeatherAgent", status="error", content="boom")],
        step=1,
        attempt=3,
        metadata={"k": "v"},
        token="5f0c2a9e1b7d4c3a8e6f0b1d2c3a4e5f",
        v=7,
        stream_topic="ry.streams",
        variant="v2",
        shadow=True,
        kind="input_filter",
        filter_notes={"n": "v"},
    ),
    "AgentReply": REPLY,
    "AgentChunk": AgentChunk(
        task_id="ev1:1:RestaurantAgent@2",
        event_id="ev1",
        conversation_id="c1",
        agent="RestaurantAgent",
        attempt=2,
        seq=3,
        text="a table for two ☀",
        tenant="acme",
        sent_at=T1,
        v=7,
    ),
    "ConversationResponse": ConversationResponse(
        event_id="ev1",
        conversation_id="c1",
        status="partial",
        tenant="acme",
        routes=["WeatherAgent", "RestaurantAgent", "FlightAgent"],
        replies=[REPLY],
        timed_out=["RestaurantAgent"],
        skipped=["FlightAgent"],
        created_at=T0,
        responded_at=T1,
        v=7,
        reason="not a real rejection: every field set",
        variants={"WeatherAgent": "v2"},
        filters={"Pii": "changed"},
    ),
    "DeadLetter": DeadLetter(
        original=b"\x00\xff{not json",
        error="malformed",
        stage="decode",
        source_topic="ry.conversations",
        source_partition=3,
        source_offset=42,
        key=b"c1",
        error_type="DecodeError",
        failed_at=T1,
        original_size=70_000,
        original_sha256="9f" * 32,
        truncated=True,
        v=7,
    ),
}

DECODERS: dict[str, msgspec.json.Decoder[Any]] = {
    "ConversationEvent": event_decoder,
    "RoutingDecision": decision_decoder,
    "AgentTask": task_decoder,
    "AgentReply": reply_decoder,
    "AgentChunk": chunk_decoder,
    "ConversationResponse": response_decoder,
    "DeadLetter": dead_letter_decoder,
}

NAMES = sorted(WIRE_MESSAGES)


def _required(name: str) -> list[str]:
    return [f.encode_name for f in msgspec.structs.fields(WIRE_MESSAGES[name]) if f.required]


def _as_dict(name: str) -> dict[str, Any]:
    result: dict[str, Any] = json.loads(encode(SAMPLES[name]))
    return result


def test_every_wire_message_has_a_sample_and_a_decoder() -> None:
    assert set(SAMPLES) == set(WIRE_MESSAGES)
    assert set(DECODERS) == set(WIRE_MESSAGES)
    for name, sample in SAMPLES.items():
        assert type(sample) is WIRE_MESSAGES[name]


@pytest.mark.parametrize("name", NAMES)
def test_samples_set_every_field(name: str) -> None:
    sample = SAMPLES[name]
    for field in msgspec.structs.fields(type(sample)):
        value = getattr(sample, field.name)
        if field.default is not msgspec.NODEFAULT:
            assert value != field.default, field.name
        if field.default_factory is not msgspec.NODEFAULT:
            assert value != field.default_factory(), field.name


@pytest.mark.parametrize("name", NAMES)
def test_round_trip(name: str) -> None:
    sample = SAMPLES[name]
    decoded = DECODERS[name].decode(encode(sample))
    assert decoded == sample
    assert type(decoded) is type(sample)
    assert encode(decoded) == encode(sample)


@pytest.mark.parametrize("name", NAMES)
def test_version_defaults_to_schema_version(name: str) -> None:
    payload = {k: v for k, v in _as_dict(name).items() if k in _required(name)}
    assert DECODERS[name].decode(json.dumps(payload)).v == SCHEMA_VERSION


def test_datetimes_are_rfc3339_utc_on_the_wire() -> None:
    payload = _as_dict("AgentReply")
    assert payload["finished_at"] == "2024-03-01T12:00:01.250000Z"


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("raw", [b"", b"{", b"not json", b"[]", b"null", b'"event"', b"{}}"])
def test_malformed_json_is_a_decode_error(name: str, raw: bytes) -> None:
    with pytest.raises(DecodeError):
        DECODERS[name].decode(raw)


@pytest.mark.parametrize("name", NAMES)
def test_missing_required_field_is_a_decode_error(name: str) -> None:
    required = _required(name)
    assert required
    for field in required:
        payload = _as_dict(name)
        del payload[field]
        with pytest.raises(DecodeError, match=f"missing required field `{field}`"):
            DECODERS[name].decode(json.dumps(payload))


@pytest.mark.parametrize(
    ("name", "field", "value", "where"),
    [
        ("ConversationEvent", "event_id", 17, "$.event_id"),
        ("ConversationEvent", "mode", 2, "$.mode"),
        ("ConversationEvent", "messages", "hi", "$.messages"),
        ("ConversationEvent", "messages", [{"role": "robot", "content": "x"}], "$.messages[0].role"),
        ("ConversationEvent", "messages", [{"role": "user"}], "$.messages[0]"),
        ("ConversationEvent", "created_at", "yesterday", "$.created_at"),
        ("ConversationEvent", "metadata", {"k": 1}, "$.metadata"),
        ("RoutingDecision", "routes", "WeatherAgent", "$.routes"),
        ("RoutingDecision", "latency_ms", "fast", "$.latency_ms"),
        ("AgentTask", "deadline", 12, "$.deadline"),
        ("AgentTask", "step", "1", "$.step"),
        ("AgentTask", "prior_replies", [{"agent": "A", "status": "ok"}], "$.prior_replies[0]"),
        ("AgentReply", "content", None, "$.content"),
        ("AgentReply", "status", True, "$.status"),
        ("ConversationResponse", "replies", [{}], "$.replies[0]"),
        ("ConversationResponse", "status", 1, "$.status"),
        ("DeadLetter", "source_offset", "42", "$.source_offset"),
        ("DeadLetter", "original", "not base64!", "$.original"),
        ("DeadLetter", "original", 5, "$.original"),
    ],
)
def test_wrong_type_is_a_decode_error(name: str, field: str, value: Any, where: str) -> None:
    payload = _as_dict(name)
    payload[field] = value
    with pytest.raises(DecodeError) as info:
        DECODERS[name].decode(json.dumps(payload))
    assert where in str(info.value)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("version", [2**70, -1, 10**7])
def test_absurd_schema_version_is_a_decode_error(name: str, version: int) -> None:
    payload = _as_dict(name)
    payload["v"] = version
    with pytest.raises(DecodeError) as info:
        DECODERS[name].decode(json.dumps(payload))
    assert "$.v" in str(info.value)


def test_decode_error_is_a_msgspec_error_catchable_as_one_type() -> None:
    assert issubclass(msgspec.ValidationError, DecodeError)


@pytest.mark.parametrize("name", NAMES)
def test_unknown_fields_are_ignored(name: str) -> None:
    payload = _as_dict(name)
    payload["added_in_v9"] = {"nested": [1, 2, {"x": None}]}
    payload["another"] = "value"
    assert DECODERS[name].decode(json.dumps(payload)) == SAMPLES[name]


def test_unknown_fields_ignored_in_nested_messages() -> None:
    payload = _as_dict("ConversationResponse")
    payload["replies"][0]["latency_ms"] = 12
    payload["replies"][0]["tokens"] = {"in": 1}
    assert response_decoder.decode(json.dumps(payload)) == SAMPLES["ConversationResponse"]


def test_dead_letter_bytes_are_base64_in_json() -> None:
    payload = _as_dict("DeadLetter")
    assert payload["original"] == base64.b64encode(b"\x00\xff{not json").decode()
    assert payload["key"] == base64.b64encode(b"c1").decode()


@given(original=st.binary(max_size=512), key=st.none() | st.binary(max_size=64))
def test_dead_letter_original_bytes_round_trip(original: bytes, key: bytes | None) -> None:
    letter = msgspec.structs.replace(SAMPLES["DeadLetter"], original=original, key=key)
    decoded = dead_letter_decoder.decode(encode(letter))
    assert decoded.original == original
    assert decoded.key == key


def test_dead_letter_written_by_another_language() -> None:
    raw = json.dumps(
        {
            "original": base64.b64encode(b'{"event_id": 1}').decode(),
            "error": "bad",
            "stage": "validate",
            "source_topic": "t",
            "source_partition": 0,
            "source_offset": 9,
        }
    )
    letter = dead_letter_decoder.decode(raw)
    assert letter.original == b'{"event_id": 1}'
    assert letter.key is None


# -- JSON Schema export -------------------------------------------------------------------------


def test_export_writes_one_schema_file_per_message(tmp_path: Path) -> None:
    written = export_schemas(tmp_path / "schemas")
    assert sorted(p.name for p in written) == sorted(f"{n}.schema.json" for n in WIRE_MESSAGES)
    assert sorted(p.name for p in (tmp_path / "schemas").iterdir()) == sorted(p.name for p in written)
    for path in written:
        schema = json.loads(path.read_text())
        Draft202012Validator.check_schema(schema)
        assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
        assert schema["title"] == path.name.removesuffix(".schema.json")
        assert schema["x-routeyard-schema-version"] == SCHEMA_VERSION


def test_export_is_deterministic(tmp_path: Path) -> None:
    first = {p.name: p.read_text() for p in export_schemas(tmp_path / "a")}
    second = {p.name: p.read_text() for p in export_schemas(tmp_path / "b")}
    assert first == second


def _validator(tmp_path: Path, name: str) -> Draft202012Validator:
    export_schemas(tmp_path)
    return Draft202012Validator(json.loads((tmp_path / f"{name}.schema.json").read_text()))


@pytest.mark.parametrize("name", NAMES)
def test_encoded_payload_validates_against_exported_schema(tmp_path: Path, name: str) -> None:
    validator = _validator(tmp_path, name)
    errors = [e.message for e in validator.iter_errors(json.loads(encode(SAMPLES[name])))]
    assert errors == []


@pytest.mark.parametrize("name", NAMES)
def test_minimal_payload_validates_against_exported_schema(tmp_path: Path, name: str) -> None:
    validator = _validator(tmp_path, name)
    minimal = {k: v for k, v in _as_dict(name).items() if k in _required(name)}
    message = DECODERS[name].decode(json.dumps(minimal))
    assert [e.message for e in validator.iter_errors(json.loads(encode(message)))] == []
    assert [e.message for e in validator.iter_errors(minimal)] == []


@pytest.mark.parametrize("name", NAMES)
def test_exported_schema_rejects_what_the_decoder_rejects(tmp_path: Path, name: str) -> None:
    validator = _validator(tmp_path, name)
    for field in _required(name):
        payload = _as_dict(name)
        del payload[field]
        assert not validator.is_valid(payload), field


def test_exported_schema_rejects_wrong_types(tmp_path: Path) -> None:
    validator = _validator(tmp_path, "DeadLetter")
    payload = _as_dict("DeadLetter")
    payload["source_offset"] = "42"
    assert not validator.is_valid(payload)


def test_json_schema_matches_exported_file(tmp_path: Path) -> None:
    export_schemas(tmp_path)
    for name in WIRE_MESSAGES:
        assert json.loads((tmp_path / f"{name}.schema.json").read_text()) == json_schema(name)


def _properties(schema: Any, where: str) -> list[tuple[str, Any]]:
    """Every (path, property) of every object in a JSON Schema, nested definitions included."""
    found = [(f"{where}.{name}", prop) for name, prop in schema.get("properties", {}).items()]
    for name, definition in schema.get("$defs", {}).items():
        found += _properties(definition, name)
    return found


@pytest.mark.parametrize("name", sorted(WIRE_MESSAGES))
def test_every_exported_field_has_a_description(tmp_path: Path, name: str) -> None:
    """A developer in another language reads the schema, not our code: every field says what it is."""
    export_schemas(tmp_path)
    schema = json.loads((tmp_path / f"{name}.schema.json").read_text())
    properties = _properties(schema, name)
    assert properties
    assert [path for path, prop in properties if len(prop.get("description", "").strip()) < 10] == []


def test_event_messages_say_they_are_the_new_turn_not_the_history() -> None:
    messages = json_schema("ConversationEvent")["$defs"]["ConversationEvent"]["properties"]["messages"]
    assert messages["description"].startswith("Only the new turn")


def test_chunk_seq_is_never_negative_and_text_is_required() -> None:
    payload = _as_dict("AgentChunk")
    with pytest.raises(DecodeError, match="seq"):
        chunk_decoder.decode(json.dumps({**payload, "seq": -1}))
    with pytest.raises(DecodeError, match="text"):
        chunk_decoder.decode(json.dumps({k: v for k, v in payload.items() if k != "text"}))


def test_streams_is_a_core_topic() -> None:
    assert Topics(prefix="acme.").streams == "acme.streams"
    assert "acme.streams" in Topics(prefix="acme.").core()
