"""Correlation transitions: start / on_reply / on_deadline, their effects and the one response."""

from __future__ import annotations

from datetime import UTC, datetime

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from routeyard.router.correlation import (
    Correlation,
    Effect,
    Slot,
    Transition,
    on_deadline,
    on_reply,
    response_status,
    start,
)
from routeyard.router.token import task_token
from routeyard.schemas import (
    AgentReply,
    AgentTask,
    ConversationResponse,
    Message,
    Mode,
    PriorReply,
    response_decoder,
    task_decoder,
)

NOW = 1_700_000_000.0
EVENT = "ev1"
CONV = "conv1"
REPLIES = "ry.replies"
RESPONSES = "ry.responses"
CREATED = datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC)
CONTEXT = [Message(role="user", content="weather in Paris and book a table")]
AGENTS = [
    ("WeatherAgent", "ry.agent.WeatherAgent", 10.0),
    ("RestaurantAgent", "ry.agent.RestaurantAgent", 20.0),
]
THREE = [*AGENTS, ("FlightAgent", "ry.agent.FlightAgent", 5.0)]

SECRET = "0123456789abcdef0123456789abcdef"
_state_decoder = msgspec.json.Decoder(Correlation)


def _start(mode: Mode = "parallel", agents: list[tuple[str, str, float]] | None = None) -> Transition:
    return start(
        event_id=EVENT,
        conversation_id=CONV,
        tenant="acme",
        mode=mode,
        agents=AGENTS if agents is None else agents,
        context=CONTEXT,
        replies_topic=REPLIES,
        response_topic=RESPONSES,
        created_at=CREATED,
        metadata={"trace": "t-1"},
        now=NOW,
        secret=lambda: SECRET,
    )


def _task_id(step: int, agent: str) -> str:
    return f"{EVENT}:{step}:{agent}"


def _reply(step: int, agent: str, status: str = "ok", content: str = "", error: str | None = None) -> AgentReply:
    return AgentReply(
        task_id=_task_id(step, agent),
        event_id=EVENT,
        conversation_id=CONV,
        agent=agent,
        status=status,
        content=content or (f"{agent} says hi" if status == "ok" else ""),
        error=error,  # type: ignore[arg-type]
        tenant="acme",
        token=task_token(SECRET, _task_id(step, agent)),
    )


def _tasks(effects: list[Effect]) -> list[AgentTask]:
    return [task_decoder.decode(e.value) for e in effects if e.id.startswith("task:") and e.value]


def _responses(effects: list[Effect]) -> list[ConversationResponse]:
    return [response_decoder.decode(e.value) for e in effects if e.id.startswith("response:") and e.value]


def _recorded(state: Correlation, reply: AgentReply, now: float = NOW + 1) -> Transition:
    transition, outcome = on_reply(state, reply, now)
    assert outcome == "recorded"
    return transition


# -- parallel -----------------------------------------------------------------------------------


def test_parallel_start_emits_one_task_per_agent() -> None:
    t = _start()
    assert not t.state.done
    assert t.response is None
    assert [(e.id, e.topic, e.key) for e in t.effects] == [
        (f"task:{EVENT}:0:WeatherAgent", "ry.agent.WeatherAgent", CONV),
        (f"task:{EVENT}:1:RestaurantAgent", "ry.agent.RestaurantAgent", CONV),
    ]
    weather, restaurant = _tasks(t.effects)
    assert weather.task_id == _task_id(0, "WeatherAgent")
    assert weather.agent == "WeatherAgent"
    assert weather.event_id == EVENT
    assert weather.conversation_id == CONV
    assert weather.tenant == "acme"
    assert weather.messages == CONTEXT
    assert weather.reply_topic == REPLIES
    assert weather.deadline == datetime.fromtimestamp(NOW + 10.0, UTC)
    assert weather.prior_replies == []
    assert weather.step == 0
    assert weather.metadata == {"trace": "t-1"}
    assert restaurant.task_id == _task_id(1, "RestaurantAgent")
    assert restaurant.deadline == datetime.fromtimestamp(NOW + 20.0, UTC)
    assert restaurant.step == 1
    assert [s.status for s in t.state.slots] == ["waiting", "waiting"]
    assert [s.deadline for s in t.state.slots] == [NOW + 10.0, NOW + 20.0]


def test_task_ids_are_deterministic() -> None:
    first, second = _start(), _start()
    assert [e.id for e in first.effects] == [e.id for e in second.effects]
    assert [s.task_id for s in first.state.slots] == [s.task_id for s in second.state.slots]


def test_all_ok_completes_with_replies_in_route_order() -> None:
    t = _start()
    # Replies arrive out of route order.
    t = _recorded(t.state, _reply(1, "RestaurantAgent", content="Table booked"))
    assert not t.state.done
    assert t.effects == []
    t = _recorded(t.state, _reply(0, "WeatherAgent", content="Sunny"), now=NOW + 3)
    assert t.state.done
    assert t.response is not None
    (effect,) = [e for e in t.effects if e.id.startswith("response:")]
    assert effect.id == f"response:{EVENT}"
    assert effect.topic == RESPONSES
    assert effect.key == CONV
    (response,) = _responses(t.effects)
    assert response == t.response
    assert response.status == "complete"
    assert response.event_id == EVENT
    assert response.conversation_id == CONV
    assert response.tenant == "acme"
    assert response.routes == ["WeatherAgent", "RestaurantAgent"]
    assert [(r.agent, r.content) for r in response.replies] == [
        ("WeatherAgent", "Sunny"),
        ("RestaurantAgent", "Table booked"),
    ]
    assert response.timed_out == []
    assert response.skipped == []
    assert response.created_at == CREATED
    assert response.responded_at == datetime.fromtimestamp(NOW + 3, UTC)
    assert response.content == "Table booked"


def test_completion_extends_context_with_assistant_messages_named_by_agent() -> None:
    t = _start()
    t = _recorded(t.state, _reply(0, "WeatherAgent", content="Sunny"))
    t = _recorded(t.state, _reply(1, "RestaurantAgent", content="Table booked"))
    (ctx,) = [e for e in t.effects if e.context is not None]
    assert ctx.id == f"ctx:{EVENT}"
    assert ctx.topic is None
    assert ctx.context == [
        Message(role="assistant", content="Sunny", name="WeatherAgent"),
        Message(role="assistant", content="Table booked", name="RestaurantAgent"),
    ]
    # The context is extended before the response goes out.
    assert [e.id for e in t.effects] == [f"ctx:{EVENT}", f"response:{EVENT}"]


def test_one_error_one_ok_is_partial_and_context_has_only_the_ok_reply() -> None:
    t = _start()
    t = _recorded(t.state, _reply(0, "WeatherAgent", status="error", error="upstream down"))
    t = _recorded(t.state, _reply(1, "RestaurantAgent", content="Table booked"))
    (response,) = _responses(t.effects)
    assert response.status == "partial"
    assert [(r.agent, r.status) for r in response.replies] == [
        ("WeatherAgent", "error"),
        ("RestaurantAgent", "ok"),
    ]
    assert response.replies[0].error == "upstream down"
    (ctx,) = [e for e in t.effects if e.context is not None]
    assert ctx.context == [Message(role="assistant", content="Table booked", name="RestaurantAgent")]


def test_all_error_is_failed_without_context_effect() -> None:
    t = _start()
    t = _recorded(t.state, _reply(0, "WeatherAgent", status="error", error="a"))
    t = _recorded(t.state, _reply(1, "RestaurantAgent", status="error", error="b"))
    assert t.state.done
    (response,) = _responses(t.effects)
    assert response.status == "failed"
    assert response.content == ""
    assert [e for e in t.effects if e.context is not None] == []


def test_no_agents_responds_no_route_immediately() -> None:
    t = _start(agents=[])
    assert t.state.done
    assert [e.id for e in t.effects] == [f"response:{EVENT}"]
    (response,) = _responses(t.effects)
    assert response.status == "no_route"
    assert response.routes == []
    assert response.replies == []
    assert t.response == response


def test_duplicate_reply_changes_nothing() -> None:
    t = _start()
    t = _recorded(t.state, _reply(0, "WeatherAgent", content="Sunny"))
    again, outcome = on_reply(t.state, _reply(0, "WeatherAgent", content="Sunny again"), NOW + 2)
    assert outcome == "duplicate"
    assert again.effects == []
    assert again.state == t.state
    assert again.state.slots[0].reply is not None
    assert again.state.slots[0].reply.content == "Sunny"


def test_reply_after_timeout_is_late_and_counted() -> None:
    t = _start()
    t = _recorded(t.state, _reply(1, "RestaurantAgent"))
    t = on_deadline(t.state, NOW + 10.0)
    assert t.state.done
    late, outcome = on_reply(t.state, _reply(0, "WeatherAgent", content="Sunny, finally"), NOW + 11)
    assert outcome == "late"
    assert late.effects == []
    assert late.response is None
    assert late.state.late_replies == 1
    assert late.state.done
    assert late.state.slots == t.state.slots
    later, outcome = on_reply(late.state, _reply(0, "WeatherAgent"), NOW + 12)
    assert outcome == "late"
    assert later.state.late_replies == 2


def test_unknown_task_id() -> None:
    t = _start()
    stranger = msgspec.structs.replace(_reply(0, "WeatherAgent"), task_id="other-event:0:WeatherAgent")
    same, outcome = on_reply(t.state, stranger, NOW + 1)
    assert outcome == "unknown"
    assert same.effects == []
    assert same.state == t.state


def test_deadline_times_out_waiting_agents() -> None:
    t = _start()
    t = _recorded(t.state, _reply(0, "WeatherAgent", content="Sunny"))
    t = on_deadline(t.state, NOW + 20.0)  # exactly at RestaurantAgent's deadline
    assert t.state.done
    (response,) = _responses(t.effects)
    assert response.status == "partial"
    assert response.timed_out == ["RestaurantAgent"]
    assert [r.agent for r in response.replies] == ["WeatherAgent"]
    assert response.skipped == []


def test_deadline_times_out_only_agents_past_their_deadline() -> None:
    t = on_deadline(_start().state, NOW + 15.0)
    assert not t.state.done
    assert t.effects == []
    assert [s.status for s in t.state.slots] == ["timed_out", "waiting"]
    t = on_deadline(t.state, NOW + 20.0)
    (response,) = _responses(t.effects)
    assert response.status == "failed"
    assert response.timed_out == ["WeatherAgent", "RestaurantAgent"]


def test_deadline_before_any_deadline_changes_nothing() -> None:
    t = _start()
    same = on_deadline(t.state, NOW + 9.99)
    assert same.effects == []
    assert same.response is None
    assert same.state == t.state


# -- sequential ---------------------------------------------------------------------------------


def test_sequential_start_emits_only_the_first_task() -> None:
    t = _start("sequential", THREE)
    (task,) = _tasks(t.effects)
    assert len(t.effects) == 1
    assert task.agent == "WeatherAgent"
    assert task.step == 0
    assert task.prior_replies == []
    assert task.deadline == datetime.fromtimestamp(NOW + 10.0, UTC)
    assert [s.status for s in t.state.slots] == ["waiting", "queued", "queued"]


def test_sequential_next_task_carries_prior_replies() -> None:
    t = _start("sequential", THREE)
    t = _recorded(t.state, _reply(0, "WeatherAgent", content="Sunny"), now=NOW + 4)
    (task,) = _tasks(t.effects)
    assert len(t.effects) == 1
    assert task.agent == "RestaurantAgent"
    assert task.task_id == _task_id(1, "RestaurantAgent")
    assert task.step == 1
    assert task.deadline == datetime.fromtimestamp(NOW + 4 + 20.0, UTC)
    assert task.prior_replies == [PriorReply(agent="WeatherAgent", status="ok", content="Sunny")]
    assert t.effects[0].topic == "ry.agent.RestaurantAgent"

    t = _recorded(t.state, _reply(1, "RestaurantAgent", content="Booked"), now=NOW + 6)
    (task,) = _tasks(t.effects)
    assert task.agent == "FlightAgent"
    assert task.prior_replies == [
        PriorReply(agent="WeatherAgent", status="ok", content="Sunny"),
        PriorReply(agent="RestaurantAgent", status="ok", content="Booked"),
    ]

    t = _recorded(t.state, _reply(2, "FlightAgent", content="Flight found"), now=NOW + 7)
    (response,) = _responses(t.effects)
    assert response.status == "complete"
    assert [r.agent for r in response.replies] == ["WeatherAgent", "RestaurantAgent", "FlightAgent"]
    assert response.content == "Flight found"


def test_sequential_error_continues_the_chain_with_the_error_as_prior() -> None:
    t = _start("sequential", THREE)
    t = _recorded(t.state, _reply(0, "WeatherAgent", status="error", error="weather API down"))
    (task,) = _tasks(t.effects)
    assert task.agent == "RestaurantAgent"
    assert task.prior_replies == [
        PriorReply(agent="WeatherAgent", status="error", content="weather API down"),
    ]
    t = _recorded(t.state, _reply(1, "RestaurantAgent", content="Booked"))
    t = _recorded(t.state, _reply(2, "FlightAgent", content="Found"))
    (response,) = _responses(t.effects)
    assert response.status == "partial"
    assert response.skipped == []
    assert response.timed_out == []


def test_sequential_timeout_stops_the_chain_and_skips_the_rest() -> None:
    t = _start("sequential", THREE)
    t = _recorded(t.state, _reply(0, "WeatherAgent", content="Sunny"), now=NOW + 1)
    assert t.state.next_wakeup() == NOW + 1 + 20.0
    t = on_deadline(t.state, NOW + 1 + 20.0)
    assert t.state.done
    assert _tasks(t.effects) == []
    (response,) = _responses(t.effects)
    assert response.status == "partial"
    assert response.timed_out == ["RestaurantAgent"]
    assert response.skipped == ["FlightAgent"]
    assert [r.agent for r in response.replies] == ["WeatherAgent"]
    # A skipped agent's task was never sent, so a reply for it is not a recorded one.
    _, outcome = on_reply(t.state, _reply(2, "FlightAgent"), NOW + 30)
    assert outcome == "late"


def test_sequential_first_agent_timing_out_is_failed() -> None:
    t = on_deadline(_start("sequential", THREE).state, NOW + 10.0)
    (response,) = _responses(t.effects)
    assert response.status == "failed"
    assert response.timed_out == ["WeatherAgent"]
    assert response.skipped == ["RestaurantAgent", "FlightAgent"]


# -- next_wakeup and response_status ------------------------------------------------------------


def test_next_wakeup_is_the_earliest_waiting_deadline() -> None:
    t = _start("parallel", THREE)
    assert t.state.next_wakeup() == NOW + 5.0
    t = _recorded(t.state, _reply(2, "FlightAgent"))
    assert t.state.next_wakeup() == NOW + 10.0
    t = _recorded(t.state, _reply(0, "WeatherAgent"))
    assert t.state.next_wakeup() == NOW + 20.0
    t = _recorded(t.state, _reply(1, "RestaurantAgent"))
    assert t.state.done
    assert t.state.next_wakeup() is None


def test_next_wakeup_is_none_after_no_route() -> None:
    assert _start(agents=[]).state.next_wakeup() is None


def _slot(status: str) -> Slot:
    return Slot(agent="A", topic="t", timeout_s=1.0, task_id="e:0:A", status=status)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("statuses", "expected"),
    [
        ([], "no_route"),
        (["ok"], "complete"),
        (["ok", "ok"], "complete"),
        (["ok", "error"], "partial"),
        (["timed_out", "ok"], "partial"),
        (["ok", "timed_out", "skipped"], "partial"),
        (["error"], "failed"),
        (["error", "timed_out", "skipped"], "failed"),
    ],
)
def test_response_status(statuses: list[str], expected: str) -> None:
    assert response_status([_slot(s) for s in statuses]) == expected


# -- property: any interleaving ends in exactly one response ------------------------------------

_action = st.one_of(
    st.tuples(st.just("reply"), st.integers(0, 4), st.sampled_from(["ok", "error"])),
    st.tuples(st.just("tick"), st.floats(0.0, 40.0, allow_nan=False), st.just("")),
)


@settings(max_examples=300, deadline=None)
@given(
    timeouts=st.lists(st.sampled_from([1.0, 5.0, 10.0, 30.0]), min_size=0, max_size=5),
    mode=st.sampled_from(["parallel", "sequential"]),
    actions=st.lists(_action, max_size=30),
)
def test_any_interleaving_ends_in_exactly_one_response(
    timeouts: list[float], mode: Mode, actions: list[tuple[str, object, str]]
) -> None:
    agents = [(f"Agent{i}", f"ry.agent.Agent{i}", timeout) for i, timeout in enumerate(timeouts)]
    now = NOW
    t = _start(mode, agents)
    effects = list(t.effects)
    finished = int(t.state.done)
    state = t.state
    for kind, arg, status in [*actions, ("tick", 1000.0, "")]:
        # The consumers layer stores the state as JSON between transitions.
        state = _state_decoder.decode(msgspec.json.encode(state))
        was_done = state.done
        if kind == "reply" and isinstance(arg, int) and arg < len(agents):
            now += 0.5
            t, _ = on_reply(state, _reply(arg, agents[arg][0], status=status, error="e"), now)
        elif kind == "tick" and isinstance(arg, float):
            now += arg
            t = on_deadline(state, now)
        else:
            continue
        if was_done:
            assert t.effects == []
        finished += int(t.state.done and not was_done)
        assert (t.response is not None) == (t.state.done and not was_done)
        effects.extend(t.effects)
        state = t.state

    assert state.done
    assert finished == 1
    assert state.next_wakeup() is None
    responses = _responses(effects)
    assert len(responses) == 1
    task_ids = [e.id for e in effects if e.id.startswith("task:")]
    assert len(task_ids) == len(set(task_ids))
    assert all(e.id.startswith(("task:", "ctx:", "response:")) for e in effects)
    (response,) = responses
    routes = [a[0] for a in agents]
    assert response.routes == routes
    accounted = [r.agent for r in response.replies] + response.timed_out + response.skipped
    assert sorted(accounted) == sorted(routes)
    assert response.status == response_status(state.slots)
    if mode == "parallel":
        assert response.skipped == []
        assert len(task_ids) == len(agents)


def test_redeliver_restarts_the_clock_of_tasks_never_confirmed_published() -> None:
    from routeyard.router.correlation import redeliver, stage

    opened = start(
        event_id="e",
        conversation_id="c",
        tenant=None,
        mode="parallel",
        agents=[("A", "t.A", 5.0), ("B", "t.B", 7.0)],
        context=[Message(role="user", content="hi")],
        replies_topic="r",
        response_topic="resp",
        created_at=None,
        metadata={},
        now=100.0,
    )
    stored = stage(opened.state, opened.effects, 100.0)
    assert stored.outbox_since == 100.0 and [s.deadline for s in stored.slots] == [105.0, 107.0]
    # the writer died; a sweeper finds the outbox at t=112, after both original deadlines
    again = redeliver(stored, 112.0)
    assert [s.deadline for s in again.slots] == [117.0, 119.0]
    tasks = [task_decoder.decode(e.value) for e in again.outbox if e.id.startswith("task:")]
    assert [(t.task_id, t.deadline.timestamp()) for t in tasks] == [("e:0:A", 117.0), ("e:1:B", 119.0)]
    assert [e.id for e in again.outbox] == [e.id for e in stored.outbox]  # same ids: agents dedupe
    assert on_deadline(again, 112.0).response is None  # nothing times out at the moment of redelivery


def test_a_streamed_turn_names_its_stream_topic_in_every_task_a_plain_one_in_none() -> None:
    """The sender asked for a stream: every task (first agent and the next one in sequence, which is
    dispatched from the stored state) says where to publish chunks; a plain turn's tasks say nothing."""
    plain = _start("sequential")
    assert [t.stream_topic for t in _tasks(plain.effects)] == [None]
    streamed = start(
        event_id=EVENT,
        conversation_id=CONV,
        tenant="acme",
        mode="sequential",
        agents=AGENTS,
        context=CONTEXT,
        replies_topic=REPLIES,
        response_topic=RESPONSES,
        created_at=CREATED,
        metadata={},
        now=NOW,
        secret=lambda: SECRET,
        stream_topic="ry.streams",
    )
    stored = _state_decoder.decode(msgspec.json.encode(streamed.state))
    assert [t.stream_topic for t in _tasks(streamed.effects)] == ["ry.streams"]
    second = _recorded(stored, _reply(0, "WeatherAgent"))
    assert [(t.agent, t.stream_topic) for t in _tasks(second.effects)] == [("RestaurantAgent", "ry.streams")]
