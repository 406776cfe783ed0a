"""routeyard's wire contracts: msgspec Structs, JSON on the wire, topic names, JSON Schema export.

No I/O here: agents and producers in other languages need only this package (or its exported
JSON Schema).
"""

from routeyard.schemas.codec import (
    DecodeError,
    chunk_decoder,
    dead_letter_decoder,
    decision_decoder,
    encode,
    event_decoder,
    reply_decoder,
    response_decoder,
    task_decoder,
)
from routeyard.schemas.export import export_schemas, json_schema
from routeyard.schemas.messages import (
    SCHEMA_VERSION,
    WIRE_MESSAGES,
    AgentChunk,
    AgentReply,
    AgentTask,
    ConversationEvent,
    ConversationResponse,
    DeadLetter,
    Message,
    Mode,
    PriorReply,
    ResponseStatus,
    RoutingDecision,
    TaskKind,
    Verdict,
    utcnow,
)
from routeyard.schemas.topics import Topics, valid_topic

__all__ = [
    "SCHEMA_VERSION",
    "WIRE_MESSAGES",
    "AgentChunk",
    "AgentReply",
    "AgentTask",
    "ConversationEvent",
    "ConversationResponse",
    "DeadLetter",
    "DecodeError",
    "Message",
    "Mode",
    "PriorReply",
    "ResponseStatus",
    "RoutingDecision",
    "TaskKind",
    "Topics",
    "Verdict",
    "chunk_decoder",
    "dead_letter_decoder",
    "decision_decoder",
    "encode",
    "event_decoder",
    "export_schemas",
    "json_schema",
    "reply_decoder",
    "response_decoder",
    "task_decoder",
    "utcnow",
    "valid_topic",
]
