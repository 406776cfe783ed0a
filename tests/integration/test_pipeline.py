"""The core pipeline on each bus (in memory, and the real broker: tansu) with the real Valkey:
routing, multi-intent, no route, default agent, context, redelivery, dead letters, timeouts, and
two routers in one group."""

from __future__ import annotations

import collections
import logging
import re
import uuid

import pytest
from prometheus_client import REGISTRY
from routeyard.consumers.agents.agent import agent
from routeyard.consumers.dev.embedded import EmbeddedValkey
from routeyard.consumers.kafka.bus import Bus, Outgoing
from routeyard.schemas import (
    AgentTask,
    ConversationEvent,
    Message,
    dead_letter_decoder,
    decision_decoder,
    encode,
    response_decoder,
)

from tests.integration.stack import (
    Recorder,
    bus_for,
    catalog,
    joined,
    make_settings,
    publisher,
    read_all,
    running,
    settled,
    spec,
)

CATALOG = catalog(
    spec("WeatherAgent", "weather", "forecast"),
    spec("RestaurantAgent", "restaurant", "table"),
    spec("MessagingAgent", "text", "message"),
)


@pytest.fixture
def settings(bus: Bus, valkey: EmbeddedValkey, prefix: str):
    return make_settings(bus, valkey, prefix)


async def test_single_route(settings) -> None:
    agents = Recorder()
    async with running(settings, CATALOG, [agents.agent("WeatherAgent")]) as client:
        response = await client.ask("c1", "What's the weather in Paris?", timeout=30)
    assert response.status == "complete"
    assert response.routes == ["WeatherAgent"]
    assert [(r.agent, r.content) for r in response.replies] == [
        ("WeatherAgent", "WeatherAgent: What's the weather in Paris?")
    ]
    decisions = [decision_decoder.decode(v) for v in await read_all(settings, settings.topics.decisions)]
    assert [(d.event_id, d.routes, d.engine) for d in decisions] == [(response.event_id, ["WeatherAgent"], "rules")]


async def test_parallel_multi_intent(settings) -> None:
    agents = Recorder()
    with_delay = [agents.agent("RestaurantAgent", delay=0.3), agents.agent("MessagingAgent")]
    async with running(settings, CATALOG, with_delay) as client:
        response = await client.ask("c2", "Book a table and text Anna", timeout=30, mode="parallel")
    assert response.status == "complete"
    assert response.routes == ["RestaurantAgent", "MessagingAgent"]
    assert {r.agent for r in response.replies} == {"RestaurantAgent", "MessagingAgent"}
    # parallel: the messaging agent did not wait for (nor see) the restaurant's reply
    assert agents.tasks["MessagingAgent"][0].prior_replies == []


async def test_sequential_multi_intent_passes_earlier_replies(settings) -> None:
    agents = Recorder()
    seq = make_settings_mode(settings, "sequential")
    async with running(seq, CATALOG, [agents.agent("RestaurantAgent"), agents.agent("MessagingAgent")]) as client:
        response = await client.ask("c3", "Book a table and text Anna", timeout=30)
    assert response.status == "complete"
    assert [r.agent for r in response.replies] == ["RestaurantAgent", "MessagingAgent"]
    second = agents.tasks["MessagingAgent"][0]
    assert second.step == 1
    assert [(p.agent, p.content) for p in second.prior_replies] == [
        ("RestaurantAgent", "RestaurantAgent: Book a table and text Anna")
    ]
    assert response.replies[1].content.endswith("[after RestaurantAgent: RestaurantAgent: Book a table and text Anna]")


def make_settings_mode(settings, mode: str):
    return settings.model_copy(update={"router": settings.router.model_copy(update={"mode": mode})})


async def test_no_route_answers_at_once_without_tasks(settings) -> None:
    agents = Recorder()
    async with running(settings, CATALOG, [agents.agent("WeatherAgent")]) as client:
        response = await client.ask("c4", "Thanks, bye!", timeout=30)
    assert response.status == "no_route"
    assert response.replies == [] and response.routes == []
    assert agents.tasks == {}


async def test_no_route_goes_to_default_agent(settings) -> None:
    agents = Recorder()
    with_default = catalog(spec("WeatherAgent", "weather"), spec("Concierge"), default="Concierge")
    async with running(settings, with_default, [agents.agent("WeatherAgent"), agents.agent("Concierge")]) as client:
        response = await client.ask("c5", "Tell me something nice", timeout=30)
        await settled(settings, 0.2)
        decision = client.decisions.get(response.event_id)
    assert response.status == "complete"
    assert [r.agent for r in response.replies] == ["Concierge"]
    decisions = [decision_decoder.decode(v) for v in await read_all(settings, settings.topics.decisions)]
    (decision,) = decisions
    assert decision.default_used and decision.selected == [] and decision.routes == ["Concierge"]


async def test_follow_up_is_routed_with_context_and_agents_see_earlier_replies(settings) -> None:
    agents = Recorder()
    async with running(settings, CATALOG, [agents.agent("WeatherAgent")]) as client:
        first = await client.ask("c6", "What's the weather in Paris?", timeout=30)
        second = await client.ask("c6", "And tomorrow?", timeout=30)
    assert first.status == second.status == "complete"
    assert second.routes == ["WeatherAgent"]  # "And tomorrow?" names no agent: the context did
    context = agents.tasks["WeatherAgent"][1].messages
    assert [(m.role, m.name, m.content) for m in context] == [
        ("user", None, "What's the weather in Paris?"),
        ("assistant", "WeatherAgent", "WeatherAgent: What's the weather in Paris?"),
        ("user", None, "And tomorrow?"),
    ]


async def test_redelivered_events_do_not_dispatch_twice(settings) -> None:
    agents = Recorder()
    weather = agents.agent("WeatherAgent")
    events = [
        ConversationEvent(
            event_id=f"e{i}",
            conversation_id=f"conv{i}",
            messages=[Message(role="user", content=f"weather {i}?")],
        )
        for i in range(6)
    ]
    async with running(settings, CATALOG, [weather]) as client:
        await client.ask_many(events, timeout=30)
        await client.publish(events[:3])  # a producer retrying: the same events again
    group = f"{settings.topic_prefix}router"
    await _rewind(settings, group)  # the router will read every event again, as after a crash
    seen_again = REGISTRY.get_sample_value("routeyard_redelivered_events_total") or 0
    async with running(settings, CATALOG, [weather]) as client:
        marker = await client.ask("conv0", "weather marker?", timeout=30)  # same partition as e0
        assert marker.status == "complete"
        await settled(settings, 1.0)
    assert (REGISTRY.get_sample_value("routeyard_redelivered_events_total") or 0) - seen_again >= 1
    responses = [response_decoder.decode(v) for v in await read_all(settings, settings.topics.responses)]
    per_event = collections.Counter(r.event_id for r in responses)
    assert {e.event_id: per_event[e.event_id] for e in events} == {e.event_id: 1 for e in events}
    handled = collections.Counter(t.event_id for t in agents.tasks["WeatherAgent"])
    assert all(handled[e.event_id] == 1 for e in events)


async def _rewind(settings, group: str) -> None:
    consumer = bus_for(settings).consumer(group)
    await consumer.start()
    try:
        consumer.subscribe([settings.topics.conversations])  # join the (now empty) group
        while not consumer.assignment():
            await consumer.fetch(max_records=500, timeout_ms=100)
        assert await consumer.commit(dict.fromkeys(consumer.assignment(), 0))
    finally:
        await consumer.stop()


async def test_poison_messages_go_to_dead_letters_and_the_stream_goes_on(settings) -> None:
    agents = Recorder()
    bad = [
        b"not json at all",
        b'{"event_id": "x1"}',
        encode(ConversationEvent(event_id="x2", conversation_id="c", messages=[])),
        encode(
            ConversationEvent(
                event_id="x3",
                conversation_id="c",
                agents=["NoSuchAgent"],
                messages=[Message(role="user", content="weather?")],
            )
        ),
    ]
    async with running(settings, CATALOG, [agents.agent("WeatherAgent")]) as client:
        async with publisher(settings) as producer:
            for value in bad:
                await producer.publish([Outgoing(topic=settings.topics.conversations, value=value, key="c")])
        after = await client.ask("c", "weather after the poison?", timeout=30)
    assert after.status == "complete"
    letters = [dead_letter_decoder.decode(v) for v in await read_all(settings, settings.topics.dead_letters)]
    assert sorted(letter.original for letter in letters) == sorted(bad)
    assert all(letter.stage == "decode" and letter.source_topic == settings.topics.conversations for letter in letters)
    reasons = {letter.original: letter.error for letter in letters}
    assert "no user message" in reasons[bad[2]]
    assert "NoSuchAgent" in reasons[bad[3]]
    assert len({(letter.source_partition, letter.source_offset) for letter in letters}) == 4


async def test_agent_timeout_gives_partial_response(settings) -> None:
    agents = Recorder()
    slow_catalog = catalog(spec("WeatherAgent", "weather"), spec("SlowAgent", "slow", timeout="1s"))
    async with running(
        settings, slow_catalog, [agents.agent("WeatherAgent"), agents.agent("SlowAgent", delay=5)]
    ) as client:
        response = await client.ask("c7", "weather, slow please", timeout=30)
        # a reply arriving after the deadline must not produce a second response
        await settled(settings, 0.5)
    assert response.status == "partial"
    assert response.timed_out == ["SlowAgent"]
    assert [r.agent for r in response.replies] == ["WeatherAgent"]
    responses = [response_decoder.decode(v) for v in await read_all(settings, settings.topics.responses)]
    assert [r.event_id for r in responses] == [response.event_id]


async def test_agent_exception_becomes_error_reply(settings, caplog) -> None:
    """The caller gets a generic error with a reference id; the exception's text (which may hold a
    secret) stays in the agent's log under that id."""
    agents = Recorder()
    with caplog.at_level(logging.ERROR, logger="routeyard.consumers.agents.agent"):
        async with running(settings, CATALOG, [agents.agent("WeatherAgent", fail=True)]) as client:
            response = await client.ask("c8", "weather?", timeout=30)
    assert response.status == "failed"
    (reply,) = response.replies
    assert reply.status == "error"
    found = re.fullmatch(r"WeatherAgent failed \(ref ([0-9a-f]{12})\)", reply.error or "")
    assert found, reply.error
    logged = [r for r in caplog.records if found.group(1) in r.getMessage()]
    assert logged and "WeatherAgent is broken" in (logged[0].exc_text or "")


async def test_agent_may_opt_in_to_verbatim_errors(settings) -> None:
    async def broken(task: AgentTask) -> str:
        raise ValueError("the city is required")

    exposed = agent("WeatherAgent", "weather", expose_errors=True)(broken)
    async with running(settings, CATALOG, [exposed]) as client:
        response = await client.ask("c8b", "weather?", timeout=30)
    (reply,) = response.replies
    assert reply.error == "ValueError: the city is required"


async def test_two_router_workers_share_the_partitions(settings) -> None:
    agents = Recorder()
    async with running(settings, CATALOG, [agents.agent("WeatherAgent")], routers=2) as client:
        await joined(settings, f"{settings.topic_prefix}router", 2, 4)  # both members before the load
        events = [client.event(f"conv-{uuid.uuid4().hex[:6]}", "weather?") for _ in range(40)]
        responses = await client.ask_many(events, timeout=60)
    assert {r.status for r in responses} == {"complete"}
    decisions = [decision_decoder.decode(v) for v in await read_all(settings, settings.topics.decisions)]
    assert sorted(d.event_id for d in decisions) == sorted(e.event_id for e in events)
    assert len({d.worker for d in decisions}) == 2


async def test_reply_for_an_unknown_event_is_dead_lettered(settings) -> None:
    from routeyard.schemas import AgentReply

    stray = AgentReply(task_id="nope:0:WeatherAgent", event_id="nope", conversation_id="c9", agent="WeatherAgent")
    agents = Recorder()
    async with running(settings, CATALOG, [agents.agent("WeatherAgent")]) as client:
        async with publisher(settings) as producer:
            await producer.publish([Outgoing(topic=settings.topics.replies, value=encode(stray), key="c9")])
        assert (await client.ask("c9", "weather?", timeout=30)).status == "complete"
        await settled(settings, 0.5)
    letters = [dead_letter_decoder.decode(v) for v in await read_all(settings, settings.topics.dead_letters)]
    assert [(x.stage, x.source_topic, x.original) for x in letters] == [
        ("correlate", settings.topics.replies, encode(stray))
    ]
    assert "no correlation" in letters[0].error


async def test_a_closing_turn_does_not_repeat_side_effects(settings) -> None:
    """After "book a table and text Anna", "thanks, that's all" must neither book nor text again."""
    agents = Recorder()
    names = ["RestaurantAgent", "MessagingAgent"]
    async with running(settings, CATALOG, [agents.agent(n) for n in names]) as client:
        first = await client.ask("c-close", "Book a table for two and text Anna the address", timeout=30)
        closing = await client.ask("c-close", "thanks, that's all", timeout=30)
        follow_up = await client.ask("c-close", "and tomorrow?", timeout=30)  # short, referential
    assert first.routes == names and first.status == "complete"
    assert closing.status == "no_route" and closing.routes == []
    assert follow_up.routes == names
    assert [len(agents.tasks[n]) for n in names] == [2, 2]
