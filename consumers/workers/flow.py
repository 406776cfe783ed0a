"""The bookkeeping of the pipelined router worker (``pipeline.py``): plain data, no event loop.

Ledger   every fetched record until its offset is committed: which are finished, what may be
         committed (per partition, up to the first unfinished record, never past it), how many
         are open (the in-flight bound), and what a revoked partition still waits for
Holds    one turn per conversation in flight: a later turn waits in its conversation's queue
         until the earlier one is stored, so it is admitted (appended to its context and read)
         after it, and is decided with it in its context
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Collection, Hashable, Iterable
from typing import Generic, TypeVar

from routeyard.consumers.kafka.records import Partition, Record

__all__ = ["Holds", "Ledger"]

T = TypeVar("T")


class Ledger:
    """Offsets fetched and not yet committed, per partition, in fetch (offset) order."""

    def __init__(self) -> None:
        self._order: dict[Partition, deque[int]] = {}
        self._finished: dict[Partition, set[int]] = {}
        self._abandoned: dict[Partition, set[int]] = {}
        self.open = 0
        """Records fetched and not yet committed: what the in-flight bound counts."""

    def add(self, records: Iterable[Record]) -> None:
        for r in records:
            p = Partition(r.topic, r.partition)
            self._order.setdefault(p, deque()).append(r.offset)
            self._finished.setdefault(p, set())
            self._abandoned.setdefault(p, set())
            self.open += 1

    def finish(self, record: Record) -> None:
        """Its outcome is published; ignored for a partition no longer held (revoked)."""
        done = self._finished.get(Partition(record.topic, record.partition))
        if done is not None:
            done.add(record.offset)

    def abandon(self, record: Record) -> None:
        """It will not be finished here (the next owner gets it again): nothing commits past it."""
        gone = self._abandoned.get(Partition(record.topic, record.partition))
        if gone is not None:
            gone.add(record.offset)

    def busy(self, partitions: Collection[Partition] | None = None) -> int:
        """Records neither finished nor abandoned (in ``partitions``, or anywhere)."""
        return sum(
            len(order) - len(self._finished[p]) - len(self._abandoned[p])
            for p, order in self._order.items()
            if partitions is None or p in partitions
        )

    def committable(self, partitions: Collection[Partition] | None = None) -> dict[Partition, int]:
        """The next offset to commit for each partition whose finished prefix grew (taken off)."""
        offsets: dict[Partition, int] = {}
        for p, order in self._order.items():
            if partitions is not None and p not in partitions:
                continue
            done = self._finished[p]
            while order and order[0] in done:
                offset = order.popleft()
                done.discard(offset)
                offsets[p] = offset + 1
                self.open -= 1
        return offsets

    def forget(self, partitions: Collection[Partition]) -> None:
        """Revoked: whatever is still open there belongs to the next owner."""
        for p in partitions:
            self.open -= len(self._order.pop(p, ()))
            self._finished.pop(p, None)
            self._abandoned.pop(p, None)


class Holds(Generic[T]):
    """Per conversation: whether a turn is in flight, and the later turns waiting for it."""

    def __init__(self) -> None:
        self._queues: dict[Hashable, deque[T]] = {}

    def __len__(self) -> int:
        return len(self._queues)

    def claim(self, conversation: Hashable, item: T) -> bool:
        """True: ``item`` may go now (its conversation is now in flight); False: it waits."""
        queue = self._queues.get(conversation)
        if queue is None:
            self._queues[conversation] = deque()
            return True
        queue.append(item)
        return False

    def release(self, conversation: Hashable) -> T | None:
        """The conversation's turn is done: its next waiting turn (now in flight), or None."""
        queue = self._queues.get(conversation)
        if queue:
            return queue.popleft()
        self._queues.pop(conversation, None)
        return None

    def drop(self, gone: Callable[[T], bool]) -> list[T]:
        """Take the waiting turns ``gone`` selects out of their queues (a revoked partition's)."""
        dropped: list[T] = []
        for queue in self._queues.values():
            kept = [item for item in queue if not gone(item)]
            dropped += [item for item in queue if gone(item)]
            queue.clear()
            queue.extend(kept)
        return dropped
