"""The bus in memory: a broker's behaviour without a broker, for tests and agent authors.

Topics have partitions; a keyed record goes to the partition Kafka's default partitioner picks
(murmur2), so a conversation stays on one partition, in order. Consumer groups keep committed
offsets and share the partitions of their topics among their live members (round robin, in the
order they joined); a member gives a partition up at its next fetch (its revoked callback runs
first) and the next owner starts at the committed offset, so what a stopped member did not
commit is delivered again. A fetch waits until records arrive or its timeout passes: publishes,
joins, leaves and commits wake it. ``idle()`` waits until every group has committed everything;
``quiet()`` until every member of a group waits in a fetch with nothing to read (its handlers
may still be running: an agent's tasks).

    bus = MemoryBus()
    async with RouteyardClient(bus=bus) as client: ...
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Collection, Iterable, Mapping, Sequence

from aiokafka.errors import MessageSizeTooLargeError
from routeyard.consumers.kafka.bus import Revoked
from routeyard.consumers.kafka.records import MAX_REQUEST_SIZE, Outgoing, Partition, Record, fits, partition_of

__all__ = ["MemoryBus"]

log = logging.getLogger(__name__)


class MemoryBus:
    bootstrap = "memory"

    def __init__(self, *, partitions: int = 1) -> None:
        """``partitions``: the count of a topic created by publishing to it (auto-creation)."""
        self._auto = partitions
        self._logs: dict[str, list[list[Record]]] = {}
        self._groups: dict[str, _Group] = {}
        self._changed = asyncio.Event()
        """Set by what a fetch may read or own: a publish, a member joining or leaving, a revoke."""
        self._watched = asyncio.Event()
        """Set by that and by what only ``idle``/``quiet``/``joined`` watch: commits, parking. Fetches
        do not wake for those: with every fetch woken by every fetch parking, a publish cost a
        wake-up per pair of consumers."""
        self._parked: set[MemoryConsumer] = set()
        """Group members whose last fetch found nothing to read, with nothing published since."""

    def producer(self) -> MemoryProducer:
        return MemoryProducer(self)

    def consumer(self, group: str | None, topics: Sequence[str] = ()) -> MemoryConsumer:
        member = MemoryConsumer(self, self._groups.setdefault(group, _Group()) if group else None)
        if topics:
            member.subscribe(topics)
        return member

    async def create_topics(self, topics: Mapping[str, int]) -> None:
        bad = {name: n for name, n in topics.items() if n < 1}
        if bad:
            raise ValueError(f"partition counts must be >= 1: {bad}")
        for name, count in topics.items():
            self._logs.setdefault(name, [[] for _ in range(count)])

    def records(self, topic: str) -> list[Record]:
        """Every record of ``topic``, partition by partition, each in offset order."""
        return [r for log in self._logs.get(topic, []) for r in log]

    def partitions(self, topic: str) -> list[Partition]:
        return [Partition(topic, p) for p in range(len(self._logs.get(topic, ())))]

    def end(self, partition: Partition) -> int:
        return len(self.log(partition))

    def log(self, partition: Partition) -> list[Record]:
        logs = self._logs.get(partition.topic, [])
        return logs[partition.partition] if partition.partition < len(logs) else []

    async def idle(self, timeout: float = 10.0) -> None:
        """Wait until every consumer group with live members has committed every record of its
        topics, and still has after the tasks that were ready ran (a handler about to publish)."""
        async with asyncio.timeout(timeout):
            while True:
                if self._settled():
                    for _ in range(50):  # yield, not sleep: let every ready task take its turn
                        await asyncio.sleep(0)
                    if self._settled():
                        return
                await self._watch()

    drain = idle

    async def quiet(self, timeout: float = 10.0) -> None:
        """Wait until every live group member waits in a fetch with nothing to read."""
        async with asyncio.timeout(timeout):
            while not all(m in self._parked for g in self._groups.values() for m in g.members):
                await self._watch()

    def park(self, member: MemoryConsumer) -> None:
        if member not in self._parked:
            self._parked.add(member)
            self._wake_watchers()

    async def joined(self, group: str, members: int, timeout: float = 10.0) -> None:
        """Wait until ``group`` has ``members`` live members."""
        async with asyncio.timeout(timeout):
            while len(self._groups[group].members if group in self._groups else ()) < members:
                await self._watch()

    def _settled(self) -> bool:
        for group in self._groups.values():
            for p in group.partitions(self):
                if group.members and group.committed.get(p, 0) < self.end(p):
                    return False
        return True

    def append(self, messages: Iterable[Outgoing], *, limit: int = MAX_REQUEST_SIZE) -> list[Record]:
        """Publish: all or none (each record within ``limit`` bytes); returns the records written."""
        messages = list(messages)
        for m in messages:
            if not fits(m, limit):
                raise MessageSizeTooLargeError(f"a record for {m.topic} is larger than {limit} bytes")
        now = int(time.time() * 1000)
        written = []
        for m in messages:
            logs = self._logs.setdefault(m.topic, [[] for _ in range(self._auto)])
            key = m.key.encode() if m.key is not None else None
            part = partition_of(key, len(logs)) if key is not None else random.randrange(len(logs))
            log_ = logs[part]
            headers = tuple(m.headers or ())
            log_.append(Record(m.topic, part, len(log_), key, m.value, headers, now))
            written.append(log_[-1])
        self.notify()
        return written

    def notify(self) -> None:
        """Wake every waiting fetch (and ``idle``): something was published, joined or left."""
        self._parked.clear()
        self._wake()

    def _wake(self) -> None:
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()
        self._wake_watchers()

    def _wake_watchers(self) -> None:
        watched, self._watched = self._watched, asyncio.Event()
        watched.set()

    def committed(self) -> None:
        """A commit: what ``idle`` waits for, and nothing a fetch reads."""
        self._wake_watchers()

    async def _watch(self) -> None:
        await self._watched.wait()

    async def changed(self, timeout: float | None) -> None:
        """Until the next ``notify`` or ``timeout`` s. (``asyncio.timeout``, not ``wait_for``: on 3.11
        ``wait_for`` may swallow a cancellation that races the event, and a reader never stops.)"""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await self._changed.wait()


class _Group:
    def __init__(self) -> None:
        self.members: list[MemoryConsumer] = []
        self.committed: dict[Partition, int] = {}
        self.owner: dict[Partition, MemoryConsumer] = {}

    def partitions(self, bus: MemoryBus) -> list[Partition]:
        topics = sorted({t for m in self.members for t in m.topics})
        return [p for t in topics for p in bus.partitions(t)]

    def share(self, bus: MemoryBus, member: MemoryConsumer) -> set[Partition]:
        """The partitions ``member`` should hold: each topic's, round robin among its subscribers."""
        mine: set[Partition] = set()
        for topic in member.topics:
            readers = [m for m in self.members if topic in m.topics]
            index = readers.index(member)
            mine.update(p for p in bus.partitions(topic) if p.partition % len(readers) == index)
        return mine


class MemoryProducer:
    def __init__(self, bus: MemoryBus) -> None:
        self._bus = bus

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        return None

    async def publish(self, messages: Iterable[Outgoing]) -> None:
        self._bus.append(messages)


class MemoryConsumer:
    def __init__(self, bus: MemoryBus, group: _Group | None) -> None:
        self._bus = bus
        self._group = group
        self.topics: tuple[str, ...] = ()
        self._on_revoked: Revoked | None = None
        self._started = False
        self._held: set[Partition] = set()
        self._positions: dict[Partition, int] = {}
        self._paused: set[Partition] = set()

    async def start(self) -> None:
        self._started = True
        self._join()

    async def stop(self) -> None:
        """Leave the group: what was not committed goes to the next owner again."""
        self._started = False
        if self._group is not None and self in self._group.members:
            self._group.members.remove(self)
            for p in self._held:
                self._group.owner.pop(p, None)
        self._held.clear()
        self._bus.notify()

    def subscribe(self, topics: Sequence[str], on_revoked: Revoked | None = None) -> None:
        self.topics, self._on_revoked = tuple(topics), on_revoked
        self._join()

    def _join(self) -> None:
        if self._started and self._group is not None and self.topics and self not in self._group.members:
            self._group.members.append(self)
            self._bus.notify()

    def subscribed(self) -> bool:
        return bool(self.topics)

    async def fetch(self, *, max_records: int, timeout_ms: int) -> list[Record]:
        deadline = time.monotonic() + timeout_ms / 1000
        while True:
            await self._rebalance()
            records = self._take(max_records)
            left = deadline - time.monotonic()
            if not records and self._group is not None:
                self._bus.park(self)
            if records or left <= 0:
                return records
            await self._bus.changed(left)

    async def _rebalance(self) -> None:
        group = self._group
        if group is None or self not in group.members:
            return
        share = group.share(self._bus, self)
        revoked = self._held - share
        if revoked:
            if self._on_revoked is not None:
                await self._on_revoked(set(revoked))
            for p in revoked:
                group.owner.pop(p, None)
                self._positions.pop(p, None)
            self._held -= revoked
            self._paused -= revoked
            self._bus.notify()
        for p in share - self._held:
            if p not in group.owner:  # the previous owner gave it up
                group.owner[p] = self
                self._held.add(p)
                self._positions[p] = group.committed.get(p, 0)

    def _take(self, max_records: int) -> list[Record]:
        out: list[Record] = []
        for p in sorted(self._held - self._paused):
            at = self._positions.get(p, 0)
            taken = self._bus.log(p)[at : at + max_records - len(out)]
            self._positions[p] = at + len(taken)
            out += taken
            if len(out) >= max_records:
                break
        return out

    async def commit(self, offsets: Mapping[Partition, int]) -> bool:
        group = self._group
        if group is None or any(group.owner.get(p) is not self for p in offsets):
            log.warning("commit of %d partitions skipped (not held); records will be redelivered", len(offsets))
            return False
        group.committed.update(offsets)
        self._bus.committed()
        return True

    def assignment(self) -> set[Partition]:
        return set(self._held)

    def pause(self, partitions: Collection[Partition]) -> None:
        self._paused.update(partitions)

    def resume(self, partitions: Collection[Partition]) -> None:
        self._paused.difference_update(partitions)

    def paused(self) -> set[Partition]:
        return set(self._paused)

    def highwater(self, partition: Partition) -> int | None:
        return self._bus.end(partition) if partition in self._held else None

    async def position(self, partition: Partition) -> int:
        return self._positions.get(partition, 0)

    async def partitions_for(self, topic: str) -> list[Partition]:
        return self._bus.partitions(topic)

    def assign(self, partitions: Collection[Partition]) -> None:
        self._held = set(partitions)
        self._positions = {p: self._positions.get(p, 0) for p in self._held}

    async def seek_to_beginning(self, partitions: Collection[Partition]) -> None:
        self._positions.update(dict.fromkeys(partitions, 0))

    async def seek_to_end(self, partitions: Collection[Partition]) -> None:
        self._positions.update({p: self._bus.end(p) for p in partitions})
