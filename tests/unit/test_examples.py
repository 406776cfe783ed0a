"""The example agents users copy: their text handling stays linear on hostile input."""

from __future__ import annotations

import time

from examples.agents import MAX_TEXT, what_to_add


def test_calendar_agent_finds_what_to_add() -> None:
    assert what_to_add("Please add a picnic to my calendar") == "picnic"
    assert what_to_add("remind me to call Anna tomorrow") == "call Anna"
    assert what_to_add("what's on?") == "event"


def test_calendar_agent_reads_only_the_start_of_a_huge_turn() -> None:
    """32 KB of "add add add ..." took 9.5 s with an unbounded lazy group (quadratic)."""
    hostile = "add " * 8000 + "x"
    started = time.perf_counter()
    assert len(what_to_add(hostile)) <= 80
    took = time.perf_counter() - started
    assert what_to_add("x" * MAX_TEXT + " add lunch") == "event"  # past the window: not read
    assert took < 1.0, f"{took:.2f}s: the regex is no longer bounded"
