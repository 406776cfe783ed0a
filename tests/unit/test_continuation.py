"""The continuation policy: a turn that answers an agent's question goes back to it."""

from __future__ import annotations

import pytest
from routeyard.consumers.tools.explain import Explanation, explain_markdown
from routeyard.router.catalog import AgentSpec
from routeyard.router.continuation import answers, asker, asks, continue_turn
from routeyard.router.engines.base import EngineResult, RoutingRequest
from routeyard.router.plan import Routing, make_decision
from routeyard.schemas import ConversationEvent, Message

AGENTS = (
    AgentSpec(name="BookingAgent", description="books restaurant tables"),
    AgentSpec(name="ContactsAgent", description="looks up phone numbers"),
)


def conversation(
    question: str, answer: str, *, name: str | None = "BookingAgent", waiting: bool = False
) -> list[Message]:
    return [
        Message(role="user", content="Book a table for two tonight"),
        Message(role="assistant", content=question, name=name, awaiting_input=waiting),
        Message(role="user", content=answer),
    ]


def routed(engine: list[str], convo: list[Message], *, confidence: float | None = None) -> Routing:
    result = EngineResult(routes=engine, confidence=confidence)
    routing = Routing(routes=engine, selected=engine, dropped=[], default_used=False, fallback_reason=None)
    request = RoutingRequest(event_id="e1", conversation=convo, agents=AGENTS)
    return continue_turn(routing, result, request, override=0.9)


@pytest.mark.parametrize("answer", ["(220) 234-2345", "yes", "tomorrow at 7", "Sino, in San Jose", "2 people"])
def test_an_answer_goes_back_to_the_agent_that_asked(answer: str) -> None:
    after = routed(["ContactsAgent"], conversation("What's your phone number?", answer))
    assert (after.routes, after.selected, after.continuation) == (["BookingAgent"], ["ContactsAgent"], "BookingAgent")


def test_a_no_route_or_a_failed_engine_is_continued_too() -> None:
    assert routed([], conversation("For what time?", "7pm")).routes == ["BookingAgent"]


def test_awaiting_input_counts_without_a_question_mark() -> None:
    convo = conversation("Your phone number, please.", "(220) 234-2345", waiting=True)
    assert routed(["ContactsAgent"], convo).routes == ["BookingAgent"]
    plain = conversation("Your phone number, please.", "(220) 234-2345")
    assert routed(["ContactsAgent"], plain).routes == ["ContactsAgent"]


@pytest.mark.parametrize(
    "answer",
    [
        "Can you also tell me the weather in Rome tomorrow?",  # a request of its own
        "I need to check my balance",
        "No, that's all, thanks",  # a closing
        "thank you",
        "Not at this time.",
        "I do not",
        "one two three four five six seven eight nine ten eleven twelve thirteen",  # too long
    ],
)
def test_a_turn_that_asks_for_something_else_keeps_the_engines_choice(answer: str) -> None:
    after = routed(["ContactsAgent"], conversation("What's your phone number?", answer))
    assert (after.routes, after.continuation) == (["ContactsAgent"], None)


def test_open_questions_and_statements_are_not_answered() -> None:
    for said in ("Done! Is there anything else I can help you with?", "Your table is booked."):
        assert routed(["ContactsAgent"], conversation(said, "yes")).routes == ["ContactsAgent"]


def test_a_confident_engine_or_an_unknown_speaker_wins() -> None:
    convo = conversation("What's your phone number?", "(220) 234-2345")
    assert routed(["ContactsAgent"], convo, confidence=0.95).routes == ["ContactsAgent"]
    assert routed(["ContactsAgent"], convo, confidence=0.5).routes == ["BookingAgent"]
    for name in (None, "GoneAgent"):  # not named, or not among the turn's agents
        assert routed(["ContactsAgent"], conversation("What's your phone number?", "42", name=name)).routes == [
            "ContactsAgent"
        ]


def test_the_speaker_is_the_message_right_before_the_turn() -> None:
    convo = [*conversation("What's your phone number?", "(220) 234-2345")[:2], Message(role="user", content="x")]
    assert asker(convo) == "BookingAgent"
    assert asker([Message(role="user", content="hi")]) is None
    later = [*convo[:2], Message(role="user", content="ok"), Message(role="assistant", content="Done."), convo[-1]]
    assert asker(later) is None
    assert asks('Which city? ") ') and not asks("What else can I do for you?") and not asks("Booked.")
    assert answers("yes") and not answers("") and not answers("bye")


def test_the_decision_records_the_continuation() -> None:
    after = routed(["ContactsAgent"], conversation("What's your phone number?", "(220) 234-2345"))
    event = ConversationEvent(event_id="e1", conversation_id="c1", messages=[Message(role="user", content="x")])
    decision = make_decision(
        event,
        after,
        EngineResult(routes=["ContactsAgent"]),
        engine="rules",
        mode="parallel",
        catalog_version="v",
        latency_ms=1.0,
        decided_at=event.created_at,
    )
    assert (decision.routes, decision.selected, decision.continuation) == (
        ["BookingAgent"],
        ["ContactsAgent"],
        "BookingAgent",
    )
    shown = explain_markdown(Explanation(event_id="e1", decisions=[decision]))
    assert "continuation: BookingAgent asked the user something; the turn answers it" in shown
    assert "engine chose: ContactsAgent" in shown
