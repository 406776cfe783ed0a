"""Which offsets an agent runtime may commit: tasks finish out of order."""

from __future__ import annotations

from collections.abc import Iterable

from routeyard.consumers.kafka.bus import Partition, Record


class OffsetTracker:
    """Tasks finish out of order; commit only up to the oldest one still running."""

    def __init__(self) -> None:
        self._running: dict[Partition, set[int]] = {}
        self._next: dict[Partition, int] = {}
        self._committed: dict[Partition, int] = {}

    def begin(self, record: Record) -> None:
        tp = Partition(record.topic, record.partition)
        self._running.setdefault(tp, set()).add(record.offset)
        self._next[tp] = max(self._next.get(tp, 0), record.offset + 1)

    def end(self, record: Record) -> None:
        self._running.get(Partition(record.topic, record.partition), set()).discard(record.offset)

    def committable(self) -> dict[Partition, int]:
        ready = {}
        for tp, nxt in self._next.items():
            running = self._running.get(tp)
            offset = min(running) if running else nxt
            if self._committed.get(tp) != offset:
                ready[tp] = offset
        return ready

    def committed(self, offsets: dict[Partition, int]) -> None:
        self._committed.update(offsets)

    def running(self, partitions: Iterable[Partition]) -> int:
        return sum(len(self._running.get(tp, ())) for tp in partitions)

    def forget(self, partitions: Iterable[Partition]) -> None:
        """The partitions went to another member: stop tracking (and committing) them."""
        for tp in partitions:
            self._running.pop(tp, None)
            self._next.pop(tp, None)
            self._committed.pop(tp, None)

    @property
    def in_flight(self) -> int:
        return sum(len(s) for s in self._running.values())
