"""EchoAgent: a routeyard agent that speaks only Kafka and JSON Schema.

It imports nothing from routeyard. All it needs is what any language has: a Kafka client
(aiokafka here), a JSON Schema validator (``jsonschema``) and the schema files that
``routeyard schema export DIR`` writes. Porting it to Go, Java or TypeScript is a matter of
translating these ~150 lines.

The agent contract, as this file implements it:

1. Consume ``<prefix>agent.<Name>`` in the consumer group ``<prefix>agent.<Name>`` (several
   copies of the process share the partitions), starting from the earliest offset when the
   group has none committed.
2. Each record's value is an ``AgentTask`` (JSON). Validate it.
3. Publish one ``AgentReply`` (JSON) to ``task["reply_topic"]``, keyed by the conversation id,
   copying ``task_id``, ``event_id``, ``conversation_id``, ``tenant``, ``agent`` and ``token``
   (the correlator refuses a reply whose token does not match its task's).
4. Commit the offset only after the broker acknowledged the reply: a crash before that means
   the task is delivered again (at least once). routeyard's correlator recognises a second
   reply to the same ``task_id`` and ignores it, so answering twice is harmless.

Run it (after ``routeyard schema export schemas-json``)::

    python examples/plain_kafka_agent.py --bootstrap 127.0.0.1:9092 --prefix routeyard. \\
        --schemas schemas-json --name EchoAgent
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import signal
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import jsonschema
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition

log = logging.getLogger("plain_kafka_agent")


def load_validator(schemas_dir: Path, name: str) -> jsonschema.protocols.Validator:
    """A validator for ``<schemas_dir>/<name>.schema.json`` (draft 2020-12)."""
    schema = json.loads((Path(schemas_dir) / f"{name}.schema.json").read_text(encoding="utf-8"))
    validator_class = jsonschema.validators.validator_for(schema)
    validator_class.check_schema(schema)
    # FORMAT_CHECKER checks "format": "date-time" only when the rfc3339-validator package is
    # installed (jsonschema skips formats it cannot check), so timestamps are parsed below too.
    return validator_class(schema, format_checker=validator_class.FORMAT_CHECKER)


def parse_time(value: str) -> datetime:
    """An RFC 3339 timestamp (``...Z`` or ``...+02:00``); ``ValueError`` if it is not one."""
    parsed = datetime.fromisoformat(value)
    if parsed.tzinfo is None:
        raise ValueError(f"timestamp without a UTC offset: {value!r}")
    return parsed


def rfc3339_now() -> str:
    """The current time as RFC 3339 in UTC, e.g. ``2025-05-01T12:00:00.123456Z``."""
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


def last_user_message(task: dict[str, Any]) -> str:
    """The text of the latest user message; ``task["messages"]`` is the whole conversation."""
    return next((m["content"] for m in reversed(task["messages"]) if m["role"] == "user"), "")


def answer(task: dict[str, Any]) -> dict[str, Any]:
    """The agent's logic: echo the latest user message. Returns an AgentReply as a dict."""
    reply: dict[str, Any] = {
        "task_id": task["task_id"],
        "event_id": task["event_id"],
        "conversation_id": task["conversation_id"],
        "tenant": task.get("tenant"),
        "agent": task["agent"],
        "token": task.get("token", ""),  # echoed: a reply without its task's token is refused
        "status": "ok",
        "content": f"echo: {last_user_message(task)}",
        "finished_at": rfc3339_now(),
    }
    # Past the deadline routeyard has already reported this agent as timed out: a real agent
    # would skip its expensive work and answer with an error, as this one does.
    if parse_time(task["deadline"]) < datetime.now(UTC):
        reply.update(status="error", content="", error="the task's deadline passed before it was handled")
    return reply


class EchoAgent:
    """One consumer, one producer and the two validators; ``handle`` processes one record."""

    def __init__(self, producer: AIOKafkaProducer, schemas_dir: Path) -> None:
        self._producer = producer
        self._task_schema = load_validator(schemas_dir, "AgentTask")
        self._reply_schema = load_validator(schemas_dir, "AgentReply")

    def read_task(self, value: bytes | None) -> dict[str, Any]:
        """Decode and validate one task; ``ValueError`` or ``ValidationError`` if it is not one."""
        task: dict[str, Any] = json.loads(value or b"")
        self._task_schema.validate(task)
        parse_time(task["deadline"])
        return task

    async def handle(self, record: ConsumerRecord[bytes, bytes]) -> None:
        where = f"{record.topic}[{record.partition}]@{record.offset}"
        try:
            task = self.read_task(record.value)
        except (ValueError, jsonschema.ValidationError) as exc:
            # Logged and skipped (its offset is committed with the rest of the batch), so one bad
            # record cannot block the partition. A production agent would dead-letter it
            # instead: publish the original bytes, the error and topic/partition/offset to a
            # dead-letter topic (routeyard's is <prefix>deadletter, see DeadLetter.schema.json),
            # so nothing is lost silently. routeyard's correlator reports this agent as timed out.
            log.warning("skipping invalid task at %s: %s", where, _short(exc))
            return
        reply = answer(task)
        self._reply_schema.validate(reply)  # our own output: failing here is a bug, so let it raise
        await self._producer.send_and_wait(
            task["reply_topic"], json.dumps(reply).encode(), key=task["conversation_id"].encode()
        )
        log.info("answered task %s (%s)", task["task_id"], where)


async def run(bootstrap: str, prefix: str, schemas_dir: Path, name: str, stop: asyncio.Event) -> None:
    """Serve tasks for agent ``name`` until ``stop`` is set."""
    topic = group = f"{prefix}agent.{name}"
    # enable_idempotence stays off: tansu (the embedded dev broker) rejects idempotent producers.
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=False)
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=group,
        enable_auto_commit=False,  # we commit ourselves, after the reply is published
        auto_offset_reset="earliest",  # a new group starts at the first task, not "now"
        fetch_max_wait_ms=25,  # tansu does not wake a waiting fetch on new data
    )
    agent = EchoAgent(producer, schemas_dir)
    await producer.start()
    try:
        await consumer.start()
        try:
            log.info("%s up on %s", name, topic)
            while not stop.is_set():
                batches = await consumer.getmany(timeout_ms=200, max_records=100)
                for tp, records in batches.items():
                    await _handle_partition(agent, consumer, tp, records)
        finally:
            await consumer.stop()  # leaves the group, so another copy takes over at once
    finally:
        await producer.stop()


async def _handle_partition(
    agent: EchoAgent, consumer: AIOKafkaConsumer, tp: TopicPartition, records: Sequence[ConsumerRecord[bytes, bytes]]
) -> None:
    for record in records:
        await agent.handle(record)
    # The committed offset is the *next* record to read.
    await consumer.commit({tp: records[-1].offset + 1})


def _short(exc: Exception) -> str:
    return exc.message if isinstance(exc, jsonschema.ValidationError) else str(exc)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bootstrap", default="127.0.0.1:9092", help="Kafka bootstrap servers")
    parser.add_argument("--prefix", default="routeyard.", help="routeyard's topic prefix")
    parser.add_argument("--schemas", type=Path, required=True, help="directory of `routeyard schema export`")
    parser.add_argument("--name", default="EchoAgent", help="the agent's name in the catalog")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("aiokafka").setLevel(logging.WARNING)

    async def serve() -> None:
        stop = asyncio.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):  # Ctrl-C: finish the batch, commit, leave
            asyncio.get_running_loop().add_signal_handler(sig, stop.set)
        await run(args.bootstrap, args.prefix, args.schemas, args.name, stop)

    asyncio.run(serve())


if __name__ == "__main__":
    main()
