"""decide_routes (name validation, restriction, default agent, engine failure) and make_decision."""

from __future__ import annotations

from datetime import UTC, datetime

from routeyard.router.catalog import AgentSpec, Catalog
from routeyard.router.engines.base import EngineResult
from routeyard.router.plan import Routing, decide_routes, make_decision
from routeyard.schemas import ConversationEvent, Message, RoutingDecision, decision_decoder, encode

WEATHER = AgentSpec(name="WeatherAgent", description="Weather forecasts")
RESTAURANT = AgentSpec(name="RestaurantAgent", description="Restaurant bookings")
CHITCHAT = AgentSpec(name="ChitChatAgent", description="Small talk", default=True)
FLIGHTS = AgentSpec(name="FlightAgent", description="Flight search")

WITH_DEFAULT = Catalog(agents=(WEATHER, RESTAURANT, CHITCHAT, FLIGHTS))
NO_DEFAULT = Catalog(agents=(WEATHER, RESTAURANT, FLIGHTS))


def _decide(
    routes: list[str],
    catalog: Catalog = WITH_DEFAULT,
    agents: tuple[AgentSpec, ...] | None = None,
    error: str | None = None,
) -> Routing:
    result = EngineResult(routes=routes, error=error)
    return decide_routes(result, catalog.agents if agents is None else agents, catalog)


def test_known_routes_kept_in_engine_order() -> None:
    routing = _decide(["RestaurantAgent", "WeatherAgent"])
    assert routing.routes == ["RestaurantAgent", "WeatherAgent"]
    assert routing.selected == ["RestaurantAgent", "WeatherAgent"]
    assert routing.dropped == []
    assert routing.default_used is False
    assert routing.fallback_reason is None


def test_unknown_names_are_dropped_and_reported() -> None:
    routing = _decide(["WeatherAgent", "HotelAgent", "weatheragent"])
    assert routing.routes == ["WeatherAgent"]
    assert routing.dropped == ["HotelAgent", "weatheragent"]
    assert routing.default_used is False


def test_duplicates_are_removed() -> None:
    routing = _decide(["WeatherAgent", "FlightAgent", "WeatherAgent", "HotelAgent", "HotelAgent"])
    assert routing.routes == ["WeatherAgent", "FlightAgent"]
    assert routing.dropped == ["HotelAgent"]


def test_routes_restricted_to_the_allowed_agents() -> None:
    routing = _decide(["WeatherAgent", "RestaurantAgent"], agents=(RESTAURANT, CHITCHAT))
    assert routing.routes == ["RestaurantAgent"]
    # A catalog agent outside the turn's restriction counts as dropped for this turn.
    assert routing.dropped == ["WeatherAgent"]
    assert routing.default_used is False


def test_empty_answer_goes_to_the_default_agent() -> None:
    routing = _decide([])
    assert routing.routes == ["ChitChatAgent"]
    assert routing.selected == []
    assert routing.default_used is True
    assert routing.fallback_reason is None


def test_only_unknown_names_go_to_the_default_agent_and_keep_the_dropped_names() -> None:
    routing = _decide(["HotelAgent"])
    assert routing.routes == ["ChitChatAgent"]
    assert routing.dropped == ["HotelAgent"]
    assert routing.default_used is True


def test_default_agent_named_at_top_level() -> None:
    catalog = Catalog(agents=(WEATHER, RESTAURANT), default="RestaurantAgent")
    routing = _decide([], catalog=catalog)
    assert routing.routes == ["RestaurantAgent"]
    assert routing.default_used is True


def test_empty_without_default_is_no_route() -> None:
    routing = _decide([], catalog=NO_DEFAULT)
    assert routing.routes == []
    assert routing.default_used is False


def test_default_not_used_when_the_turn_is_restricted_to_other_agents() -> None:
    routing = _decide(["RestaurantAgent"], agents=(WEATHER, FLIGHTS))
    assert routing.routes == []
    assert routing.default_used is False
    assert routing.dropped == ["RestaurantAgent"]


def test_failed_engine_falls_back_to_default_with_a_reason() -> None:
    routing = _decide(["WeatherAgent"], error="timeout after 2s")
    # The routes of a failed result are not trusted.
    assert routing.routes == ["ChitChatAgent"]
    assert routing.selected == []
    assert routing.default_used is True
    assert routing.fallback_reason is not None
    assert "timeout after 2s" in routing.fallback_reason


def test_failed_engine_without_default_is_no_route_with_a_reason() -> None:
    routing = _decide([], catalog=NO_DEFAULT, error="model crashed")
    assert routing.routes == []
    assert routing.default_used is False
    assert routing.fallback_reason is not None
    assert "model crashed" in routing.fallback_reason


def test_failed_engine_with_default_outside_restriction_is_no_route() -> None:
    routing = _decide([], agents=(WEATHER,), error="boom")
    assert routing.routes == []
    assert routing.default_used is False
    assert routing.fallback_reason is not None


def test_make_decision_copies_every_field() -> None:
    event = ConversationEvent(
        event_id="ev-9",
        conversation_id="conv-9",
        tenant="acme",
        messages=[Message(role="user", content="hi")],
    )
    result = EngineResult(
        routes=["WeatherAgent", "HotelAgent"],
        raw_output='{"route": ["WeatherAgent", "HotelAgent"]}',
        confidence=0.87,
        scores={"WeatherAgent": 0.87},
        model="plano-4b",
    )
    routing = decide_routes(result, WITH_DEFAULT.agents, WITH_DEFAULT)
    decided_at = datetime(2024, 5, 6, 7, 8, 9, tzinfo=UTC)
    decision = make_decision(
        event,
        routing,
        result,
        engine="vllm",
        mode="sequential",
        catalog_version="abc123",
        latency_ms=12.5,
        decided_at=decided_at,
        worker="router-a:42",
    )
    assert decision == RoutingDecision(
        event_id="ev-9",
        conversation_id="conv-9",
        tenant="acme",
        routes=["WeatherAgent"],
        mode="sequential",
        engine="vllm",
        selected=["WeatherAgent"],
        dropped=["HotelAgent"],
        raw_output='{"route": ["WeatherAgent", "HotelAgent"]}',
        latency_ms=12.5,
        fallback_reason=None,
        default_used=False,
        catalog_version="abc123",
        model="plano-4b",
        confidence=0.87,
        scores={"WeatherAgent": 0.87},
        worker="router-a:42",
        decided_at=decided_at,
    )
    assert decision_decoder.decode(encode(decision)) == decision


def test_make_decision_records_fallback() -> None:
    event = ConversationEvent(event_id="e", conversation_id="c", messages=[])
    result = EngineResult(error="unparseable output", raw_output="I think weather?")
    routing = decide_routes(result, WITH_DEFAULT.agents, WITH_DEFAULT)
    decision = make_decision(
        event,
        routing,
        result,
        engine="rules",
        mode="parallel",
        catalog_version=WITH_DEFAULT.version,
        latency_ms=1.0,
        decided_at=datetime(2024, 1, 1, tzinfo=UTC),
    )
    assert decision.routes == ["ChitChatAgent"]
    assert decision.default_used is True
    assert decision.fallback_reason is not None
    assert "unparseable output" in decision.fallback_reason
    assert decision.raw_output == "I think weather?"
    assert decision.tenant is None
    assert decision.catalog_version == WITH_DEFAULT.version
