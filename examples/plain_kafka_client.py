"""Ask routeyard a question with only a Kafka client and JSON Schema.

Like ``plain_kafka_agent.py``, this imports nothing from routeyard: it is the producer side of
the contract, as a service in any language would write it.

1. Build a ``ConversationEvent`` (one user turn) and validate it against its schema.
2. Publish it to ``<prefix>conversations``, keyed by the conversation id, so the turns of one
   conversation stay in order on one partition.
3. Read ``<prefix>responses`` until the ``ConversationResponse`` with the same ``event_id``
   arrives; validate it and return it.

Run it (after ``routeyard schema export schemas-json``)::

    python examples/plain_kafka_client.py --bootstrap 127.0.0.1:9092 --prefix routeyard. \\
        --schemas schemas-json conv-1 "please echo this"
"""

from __future__ import annotations

import argparse
import asyncio
import json
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import jsonschema
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition


def load_validator(schemas_dir: Path, name: str) -> jsonschema.protocols.Validator:
    """A validator for ``<schemas_dir>/<name>.schema.json`` (draft 2020-12)."""
    schema = json.loads((Path(schemas_dir) / f"{name}.schema.json").read_text(encoding="utf-8"))
    validator_class = jsonschema.validators.validator_for(schema)
    validator_class.check_schema(schema)
    # FORMAT_CHECKER checks "format": "date-time" when the rfc3339-validator package is installed.
    return validator_class(schema, format_checker=validator_class.FORMAT_CHECKER)


def conversation_event(conversation_id: str, text: str, mode: str | None = None) -> dict[str, Any]:
    """One user turn. routeyard adds the conversation's earlier turns from its own store."""
    event: dict[str, Any] = {
        "event_id": uuid.uuid4().hex,  # unique per turn: publishing it twice routes it once
        "conversation_id": conversation_id,
        "messages": [{"role": "user", "content": text}],
        "created_at": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
    }
    if mode is not None:  # "sequential": each agent sees the earlier agents' replies
        event["mode"] = mode
    return event


async def ask(
    bootstrap: str,
    prefix: str,
    schemas_dir: Path,
    conversation_id: str,
    text: str,
    timeout: float,
    *,
    mode: str | None = None,
) -> dict[str, Any]:
    """Publish one turn and return its ConversationResponse; ``TimeoutError`` after ``timeout`` s.

    ``mode`` ("parallel" or "sequential") overrides the router's multi-intent mode for this turn.
    """
    event = conversation_event(conversation_id, text, mode)
    load_validator(schemas_dir, "ConversationEvent").validate(event)
    async with asyncio.timeout(timeout):
        await _publish(bootstrap, f"{prefix}conversations", event)
        return await _await_response(
            bootstrap, f"{prefix}responses", event["event_id"], load_validator(schemas_dir, "ConversationResponse")
        )


async def _publish(bootstrap: str, topic: str, event: dict[str, Any]) -> None:
    # enable_idempotence stays off: tansu (the embedded dev broker) rejects idempotent producers.
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=False)
    await producer.start()
    try:
        await producer.send_and_wait(topic, json.dumps(event).encode(), key=event["conversation_id"].encode())
    finally:
        await producer.stop()


async def _await_response(
    bootstrap: str, topic: str, event_id: str, validator: jsonschema.protocols.Validator
) -> dict[str, Any]:
    # No consumer group: this reader wants every partition of the responses topic and must not
    # take partitions away from other readers, so it assigns them itself and commits nothing.
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        fetch_max_wait_ms=25,
    )
    await consumer.start()
    try:
        partitions = await _partitions(consumer, topic)
        consumer.assign(partitions)
        # Read from the beginning and match on event_id. A long-lived client would rather seek
        # to the end *before* publishing, but tansu, the embedded dev broker, answers ListOffsets
        # wrongly when the last write held several records, so end offsets (seek_to_end,
        # auto_offset_reset="latest") cannot be trusted there. Reading from the start is always
        # correct, whenever the response was written, and cheap on a dev broker. On a busy
        # production topic, seek to the end first, or give each client its own reply topic
        # (ConversationEvent.reply_topic).
        await consumer.seek_to_beginning(*partitions)
        while True:
            batches = await consumer.getmany(timeout_ms=200, max_records=500)
            for record in (r for records in batches.values() for r in records):
                response = _json_or_none(record.value)
                if isinstance(response, dict) and response.get("event_id") == event_id:
                    validator.validate(response)
                    return response
    finally:
        await consumer.stop()


def _json_or_none(value: bytes | None) -> Any:
    """A record's JSON value; None for one that is not JSON (other writers share the topic)."""
    try:
        return json.loads(value or b"null")
    except ValueError:
        return None


async def _partitions(consumer: AIOKafkaConsumer, topic: str) -> list[TopicPartition]:
    while not (ids := consumer.partitions_for_topic(topic)):
        await consumer.topics()  # refreshes the cluster metadata (all topics: creates none)
        await asyncio.sleep(0.1)
    return [TopicPartition(topic, p) for p in sorted(ids)]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bootstrap", default="127.0.0.1:9092", help="Kafka bootstrap servers")
    parser.add_argument("--prefix", default="routeyard.", help="routeyard's topic prefix")
    parser.add_argument("--schemas", type=Path, required=True, help="directory of `routeyard schema export`")
    parser.add_argument("--timeout", type=float, default=60.0)
    parser.add_argument("--mode", choices=["parallel", "sequential"], help="multi-intent mode for this turn")
    parser.add_argument("conversation")
    parser.add_argument("text")
    args = parser.parse_args(argv)
    response = asyncio.run(
        ask(args.bootstrap, args.prefix, args.schemas, args.conversation, args.text, args.timeout, mode=args.mode)
    )
    print(json.dumps(response, indent=2, ensure_ascii=False))


if __name__ == "__main__":
    main()
