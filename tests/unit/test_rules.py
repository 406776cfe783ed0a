"""The rules engine: keyword/regex routing, multi-intent order, stop turns, follow-ups."""

from __future__ import annotations

import json

import pytest
from routeyard.router.catalog import AgentRules, AgentSpec
from routeyard.router.engines.base import DecisionEngine, EngineResult, RoutingRequest
from routeyard.router.engines.rules import RulesEngine
from routeyard.schemas import Message


def _agent(name: str, keywords: tuple[str, ...] = (), patterns: tuple[str, ...] = ()) -> AgentSpec:
    rules = AgentRules(keywords=keywords, patterns=patterns)
    return AgentSpec(name=name, description=f"{name} agent", rules=rules)


WEATHER = _agent("WeatherAgent", keywords=("weather", "forecast"), patterns=(r"\brain(ing|y)?\b",))
RESTAURANT = _agent("RestaurantAgent", keywords=("book a table", "restaurant"))
MESSAGING = _agent("MessagingAgent", keywords=("text", "message"), patterns=(r"\bsend (an? )?sms\b",))
FLIGHTS = _agent("FlightAgent", patterns=(r"\bflights?\b", r"\b[A-Z]{3}\s*->\s*[A-Z]{3}\b"))
CHITCHAT = _agent("ChitChatAgent")  # no rules: never chosen by this engine
AGENTS = (WEATHER, RESTAURANT, MESSAGING, FLIGHTS, CHITCHAT)


def _user(content: str) -> Message:
    return Message(role="user", content=content)


def _assistant(content: str) -> Message:
    return Message(role="assistant", content=content)


def _request(*messages: Message, agents: tuple[AgentSpec, ...] = AGENTS) -> RoutingRequest:
    return RoutingRequest(event_id="e1", conversation=list(messages), agents=agents)


def _route(*messages: Message, engine: RulesEngine | None = None, agents: tuple[AgentSpec, ...] = AGENTS) -> list[str]:
    result = (engine or RulesEngine()).route(_request(*messages, agents=agents))
    assert result.error is None
    return result.routes


def test_is_a_decision_engine() -> None:
    assert isinstance(RulesEngine(), DecisionEngine)
    assert RulesEngine.name == "rules"


def test_single_keyword_match() -> None:
    assert _route(_user("What's the weather in Paris?")) == ["WeatherAgent"]


def test_keyword_is_case_insensitive_and_multi_word() -> None:
    assert _route(_user("Please BOOK A   TABLE for two")) == ["RestaurantAgent"]


@pytest.mark.parametrize("text", ["I love texting", "the context is unclear", "weathered wood", "pretext"])
def test_keyword_inside_another_word_does_not_match(text: str) -> None:
    assert _route(_user(text)) == []


def test_regex_pattern_matches() -> None:
    assert _route(_user("Is it raining in Oslo?")) == ["WeatherAgent"]
    assert _route(_user("CDG -> JFK next monday?")) == ["FlightAgent"]
    assert _route(_user("please send an SMS to Bob")) == ["MessagingAgent"]


def test_multi_intent_ordered_by_position_in_message() -> None:
    assert _route(_user("book a table and then text Anna")) == ["RestaurantAgent", "MessagingAgent"]
    assert _route(_user("text Anna, then book a table")) == ["MessagingAgent", "RestaurantAgent"]
    assert _route(_user("send a message about the weather forecast and flights")) == [
        "MessagingAgent",
        "WeatherAgent",
        "FlightAgent",
    ]


def test_ties_broken_by_catalog_order() -> None:
    also_weather = _agent("ClimateAgent", keywords=("weather",))
    agents = (also_weather, WEATHER)
    assert _route(_user("weather please"), agents=agents) == ["ClimateAgent", "WeatherAgent"]


def test_result_shape() -> None:
    result = RulesEngine().route(_request(_user("book a table, then check the forecast")))
    assert result.routes == ["RestaurantAgent", "WeatherAgent"]
    assert json.loads(result.raw_output or "") == {"route": ["RestaurantAgent", "WeatherAgent"]}
    assert result.scores == {"RestaurantAgent": 1.0, "WeatherAgent": 1.0}
    assert result.confidence is None
    assert not result.failed


@pytest.mark.parametrize(
    "text",
    [
        "Thanks!",
        "thank you so much :)",
        "ok thank you, bye",
        "Cheers",
        "Got it. Thx!",
        "okay and goodbye",
        "perfect",
        "see you later!",
    ],
)
def test_stop_phrase_gets_no_route_even_after_a_routed_turn(text: str) -> None:
    conversation = (_user("weather in Paris?"), _assistant("Sunny, 21C."), _user(text))
    result = RulesEngine().route(_request(*conversation))
    assert result.routes == []
    assert result.error is None
    assert json.loads(result.raw_output or "") == {"route": []}


@pytest.mark.parametrize(
    "text", ["ok, and tomorrow?", "thanks, and the day after?", "what about Rome", "in Oslo?", "Also Berlin"]
)
def test_short_referential_turn_follows_up(text: str) -> None:
    conversation = (_user("weather in Paris?"), _assistant("Sunny, 21C."), _user(text))
    assert _route(*conversation) == ["WeatherAgent"]


@pytest.mark.parametrize(
    "text",
    [
        "thanks, that's all",
        "thanks, that's all for now",
        "great, nothing else",
        "ok that is everything, have a nice evening",
        "hi",
        "hello",
        "!!!",
        "I was wondering whether you could possibly tell me more?",
    ],
)
def test_turn_that_does_not_continue_gets_no_route(text: str) -> None:
    """Reusing routes re-runs their agents: "thanks, that's all" after a booking and a text must
    not book and text again."""
    conversation = (
        _user("Book a table for two and text Anna the address"),
        _assistant("Booked, and Anna has the address."),
        _user(text),
    )
    assert _route(*conversation) == []


def test_stop_phrase_with_a_keyword_still_routes() -> None:
    assert _route(_user("thanks! now text Anna, bye")) == ["MessagingAgent"]


def test_custom_stop_patterns_replace_the_defaults() -> None:
    engine = RulesEngine(stop_patterns=[r"merci(?: beaucoup)?"])
    previous = (_user("weather in Paris?"), _assistant("Sunny."))
    assert _route(*previous, _user("Merci beaucoup !"), engine=engine) == []
    assert _route(*previous, _user("ok?"), engine=engine) == ["WeatherAgent"]  # a stop only by default


def test_follow_up_reuses_the_most_recent_matching_earlier_turn() -> None:
    conversation = (
        _user("book a table at 8"),
        _assistant("Done."),
        _user("what's the weather in Paris?"),
        _assistant("Sunny."),
        _user("great"),
        _assistant("Anything else?"),
        _user("and tomorrow?"),
    )
    assert _route(*conversation) == ["WeatherAgent"]


def test_follow_up_ignores_assistant_messages() -> None:
    conversation = (_user("hello"), _assistant("I can check the weather for you"), _user("and tomorrow?"))
    assert _route(*conversation) == []


def test_follow_up_disabled() -> None:
    conversation = (_user("what's the weather in Paris?"), _assistant("Sunny."), _user("and tomorrow?"))
    assert _route(*conversation, engine=RulesEngine(follow_up=False)) == []


def test_only_request_agents_are_considered() -> None:
    text = _user("book a table and then text Anna about the weather")
    assert _route(text, agents=(MESSAGING, FLIGHTS)) == ["MessagingAgent"]
    earlier = (_user("weather in Paris?"), _assistant("Sunny."), _user("and tomorrow?"))
    assert _route(*earlier, agents=(RESTAURANT,)) == []


@pytest.mark.parametrize(
    "conversation",
    [[], [Message(role="system", content="You route."), _assistant("Hello, how can I help?")]],
)
def test_no_user_message_is_an_error(conversation: list[Message]) -> None:
    result = RulesEngine().route(RoutingRequest(event_id="e1", conversation=conversation, agents=AGENTS))
    assert result.failed
    assert result.error == "no user message to route"
    assert result.routes == []


def test_agent_without_rules_never_matches() -> None:
    assert _route(_user("ChitChatAgent chitchat agent hello"), agents=(CHITCHAT,)) == []


def test_unknown_words_route_nowhere() -> None:
    assert _route(_user("what is the meaning of life?")) == []


def test_latest_user_message_decides_not_earlier_ones() -> None:
    conversation = (_user("weather in Paris?"), _assistant("Sunny."), _user("now text Anna"))
    assert _route(*conversation) == ["MessagingAgent"]


async def test_decide_returns_one_result_per_request_in_order() -> None:
    requests = [
        _request(_user("text Anna")),
        _request(),
        _request(_user("weather?")),
    ]
    engine = RulesEngine()
    async with engine:
        results = await engine.decide(requests)
    assert [r.routes for r in results] == [["MessagingAgent"], [], ["WeatherAgent"]]
    assert [r.failed for r in results] == [False, True, False]
    assert all(isinstance(r, EngineResult) for r in results)


# -- the reason: which rule decided -----------------------------------------------------------------


def _reason(*messages: Message) -> str | None:
    return RulesEngine().route(_request(*messages)).reason


def test_reason_names_the_rule_each_agent_matched_by_in_message_order() -> None:
    reason = _reason(_user("Book a table and then text Anna about the rain"))
    assert reason is not None
    names = [part.split(":")[0] for part in reason.split("; ")]
    assert names == _route(_user("Book a table and then text Anna about the rain"))
    assert all("keyword '" in part or "pattern '" in part for part in reason.split("; "))


def test_reason_of_a_pattern_shows_it_as_written() -> None:
    agents = (_agent("WeatherAgent", patterns=(r"\brain(ing)?\b",)),)
    result = RulesEngine().route(_request(_user("is it raining?"), agents=agents))
    assert result.reason == r"WeatherAgent: pattern '\brain(ing)?\b'"


def test_reason_of_a_follow_up_says_whose_routes_it_reused() -> None:
    agents = (_agent("WeatherAgent", keywords=("weather",)),)
    result = RulesEngine().route(
        _request(_user("weather in Oslo?"), _assistant("Sunny."), _user("and Rome?"), agents=agents)
    )
    assert result.routes == ["WeatherAgent"]
    assert result.reason == (
        "no rule matched; a short follow-up: the routes of the previous user message (WeatherAgent: keyword 'weather')"
    )


def test_reason_of_no_route() -> None:
    assert _reason(_user("what is the meaning of life")) == "no rule matched"
    assert _reason(_user("thanks, bye")) == "no rule matched; a closing turn"
