"""Topic administration: create topics idempotently and wait until metadata shows them.

Errors: a refused creation or deletion raises the aiokafka error for its code (`KafkaError` subclasses
carry `.retriable`); a topic that exists already is fine; metadata that never shows the topics raises
`TimeoutError`.

Metadata is always read for all topics: asking tansu about one named topic auto-creates it.

Replication (``replication_plan``): the settings' ``replication_factor`` (default: 3, or fewer
brokers' count) and ``min_insync_replicas`` (default: 2 from a factor of 3) are checked against the
broker count the cluster reports: more than the brokers raises ``TopicSettingsError`` (one line);
a factor below 3 on a cluster of 3 or more brokers logs a warning at start-up.

Both functions take the ``KafkaSettings`` (TLS and SASL applied, as for every other client) or a
bare bootstrap string (plaintext, for tests and tools).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable, Mapping
from typing import Any, NamedTuple

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, TopicAlreadyExistsError, UnknownTopicOrPartitionError, for_code
from routeyard.consumers.errors import TopicSettingsError
from routeyard.consumers.kafka.aio import security_options
from routeyard.consumers.settings import KafkaSettings

__all__ = ["Replication", "delete_topics", "ensure_topics", "make_admin", "replication_plan"]

log = logging.getLogger(__name__)

SAFE_REPLICATION = 3
"""The replication factor below which a multi-broker cluster gets a warning (and the default)."""


class Replication(NamedTuple):
    factor: int
    configs: dict[str, str]
    """Topic configs to create with (``min.insync.replicas`` when set or implied)."""
    warning: str | None


def replication_plan(factor: int | None, min_insync: int | None, brokers: int) -> Replication:
    """How routeyard's topics are replicated on a cluster of ``brokers`` brokers (see the module doc)."""
    chosen = factor if factor is not None else max(1, min(SAFE_REPLICATION, brokers))
    if chosen > brokers:
        raise TopicSettingsError(
            f"ROUTEYARD_KAFKA__REPLICATION_FACTOR={chosen} is more than the Kafka cluster's {brokers} broker(s):"
            f" set it to {brokers} or less"
        )
    isr = min_insync if min_insync is not None else (2 if chosen >= SAFE_REPLICATION else None)
    if isr is not None and isr > chosen:
        raise TopicSettingsError(
            f"ROUTEYARD_KAFKA__MIN_INSYNC_REPLICAS={isr} is more than the replication factor ({chosen}):"
            " every write would fail; set it to the replication factor or less"
        )
    warning = None
    if brokers >= SAFE_REPLICATION and chosen < SAFE_REPLICATION:
        warning = (
            f"creating routeyard's topics with replication factor {chosen} on a cluster of {brokers} brokers:"
            f" losing one broker loses data; set ROUTEYARD_KAFKA__REPLICATION_FACTOR={SAFE_REPLICATION}"
        )
    return Replication(chosen, {} if isr is None else {"min.insync.replicas": str(isr)}, warning)


async def ensure_topics(
    kafka: KafkaSettings | str,
    topics: Mapping[str, int],
    *,
    timeout: float = 10.0,
    configs: Mapping[str, str] | None = None,
) -> None:
    """Create each topic with its partition count unless it exists, then wait until all are visible;
    ``configs``: topic settings for the new ones (e.g. ``cleanup.policy=compact``).

    An existing topic keeps its partition count and replication, whatever was asked.
    """
    bad = {name: n for name, n in topics.items() if n < 1}
    if bad:
        raise ValueError(f"partition counts must be >= 1: {bad}")
    if not topics:
        return
    settings = _settings(kafka)
    admin = make_admin(settings)
    await admin.start()
    try:
        plan = await _plan(admin, settings)
        settings_ = {**plan.configs, **(configs or {})}
        new = [NewTopic(t, n, plan.factor, topic_configs=settings_) for t, n in topics.items()]
        response = await admin.create_topics(new)
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
    settings = _settings(kafka)
    return AIOKafkaAdminClient(
        bootstrap_servers=settings.bootstrap, client_id=settings.client_id, **security_options(settings)
    )


def _settings(kafka: KafkaSettings | str) -> KafkaSettings:
    return KafkaSettings(bootstrap=kafka) if isinstance(kafka, str) else kafka


async def _plan(admin: AIOKafkaAdminClient, settings: KafkaSettings) -> Replication:
    brokers = len((await admin.describe_cluster())["brokers"])
    plan = replication_plan(settings.replication_factor, settings.min_insync_replicas, brokers)
    if plan.warning:
        log.warning("%s", plan.warning)
    return plan


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


async def group_members(kafka: KafkaSettings | str, groups: Iterable[str]) -> dict[str, int]:
    """How many members each consumer group has now (0: none, or no such group). One group per
    request: tansu answers a request naming a group it does not know with a malformed response."""
    counts: dict[str, int] = {}
    admin = make_admin(kafka)
    await admin.start()
    quiet = logging.getLogger("aiokafka.conn")
    level = quiet.level
    quiet.setLevel(logging.CRITICAL)  # tansu's malformed answer for an unknown group is expected here
    try:
        for name in groups:
            counts[name] = await _members(admin, name)
    finally:
        quiet.setLevel(level)
        await admin.close()
    return counts


async def _members(admin: AIOKafkaAdminClient, group: str) -> int:
    try:
        responses = await admin.describe_consumer_groups([group])
    except KafkaError:  # an unknown group, on tansu
        return 0
    found = [g for response in responses for g in response.groups if g[1] == group and not g[0]]
    return len(found[0][5]) if found else 0
