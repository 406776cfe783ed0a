"""Correlation retries: bounded attempts with backoff, the first good reply wins, one response."""

from __future__ import annotations

import msgspec
from routeyard.router.correlation import (
    Correlation,
    Target,
    Transition,
    attempt_task_id,
    on_deadline,
    on_reply,
    redeliver,
    stage,
    start,
)
from routeyard.router.token import task_token
from routeyard.schemas import AgentReply, Message, Mode, response_decoder, task_decoder

NOW = 1_700_000_000.0
EVENT = "ev@1"  # an '@' in the event id must not be mistaken for an attempt number
W = Target(agent="Weather", topic="ry.agent.Weather", timeout_s=10.0, retries=2, backoff_s=1.0, backoff_max_s=1.5)
R = Target(agent="Restaurant", topic="ry.agent.Restaurant", timeout_s=20.0)
SECRET = "0123456789abcdef0123456789abcdef"
_state_decoder = msgspec.json.Decoder(Correlation)


def _start(*targets: Target, mode: Mode = "parallel") -> Transition:
    return start(
        event_id=EVENT,
        conversation_id="c",
        tenant=None,
        mode=mode,
        agents=list(targets),
        context=[Message(role="user", content="weather and a table")],
        replies_topic="ry.replies",
        response_topic="ry.responses",
        created_at=None,
        metadata={},
        now=NOW,
        secret=lambda: SECRET,
    )


def _task_id(step: int, agent: str, attempt: int = 1) -> str:
    return attempt_task_id(f"{EVENT}:{step}:{agent}", attempt)


def _reply(task_id: str, agent: str = "Weather", status: str = "ok") -> AgentReply:
    return AgentReply(
        task_id=task_id,
        event_id=EVENT,
        conversation_id="c",
        agent=agent,
        status=status,  # type: ignore[arg-type]
        content=f"{agent} {task_id}" if status == "ok" else "",
        error=None if status == "ok" else "boom",
        token=task_token(SECRET, task_id),
    )


def _tasks(transition: Transition) -> list[tuple[str, int]]:
    return [
        (task.task_id, task.attempt)
        for task in (task_decoder.decode(e.value) for e in transition.effects if e.id.startswith("task:") and e.value)
    ]


def _responses(transition: Transition) -> list[str]:
    return [
        response_decoder.decode(e.value).status for e in transition.effects if e.id.startswith("response:") and e.value
    ]


def test_an_error_reply_schedules_a_retry_after_the_backoff_then_a_new_attempt() -> None:
    first = _start(W)
    assert _tasks(first) == [(_task_id(0, "Weather"), 1)]
    failed, outcome = on_reply(first.state, _reply(_task_id(0, "Weather"), status="error"), NOW + 2)
    assert outcome == "recorded" and failed.effects == [] and failed.response is None
    assert [(o.agent, o.kind, o.attempt, o.retry) for o in failed.outcomes] == [("Weather", "error", 1, True)]
    slot = failed.state.slots[0]
    assert (slot.status, slot.retry_at) == ("retrying", NOW + 3)
    assert failed.state.next_wakeup() == NOW + 3
    assert on_deadline(failed.state, NOW + 2.9).effects == []  # backoff not over
    retried = on_deadline(failed.state, NOW + 3)
    assert _tasks(retried) == [(_task_id(0, "Weather", 2), 2)]
    assert retried.state.slots[0].deadline == NOW + 3 + 10.0  # a full timeout per attempt
    done, outcome = on_reply(retried.state, _reply(_task_id(0, "Weather", 2)), NOW + 4)
    assert outcome == "recorded" and _responses(done) == ["complete"]
    assert done.response is not None and [r.task_id for r in done.response.replies] == [_task_id(0, "Weather", 2)]


def test_backoff_doubles_up_to_its_ceiling() -> None:
    state = _start(W).state
    state = on_reply(state, _reply(_task_id(0, "Weather"), status="error"), NOW)[0].state
    assert state.slots[0].retry_at == NOW + 1.0
    state = on_deadline(state, NOW + 1).state
    state = on_reply(state, _reply(_task_id(0, "Weather", 2), status="error"), NOW + 2)[0].state
    assert state.slots[0].retry_at == NOW + 2 + 1.5  # 2.0 capped at backoff_max_s


def test_retries_are_bounded_then_the_agent_fails_with_one_response() -> None:
    state = _start(W, R).state
    state = on_reply(state, _reply(_task_id(1, "Restaurant"), agent="Restaurant"), NOW)[0].state
    now = NOW
    responses: list[str] = []
    for attempt in (1, 2, 3):
        transition, _ = on_reply(state, _reply(_task_id(0, "Weather", attempt), status="error"), now)
        responses += _responses(transition)
        assert [o.retry for o in transition.outcomes] == [attempt < 3]
        now += 5
        transition = on_deadline(transition.state, now)
        responses += _responses(transition)
        state = transition.state
        assert len(_tasks(transition)) == (1 if attempt < 3 else 0)
    assert responses == ["partial"]
    assert state.done and state.slots[0].status == "error" and state.slots[0].attempt == 3


def test_a_timeout_is_retried_and_the_last_one_reports_the_agent_timed_out() -> None:
    one_retry = msgspec.structs.replace(W, retries=1, backoff_s=0.0)
    state = _start(one_retry).state
    timed_out = on_deadline(state, NOW + 10)
    assert [(o.kind, o.retry) for o in timed_out.outcomes] == [("timeout", True)]
    assert _tasks(timed_out) == [(_task_id(0, "Weather", 2), 2)]  # no backoff: sent at once
    final = on_deadline(timed_out.state, NOW + 20)
    assert [(o.kind, o.retry) for o in final.outcomes] == [("timeout", False)]
    assert final.response is not None and final.response.status == "failed"
    assert final.response.timed_out == ["Weather"] and final.response.replies == []


def test_an_earlier_attempts_late_ok_reply_wins_and_the_retry_reply_changes_nothing() -> None:
    state = on_deadline(_start(msgspec.structs.replace(W, backoff_s=0.0)).state, NOW + 10).state
    assert state.slots[0].attempt == 2
    rescued, outcome = on_reply(state, _reply(_task_id(0, "Weather", 1)), NOW + 11)
    assert outcome == "recorded" and _responses(rescued) == ["complete"]
    assert rescued.outcomes == []  # that attempt already counted as a timeout
    after, outcome = on_reply(rescued.state, _reply(_task_id(0, "Weather", 2)), NOW + 12)
    assert outcome == "late" and after.effects == [] and after.state.late_replies == 1


def test_an_ok_reply_during_the_backoff_cancels_the_retry() -> None:
    slow = msgspec.structs.replace(W, backoff_s=5.0)
    state = on_deadline(_start(slow).state, NOW + 10).state  # attempt 1 timed out: retry at +15
    assert state.slots[0].status == "retrying"
    rescued, outcome = on_reply(state, _reply(_task_id(0, "Weather", 1)), NOW + 12)
    assert outcome == "recorded" and _responses(rescued) == ["complete"] and _tasks(rescued) == []
    assert on_deadline(rescued.state, NOW + 15).effects == []


def test_duplicate_and_stale_error_replies_change_nothing() -> None:
    errored = on_reply(_start(W).state, _reply(_task_id(0, "Weather"), status="error"), NOW)[0].state
    again, outcome = on_reply(errored, _reply(_task_id(0, "Weather"), status="error"), NOW + 0.1)
    assert outcome == "duplicate" and again.state == errored and again.outcomes == []
    unknown, outcome = on_reply(errored, _reply(_task_id(0, "Weather", 3)), NOW + 0.2)
    assert outcome == "unknown" and unknown.state == errored


def test_sequential_chain_waits_for_the_retry_before_the_next_agent() -> None:
    state = _start(msgspec.structs.replace(W, backoff_s=0.0), R, mode="sequential").state
    retried, _ = on_reply(state, _reply(_task_id(0, "Weather"), status="error"), NOW)
    assert _tasks(retried) == [(_task_id(0, "Weather", 2), 2)]
    ok, _ = on_reply(retried.state, _reply(_task_id(0, "Weather", 2)), NOW + 1)
    (next_task,) = [task_decoder.decode(e.value) for e in ok.effects if e.value]
    assert next_task.agent == "Restaurant"
    assert [(p.agent, p.status) for p in next_task.prior_replies] == [("Weather", "ok")]


def test_a_due_retry_is_withheld_while_the_agents_breaker_is_open_and_the_error_stands() -> None:
    state = _start(W, R).state
    errored, _ = on_reply(state, _reply(_task_id(0, "Weather"), status="error"), NOW)
    assert errored.state.slots[0].status == "retrying" and errored.withheld == []
    early = on_deadline(errored.state, NOW + 0.5, blocked={"Weather"})  # backoff not over: nothing due yet
    assert early.withheld == [] and early.state.slots[0].status == "retrying"
    due = on_deadline(errored.state, NOW + 1, blocked={"Weather"})
    assert due.withheld == ["Weather"] and _tasks(due) == [] and due.outcomes == []  # no attempt: nothing to record
    slot = due.state.slots[0]
    assert (slot.status, slot.attempt, slot.retry_at) == ("error", 1, None)
    assert slot.reply is not None and slot.reply.error == "boom"
    done = on_reply(due.state, _reply(_task_id(1, "Restaurant"), agent="Restaurant"), NOW + 2)[0]
    assert _responses(done) == ["partial"]
    assert on_deadline(errored.state, NOW + 1, blocked={"Restaurant"}).withheld == []  # other agents' retries go


def test_a_withheld_retry_after_a_timeout_reports_the_agent_timed_out() -> None:
    state = on_deadline(_start(W).state, NOW + 10).state  # attempt 1 timed out: retry at +11
    withheld = on_deadline(state, NOW + 11, blocked={"Weather"})
    assert withheld.withheld == ["Weather"] and _tasks(withheld) == []
    assert withheld.response is not None and withheld.response.status == "failed"
    assert withheld.response.timed_out == ["Weather"]
    timed_out = on_deadline(_start(msgspec.structs.replace(W, backoff_s=0.0)).state, NOW + 10, blocked={"Weather"})
    assert [(o.kind, o.retry) for o in timed_out.outcomes] == [("timeout", False)] and _tasks(timed_out) == []


def test_a_withheld_retry_with_no_backoff_is_not_sent_on_the_error_reply() -> None:
    state = _start(msgspec.structs.replace(W, backoff_s=0.0), R, mode="sequential").state
    withheld, _ = on_reply(state, _reply(_task_id(0, "Weather"), status="error"), NOW, blocked={"Weather"})
    assert withheld.withheld == ["Weather"]
    # the attempt's failure is still recorded (for the breaker), but it led to no retry
    assert [(o.kind, o.retry) for o in withheld.outcomes] == [("error", False)]
    (next_task,) = [task_decoder.decode(e.value) for e in withheld.effects if e.value]
    assert next_task.agent == "Restaurant"  # the chain goes on past the failed agent, as with no retries left
    assert [(p.agent, p.status) for p in next_task.prior_replies] == [("Weather", "error")]


def test_a_retry_in_the_outbox_is_redelivered_with_its_own_task_id() -> None:
    retried = on_deadline(_start(msgspec.structs.replace(W, backoff_s=0.0)).state, NOW + 10)
    stored = _state_decoder.decode(msgspec.json.encode(stage(retried.state, retried.effects, NOW + 10)))
    again = redeliver(stored, NOW + 30)
    (task,) = [task_decoder.decode(e.value) for e in again.outbox if e.value]
    assert (task.task_id, task.attempt) == (_task_id(0, "Weather", 2), 2)
    assert task.deadline.timestamp() == NOW + 40 and again.slots[0].deadline == NOW + 40


def test_states_stored_before_retries_existed_still_decode() -> None:
    old = (
        b'{"event_id":"e","conversation_id":"c","mode":"parallel","context":[],"replies_topic":"r",'
        b'"response_topic":"s","slots":[{"agent":"A","topic":"t","timeout_s":5.0,"task_id":"e:0:A",'
        b'"status":"waiting","deadline":10.0}]}'
    )
    state = _state_decoder.decode(old)
    assert (state.slots[0].attempt, state.slots[0].retries) == (1, 0)
    final = on_deadline(state, 10.0)
    assert final.response is not None and final.response.timed_out == ["A"]


def test_a_deadline_waits_for_the_replies_not_yet_read() -> None:
    state = _start(msgspec.structs.replace(W, retries=0), R).state  # deadlines: NOW + 10 and NOW + 20
    held = on_deadline(state, NOW + 30, replies_read_to=NOW + 9)
    assert held.outcomes == [] and held.response is None  # both deadlines passed, but replies are unread
    partly = on_deadline(state, NOW + 30, replies_read_to=NOW + 15)
    assert [o.agent for o in partly.outcomes] == ["Weather"] and partly.response is None
    answered = on_reply(partly.state, _reply(_task_id(1, "Restaurant"), "Restaurant"), NOW + 30)[0]
    assert answered.response is not None and answered.response.status == "partial"
    assert answered.response.timed_out == ["Weather"]
