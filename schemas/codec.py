"""Encoders and decoders, built once at import. JSON on the wire, UTF-8."""

from __future__ import annotations

from typing import Any, TypeVar

import msgspec
from routeyard.schemas.messages import (
    AgentChunk,
    AgentReply,
    AgentTask,
    ConversationEvent,
    ConversationResponse,
    DeadLetter,
    RoutingDecision,
)

T = TypeVar("T")

_encoder = msgspec.json.Encoder()

event_decoder = msgspec.json.Decoder(ConversationEvent)
decision_decoder = msgspec.json.Decoder(RoutingDecision)
task_decoder = msgspec.json.Decoder(AgentTask)
reply_decoder = msgspec.json.Decoder(AgentReply)
response_decoder = msgspec.json.Decoder(ConversationResponse)
dead_letter_decoder = msgspec.json.Decoder(DeadLetter)
chunk_decoder = msgspec.json.Decoder(AgentChunk)

DecodeError = msgspec.DecodeError
"""Raised for malformed JSON, wrong types or missing required fields (a ValidationError too)."""


def encode(message: Any) -> bytes:
    return _encoder.encode(message)
