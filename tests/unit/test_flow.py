"""The pipelined router's bookkeeping (consumers/workers/flow.py): commits never pass an unfinished
record, the in-flight count is what the bound needs, one turn per conversation goes at a time."""

from __future__ import annotations

from routeyard.consumers.kafka.records import Partition, Record
from routeyard.consumers.workers.flow import Holds, Ledger

P0, P1 = Partition("t", 0), Partition("t", 1)


def rec(partition: int, offset: int) -> Record:
    return Record(topic="t", partition=partition, offset=offset, key=None, value=b"", headers=())


def test_commits_stop_at_the_first_unfinished_record() -> None:
    ledger = Ledger()
    records = [rec(0, o) for o in (5, 6, 7)] + [rec(1, 3)]
    ledger.add(records)
    ledger.finish(records[1])  # 6 done, 5 not: nothing on partition 0 may be committed
    ledger.finish(records[3])
    assert ledger.committable() == {P1: 4}
    assert ledger.open == 3
    ledger.finish(records[0])
    assert ledger.committable() == {P0: 7}  # 5 and 6, not 7
    assert (ledger.open, ledger.busy()) == (1, 1)
    assert ledger.committable() == {}


def test_an_abandoned_record_blocks_commits_and_counts_as_not_busy() -> None:
    ledger = Ledger()
    a, b = rec(0, 1), rec(0, 2)
    ledger.add([a, b])
    ledger.abandon(a)
    ledger.finish(b)
    assert ledger.busy([P0]) == 0
    assert ledger.committable([P0]) == {}  # b is finished, but a comes before it
    ledger.forget([P0])
    assert ledger.open == 0
    ledger.finish(a)  # a late finish of a revoked partition is ignored
    assert ledger.committable() == {}


def test_holds_let_one_turn_per_conversation_go_in_order() -> None:
    holds: Holds[str] = Holds()
    assert holds.claim("c1", "t1") is True
    assert holds.claim("c1", "t2") is False
    assert holds.claim("c1", "t3") is False
    assert holds.claim("c2", "u1") is True
    assert holds.release("c1") == "t2"
    assert holds.release("c1") == "t3"
    assert holds.release("c1") is None
    assert holds.claim("c1", "t4") is True  # free again: goes at once
    assert len(holds) == 2


def test_dropped_waiting_turns_leave_their_queue() -> None:
    holds: Holds[tuple[int, str]] = Holds()
    holds.claim("c", (0, "a"))
    holds.claim("c", (1, "b"))
    holds.claim("c", (0, "c"))
    assert holds.drop(lambda item: item[0] == 1) == [(1, "b")]
    assert holds.release("c") == (0, "c")
    assert holds.release("c") is None
