"""Filter chains in the correlation: pure transitions (router/correlation.py, router/filters.py)."""

from __future__ import annotations

import msgspec
import pytest
from routeyard.router.catalog import CatalogError, catalog_from_dict
from routeyard.router.correlation import Correlation, Target, Transition, on_deadline, on_reply, start
from routeyard.router.filters import input_chain, output_chain
from routeyard.router.token import task_token
from routeyard.schemas import AgentReply, AgentTask, Message, PriorReply, response_decoder, task_decoder

NOW = 1_700_000_000.0
SECRET = "0123456789abcdef0123456789abcdef"
CONTEXT = [Message(role="user", content="mail ann@example.com about the weather")]
AGENTS = [("WeatherAgent", "ry.agent.WeatherAgent", 10.0), ("CalendarAgent", "ry.agent.CalendarAgent", 10.0)]


def _filter(name: str, kind: str = "input_filter", retries: int = 0) -> Target:
    return Target(agent=name, topic=f"ry.filter.{name}", timeout_s=2.0, retries=retries, kind=kind)  # type: ignore[arg-type]


def _start(filters: list[Target], agents: list[tuple[str, str, float]] = AGENTS, mode: str = "parallel") -> Transition:
    return start(
        event_id="ev1",
        conversation_id="c1",
        tenant=None,
        mode=mode,  # type: ignore[arg-type]
        agents=agents,
        context=CONTEXT,
        replies_topic="ry.replies",
        response_topic="ry.responses",
        created_at=None,
        metadata={},
        now=NOW,
        secret=lambda: SECRET,
        filters=filters,
    )


def _tasks(t: Transition) -> list[AgentTask]:
    return [task_decoder.decode(e.value) for e in t.effects if e.id.startswith("task:") and e.value]


def _answer(task: AgentTask, status: str = "ok", content: str = "", **fields: object) -> AgentReply:
    return AgentReply(
        task_id=task.task_id,
        event_id=task.event_id,
        conversation_id=task.conversation_id,
        agent=task.agent,
        status=status,  # type: ignore[arg-type]
        content=content,
        error="boom" if status == "error" else None,
        token=task_token(SECRET, task.task_id),
        **fields,  # type: ignore[arg-type]
    )


def _reply(state: Correlation, reply: AgentReply, now: float = NOW + 1) -> Transition:
    transition, outcome = on_reply(state, reply, now)
    assert outcome == "recorded"
    return transition


def test_input_filters_run_one_by_one_and_the_agents_get_the_changed_messages() -> None:
    t = _start([_filter("Redact"), _filter("Enrich")])
    [first] = _tasks(t)
    assert (first.agent, first.kind, first.messages) == ("Redact", "input_filter", CONTEXT)
    redacted = [Message(role="user", content="mail [EMAIL_1] about the weather")]
    t = _reply(t.state, _answer(first, verdict="changed", messages=redacted, notes={"[EMAIL_1]": "ann@example.com"}))
    [second] = _tasks(t)
    assert (second.agent, second.messages, second.filter_notes) == (
        "Enrich",
        redacted,
        {"[EMAIL_1]": "ann@example.com"},
    )
    t = _reply(t.state, _answer(second, verdict="passed"))
    agents = _tasks(t)
    assert [a.agent for a in agents] == ["WeatherAgent", "CalendarAgent"]
    assert all(a.messages == redacted and a.kind == "agent" and a.filter_notes == {} for a in agents)
    for task in agents:
        t = _reply(t.state, _answer(task, content=f"{task.agent} ok"))
    assert t.response is not None
    assert (t.response.status, t.response.routes) == ("complete", ["WeatherAgent", "CalendarAgent"])
    assert t.response.filters == {"Redact": "changed", "Enrich": "passed"}
    assert [r.agent for r in t.response.replies] == ["WeatherAgent", "CalendarAgent"]


def test_a_blocked_verdict_ends_the_turn_without_any_agent_task() -> None:
    t = _start([_filter("Guard"), _filter("Redact"), _filter("Restore", "output_filter")])
    [guard] = _tasks(t)
    t = _reply(t.state, _answer(guard, content="no shell commands", verdict="blocked"))
    assert _tasks(t) == []
    assert t.response is not None and t.state.done
    assert (t.response.status, t.response.reason) == ("blocked", "Guard: no shell commands")
    assert t.response.replies == [] and t.response.filters == {"Guard": "blocked"}
    assert t.response.skipped == ["WeatherAgent", "CalendarAgent"]
    [published] = [e for e in t.effects if e.id.startswith("response:")]
    assert response_decoder.decode(published.value).status == "blocked"


def test_a_filter_error_is_retried_then_fails_the_turn_naming_the_filter() -> None:
    t = _start([_filter("Flaky", retries=1)])
    [first] = _tasks(t)
    t = _reply(t.state, _answer(first, "error"))
    assert t.response is None and t.outcomes[0].filter and t.outcomes[0].retry
    [second] = _tasks(t)  # no backoff: the second attempt goes at once
    assert (second.agent, second.attempt) == ("Flaky", 2)
    t = _reply(t.state, _answer(second, "error"), NOW + 6)
    assert t.response is not None
    assert (t.response.status, t.response.reason) == ("failed", "filter Flaky failed: boom")
    assert t.response.replies == []


def test_a_filter_that_times_out_fails_the_turn() -> None:
    t = _start([_filter("Slow")])
    t = on_deadline(t.state, NOW + 3)
    assert t.response is not None
    assert (t.response.status, t.response.reason) == ("failed", "filter Slow timed out")
    assert [o.kind for o in t.outcomes] == ["timeout"] and t.outcomes[0].filter


def test_output_filters_see_the_replies_and_change_them_for_the_caller() -> None:
    t = _start([_filter("Restore", "output_filter")], agents=AGENTS[:1])
    [agent] = _tasks(t)
    t = _reply(t.state, _answer(agent, content="mailed [EMAIL_1]"))
    [out] = _tasks(t)
    assert out.kind == "output_filter"
    assert out.prior_replies == [PriorReply(agent="WeatherAgent", status="ok", content="mailed [EMAIL_1]")]
    changed = [PriorReply(agent="WeatherAgent", status="ok", content="mailed ann@example.com")]
    t = _reply(t.state, _answer(out, verdict="changed", replies=changed))
    assert t.response is not None and t.response.status == "complete"
    assert t.response.content == "mailed ann@example.com"
    assert t.response.filters == {"Restore": "changed"}


def test_output_filters_are_skipped_when_no_agent_answered_ok() -> None:
    t = _start([_filter("Restore", "output_filter")], agents=AGENTS[:1])
    [agent] = _tasks(t)
    t = _reply(t.state, _answer(agent, "error"))
    assert t.response is not None and t.response.status == "failed" and t.response.reason is None
    assert _tasks(t) == [] and t.response.filters == {}


def test_sequential_agents_after_filters_see_changed_messages_and_earlier_replies() -> None:
    t = _start([_filter("Redact")], mode="sequential")
    [redact] = _tasks(t)
    changed = [Message(role="user", content="x")]
    t = _reply(t.state, _answer(redact, verdict="changed", messages=changed))
    [first] = _tasks(t)
    t = _reply(t.state, _answer(first, content="sunny"))
    [second] = _tasks(t)
    assert second.messages == changed
    assert second.prior_replies == [PriorReply(agent="WeatherAgent", status="ok", content="sunny")]


def test_no_route_runs_no_filter() -> None:
    t = _start([_filter("Guard")], agents=[])
    assert _tasks(t) == [] and t.response is not None and t.response.status == "no_route"


def test_a_forged_filter_answer_is_refused() -> None:
    t = _start([_filter("Guard")])
    [guard] = _tasks(t)
    forged = msgspec.structs.replace(_answer(guard, verdict="passed"), token="f" * 32)
    transition, outcome = on_reply(t.state, forged, NOW + 1)
    assert outcome == "forged" and transition.state == t.state


def _catalog(filters: list[dict[str, object]], agent_filters: list[str] | None = None) -> object:
    agent = {"name": "A", "description": "a", **({"filters": agent_filters} if agent_filters else {})}
    return catalog_from_dict({"filters": filters, "agents": [agent, {"name": "B", "description": "b"}]})


def test_the_catalog_plans_global_then_per_agent_chains() -> None:
    c = _catalog(
        [
            {"name": "G", "kind": "python"},
            {"name": "Own", "kind": "http", "url": "http://127.0.0.1:1/f", "global": False, "timeout": "2s"},
            {"name": "Out", "kind": "python", "stage": "output", "retries": 2},
        ],
        ["Own"],
    )
    assert [f.name for f in input_chain(c.filters, c.agent_filters, ["A"])] == ["G", "Own"]  # type: ignore[attr-defined]
    assert [f.name for f in input_chain(c.filters, c.agent_filters, ["B"])] == ["G"]  # type: ignore[attr-defined]
    assert [f.name for f in output_chain(c.filters, c.agent_filters, ["B"])] == ["Out"]  # type: ignore[attr-defined]
    assert c.filters[1].timeout_s == 2.0  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("filters", "agent_filters", "problem"),
    [
        ([{"name": "G", "kind": "python"}], ["Nope"], "agent 'A': filter 'Nope' is not in the catalog's filters"),
        ([{"name": "G", "kind": "python"}], ["G"], "agent 'A': filter 'G' already runs for every turn (global)"),
        ([{"name": "H", "kind": "http"}], None, "filter 'H' is kind http: it needs a url"),
        ([{"name": "H", "kind": "http", "url": "ftp://x/"}], None, "must be an absolute http:// or https:// URL"),
        ([{"name": "H", "kind": "http", "url": "http://u:p@x/"}], None, "url must not hold credentials"),
        ([{"name": "G", "kind": "python"}, {"name": "G", "kind": "python"}], None, "duplicate filter names: G"),
        ([{"name": "G", "kind": "lua"}], None, "kind"),
        ([{"name": "B", "kind": "python"}], None, "filters and agents must have different names: B"),
        ([{"name": "G", "kind": "python", "timeout": "soon"}], None, "not a duration"),
    ],
)
def test_bad_filter_config_is_one_clear_line_at_load(
    filters: list[dict[str, object]], agent_filters: list[str] | None, problem: str
) -> None:
    with pytest.raises(CatalogError) as caught:
        _catalog(filters, agent_filters)
    assert problem in str(caught.value)
    assert "Traceback" not in str(caught.value)
