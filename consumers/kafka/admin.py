"""Topic administration: create topics idempotently and wait until metadata shows them.

Errors: a refused creation or deletion raises the aiokafka error for its code (`KafkaError` subclasses
carry `.retriable`); a topic that exists already is fine; metadata that never shows the topics raises
`TimeoutError`.

Metadata is always read for all topics: asking tansu about one named topic auto-creates it.

Both functions take the ``KafkaSettings`` (TLS and SASL applied, as for every other client) or a
bare bootstrap string (plaintext, for tests and tools).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable, Mapping
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError, UnknownTopicOrPartitionError, for_code
from routeyard.consumers.kafka.aio import security_options
from routeyard.consumers.settings import KafkaSettings

__all__ = ["delete_topics", "ensure_topics", "make_admin"]


async def ensure_topics(
    kafka: KafkaSettings | str, topics: Mapping[str, int], *, replication: int = 1, timeout: float = 10.0
) -> None:
    """Create each topic with its partition count unless it exists, then wait until all are visible.

    An existing topic keeps its partition count, whatever was asked.
    """
    bad = {name: n for name, n in topics.items() if n < 1}
    if bad:
        raise ValueError(f"partition counts must be >= 1: {bad}")
    if not topics:
        return
    admin = make_admin(kafka)
    await admin.start()
    try:
        response = await admin.create_topics([NewTopic(t, n, replication) for t, n in topics.items()])
        for name, code, message in _failures(response.topic_errors):
            if for_code(code) is not TopicAlreadyExistsError:  # tansu answers 36, as Kafka does
                raise for_code(code)(f"creating topic {name!r}: {message}")
        await _wait_visible(admin, set(topics), timeout)
    finally:
        await admin.close()


async def delete_topics(kafka: KafkaSettings | str, names: Iterable[str]) -> None:
    """Delete the named topics; one that does not exist is ignored."""
    names = list(names)
    if not names:
        return
    admin = make_admin(kafka)
    await admin.start()
    try:
        response = await admin.delete_topics(names)
    finally:
        await admin.close()
    for name, code, _ in _failures(response.topic_error_codes):
        if for_code(code) is not UnknownTopicOrPartitionError:
            raise for_code(code)(f"deleting topic {name!r}")


def make_admin(kafka: KafkaSettings | str) -> AIOKafkaAdminClient:
    settings = KafkaSettings(bootstrap=kafka) if isinstance(kafka, str) else kafka
    return AIOKafkaAdminClient(
        bootstrap_servers=settings.bootstrap, client_id=settings.client_id, **security_options(settings)
    )


def _failures(entries: Iterable[tuple[Any, ...]]) -> Iterable[tuple[str, int, str | None]]:
    for entry in entries:
        if entry[1]:
            yield entry[0], entry[1], entry[2] if len(entry) > 2 else None


async def _wait_visible(admin: AIOKafkaAdminClient, names: set[str], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        described = await admin.describe_topics()  # all topics: never auto-creates
        ready = {t["topic"] for t in described if t["error_code"] == 0 and t["partitions"]}
        missing = names - ready
        if not missing:
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"topics not in metadata after {timeout:.0f}s: {sorted(missing)}")
        await asyncio.sleep(0.05)
