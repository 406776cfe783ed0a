"""The AsyncAPI 2.6 document of routeyard's topics: which message goes on which topic, keyed by what,
read by which consumer group, written by whom. Built by hand from the same definitions the workers
use (``Topics``, the message Structs, their JSON Schemas), so it cannot drift from them.

In AsyncAPI 2.x terms the application described is routeyard: a channel's ``publish`` operation is
what others send to routeyard (turns, agent replies), its ``subscribe`` operation what routeyard sends
(decisions, tasks, responses, dead letters). Kafka bindings give each record's key and, where
routeyard reads the topic, its consumer group.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import msgspec
from routeyard.schemas.export import mark_datetimes
from routeyard.schemas.messages import SCHEMA_VERSION, WIRE_MESSAGES
from routeyard.schemas.topics import Topics

__all__ = ["asyncapi_document"]

KAFKA_BINDING = "0.4.0"
CONVERSATION_KEY = "the conversation_id (UTF-8): a conversation's records stay in one partition, in order"


def asyncapi_document(topics: Topics, agents: Sequence[tuple[str, str]] = ()) -> dict[str, Any]:
    """The document for ``topics``; ``agents``: (name, topic) of a catalog's agents, each its own
    channel (without them, one ``<prefix>agent.{agent}`` channel stands for all)."""
    refs, schemas = msgspec.json.schema_components(
        list(WIRE_MESSAGES.values()), ref_template="#/components/schemas/{name}"
    )
    mark_datetimes(schemas)
    messages = {name: _message(name, ref) for name, ref in zip(WIRE_MESSAGES, refs, strict=True)}
    return {
        "asyncapi": "2.6.0",
        "info": {
            "title": "routeyard",
            "version": str(SCHEMA_VERSION),
            "description": "Topics, keys, consumer groups and messages of routeyard (JSON, UTF-8, one message "
            f"per record). Topic prefix: {topics.prefix!r}. Message schema version {SCHEMA_VERSION}.",
        },
        "defaultContentType": "application/json",
        "channels": _channels(topics, agents),
        "components": {"messages": messages, "schemas": schemas},
    }


def _channels(topics: Topics, agents: Sequence[tuple[str, str]]) -> dict[str, Any]:
    p = topics.prefix
    channels = {
        topics.conversations: _channel(
            "Turns to route. Services publish one ConversationEvent per new turn.",
            publish=_op("ConversationEvent", "a service sends a turn", group=f"{p}router"),
        ),
        topics.decisions: _channel(
            "Every routing decision, for audit, explain and replay (read without a consumer group).",
            subscribe=_op("RoutingDecision", "the router records a decision"),
        ),
        topics.replies: _channel(
            "Agents' replies; each echoes its task's ids and token.",
            publish=_op("AgentReply", "an agent answers a task", group=f"{p}correlator"),
        ),
        topics.responses: _channel(
            "One response per event (unless the event names its reply_topic): every agent's reply, correlated.",
            subscribe=_op("ConversationResponse", "routeyard answers a turn"),
        ),
        topics.responses_for("{tenant}"): _channel(
            "A tenant's own responses topic, used instead when the router's tenant_response_topics is on.",
            subscribe=_op("ConversationResponse", "routeyard answers a tenant's turn"),
            parameters={"tenant": {"description": "the tenant", "schema": {"type": "string"}}},
        ),
        topics.streams: _channel(
            "Agents' replies as they are written (turns sent with stream=true): best effort, read without a "
            "consumer group; the response stays the full record.",
            subscribe=_op("AgentChunk", "an agent publishes the next piece of its reply"),
        ),
        topics.shadows: _channel(
            "(v5) Shadow variants' replies (tasks with shadow=true): recorded for comparison (routeyard variants "
            "report), read without a consumer group; never sent to a caller.",
            publish=_op("AgentReply", "a shadow variant answers its copy of a task"),
        ),
        topics.dead_letters: _channel(
            "Records that could not be handled, with why and where from; keyed by the original record's key.",
            subscribe=_op("DeadLetter", "a worker dead-letters a record"),
        ),
    }
    for name, topic in agents or [("{agent}", topics.agent("{agent}"))]:
        params = {"agent": {"description": "the agent's catalog name", "schema": {"type": "string"}}}
        channels[topic] = _channel(
            f"Tasks for agent {name}; consume in consumer group {p}agent.{name} and answer on the task's reply_topic.",
            subscribe=_op("AgentTask", f"routeyard hands {name} a task", group=f"{p}agent.{name}"),
            parameters=params if name == "{agent}" else None,
        )
    return channels


def _channel(
    description: str,
    *,
    publish: dict[str, Any] | None = None,
    subscribe: dict[str, Any] | None = None,
    parameters: dict[str, Any] | None = None,
) -> dict[str, Any]:
    channel: dict[str, Any] = {"description": description, "bindings": {"kafka": {"bindingVersion": KAFKA_BINDING}}}
    channel.update({k: v for k, v in (("publish", publish), ("subscribe", subscribe)) if v is not None})
    if parameters:
        channel["parameters"] = parameters
    return channel


def _op(message: str, summary: str, *, group: str | None = None) -> dict[str, Any]:
    verb = "receive" if group else "send"
    op: dict[str, Any] = {
        "operationId": f"{verb}{message}",
        "summary": summary,
        "message": {"$ref": f"#/components/messages/{message}"},
    }
    if group is not None:
        kafka = {"groupId": {"type": "string", "enum": [group]}, "bindingVersion": KAFKA_BINDING}
        op["bindings"] = {"kafka": kafka}
    return op


def _message(name: str, ref: dict[str, Any]) -> dict[str, Any]:
    key = "the original record's key" if name == "DeadLetter" else CONVERSATION_KEY
    doc = (WIRE_MESSAGES[name].__doc__ or "").strip()
    return {
        "name": name,
        "title": name,
        "summary": doc.splitlines()[0] if doc else name,
        "contentType": "application/json",
        "payload": ref,
        "bindings": {"kafka": {"key": {"type": "string", "description": key}, "bindingVersion": KAFKA_BINDING}},
    }
