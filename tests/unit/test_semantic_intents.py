"""How the semantic engine reads a turn: its intents, and its relation to the previous agent's
message (pure text functions, and ``score_turn`` on synthetic similarities: no model needed)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from routeyard.router.engines.semantic import SemanticSettings, TurnScores, score_turn
from routeyard.router.engines.semantic_intents import handover, split_intents
from routeyard.router.engines.semantic_reason import reason
from routeyard.router.settings import REPLY_OPENERS, REPLY_THANKS, TASK_CLOSERS
from routeyard.schemas import Message


@pytest.mark.parametrize(
    ("text", "intents"),
    [
        (
            "Will it rain in Rome tomorrow? If so, text Anna to bring an umbrella",
            ("Will it rain in Rome tomorrow", "text Anna to bring an umbrella"),
        ),
        ("Book a table for two and then text Anna the address", ("Book a table for two", "text Anna the address")),
        ("Check my balance; also book a flight to Paris", ("Check my balance", "book a flight to Paris")),
        ("Find a hotel. If not, look for a hostel", ("Find a hotel", "look for a hostel")),
        ("Thanks. Also, what's the weather there?", ()),
        ("Yes please", ()),
    ],
)
def test_intents_split_on_conjunctions_conditionals_and_sentences(text: str, intents: tuple[str, ...]) -> None:
    assert split_intents(text) == intents


def _conversation(*turns: tuple[str, str | None]) -> list[Message]:
    return [
        Message(role="assistant" if i % 2 else "user", content=text, name=name) for i, (text, name) in enumerate(turns)
    ]


def test_a_reply_to_an_open_offer_is_recognised_with_the_agent_that_made_it() -> None:
    turns = _conversation(
        ("find a hotel", None), ("Would you like to book it?", "HotelAgent"), ("No. Find me a flight", None)
    )
    relation = handover(turns, 2, REPLY_OPENERS, TASK_CLOSERS)
    assert relation.previous == "HotelAgent" and relation.reply and not relation.closed


@pytest.mark.parametrize("assistant", ["Is there anything else I can help you with?", "Your table is booked."])
def test_a_task_the_agent_closed_hands_nothing_back(assistant: str) -> None:
    turns = _conversation(("book a table", None), (assistant, "RestaurantAgent"), ("Thanks. I need a cab", None))
    assert handover(turns, 2, REPLY_OPENERS, TASK_CLOSERS).closed


def test_a_message_that_does_not_open_with_a_reply_is_not_one() -> None:
    turns = _conversation(("find a hotel", None), ("Would you like to book it?", "HotelAgent"), ("Okra recipes", None))
    relation = handover(turns, 2, REPLY_OPENERS, TASK_CLOSERS)
    assert not relation.reply


@pytest.mark.parametrize(
    ("text", "thanked"),
    [
        ("Great, thanks. I also need a flight to Rome", True),
        ("Thank you so much! Can you find me a flight?", True),
        ("Okay, that works. Find me a flight too", False),
        ("Yes, book it. Then a flight to Rome, thanks", False),
    ],
)
def test_thanks_in_the_opening_sentence_mark_the_answer_as_done(text: str, thanked: bool) -> None:
    turns = _conversation(("find a hotel", None), ("The Ritz has a room for $300.", "HotelAgent"), (text, None))
    relation = handover(turns, 2, REPLY_OPENERS, TASK_CLOSERS, REPLY_THANKS)
    assert relation.reply and not relation.closed
    assert relation.thanked is thanked


NAMES = ("HotelAgent", "FlightAgent", "WeatherAgent")


def _turn(last: list[float], *, previous: int | None, reply: bool, closed: bool, thanked: bool = False) -> TurnScores:
    rows: Any = np.zeros((0, len(NAMES)))
    return TurnScores(
        last=np.array(last),
        clauses=rows,
        earlier=np.array([[0.7, 0.1, 0.1]]),
        assistant=np.array([0.6, 0.1, 0.1]),
        closing=0.0,
        small_talk=0.0,
        clause_negative=np.zeros(0),
        previous=previous,
        reply=reply,
        closed=closed,
        thanked=thanked,
    )


def test_a_switch_with_a_reply_to_the_open_task_reaches_both_agents() -> None:
    s = SemanticSettings()
    verdict = score_turn(_turn([0.2, 0.6, 0.1], previous=0, reply=True, closed=False), s)
    assert sorted(NAMES[i] for i in verdict.routes) == ["FlightAgent", "HotelAgent"]
    assert verdict.why is not None
    assert "switch from HotelAgent to FlightAgent" in reason(verdict.why, NAMES, s)
    assert "handover" in reason(verdict.why, NAMES, s)


@pytest.mark.parametrize(("reply", "closed"), [(False, False), (True, True)])
def test_a_switch_without_a_reply_or_after_a_closed_task_leaves_the_previous_agent(reply: bool, closed: bool) -> None:
    verdict = score_turn(_turn([0.2, 0.6, 0.1], previous=0, reply=reply, closed=closed), SemanticSettings())
    assert [NAMES[i] for i in verdict.routes] == ["FlightAgent"]


def test_handover_off_keeps_only_the_new_agent() -> None:
    s = SemanticSettings(handover=False)
    verdict = score_turn(_turn([0.2, 0.6, 0.1], previous=0, reply=True, closed=False), s)
    assert [NAMES[i] for i in verdict.routes] == ["FlightAgent"]


def test_a_weak_message_is_no_switch() -> None:
    verdict = score_turn(_turn([0.2, 0.3, 0.1], previous=0, reply=True, closed=False), SemanticSettings())
    assert [NAMES[i] for i in verdict.routes] == ["HotelAgent"]


def test_a_switch_that_thanks_for_the_answer_leaves_the_previous_agent() -> None:
    verdict = score_turn(_turn([0.2, 0.6, 0.1], previous=0, reply=True, closed=False, thanked=True), SemanticSettings())
    assert [NAMES[i] for i in verdict.routes] == ["FlightAgent"]


def test_after_a_closed_task_a_middling_message_outweighs_the_conversation() -> None:
    last = [0.1, 0.4, 0.1]  # FlightAgent, too weak for a switch; the conversation was about hotels
    s = SemanticSettings()
    closed = score_turn(_turn(last, previous=0, reply=False, closed=True), s)
    still_open = score_turn(_turn(last, previous=0, reply=False, closed=False), s)
    assert [NAMES[i] for i in closed.routes] == ["FlightAgent"]
    assert [NAMES[i] for i in still_open.routes] == ["HotelAgent"]
    unchanged = score_turn(_turn(last, previous=0, reply=False, closed=True), SemanticSettings(closed_context=1.0))
    assert [NAMES[i] for i in unchanged.routes] == ["HotelAgent"]


def test_a_message_that_names_no_other_agent_clearly_stays_with_the_open_task() -> None:
    last = [0.28, 0.1, 0.31]  # "and the phone number?": WeatherAgent only 0.03 closer than HotelAgent
    turn = _turn(last, previous=0, reply=False, closed=False)._replace(
        earlier=np.array([[0.1, 0.1, 0.7]]), assistant=np.array([0.1, 0.1, 0.6])
    )
    s = SemanticSettings()
    verdict = score_turn(turn, s)
    assert [NAMES[i] for i in verdict.routes] == ["HotelAgent"]
    assert verdict.why is not None
    assert "stay with HotelAgent" in reason(verdict.why, NAMES, s)
    off = score_turn(turn, SemanticSettings(stay_margin=0.0))
    assert [NAMES[i] for i in off.routes] == ["WeatherAgent"]


@pytest.mark.parametrize(("last", "closed"), [([0.28, 0.1, 0.36], False), ([0.28, 0.1, 0.31], True)])
def test_a_clearly_closer_agent_or_a_closed_task_takes_the_turn_from_the_previous_agent(
    last: list[float], closed: bool
) -> None:
    turn = _turn(last, previous=0, reply=False, closed=closed)._replace(
        earlier=np.array([[0.1, 0.1, 0.7]]), assistant=np.array([0.1, 0.1, 0.6])
    )
    verdict = score_turn(turn, SemanticSettings())
    assert [NAMES[i] for i in verdict.routes] == ["WeatherAgent"]
    assert verdict.why is not None and verdict.why.stayed is None
