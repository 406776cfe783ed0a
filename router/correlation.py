"""Correlation: which agents an event still waits for, and what to publish next.

A ``Correlation`` is the durable state of one routed turn (the consumers layer keeps it in
Redis). Transitions are pure functions returning the new state plus the ``Effect``s it
implies; the caller stores the state (with the effects in its ``outbox``) *before* carrying the
effects out, so a crash between the two is repaired by re-running the outbox:

    start(...)        -> tasks for the first agent(s), or an immediate no-route response
    on_reply(...)     -> record a reply; next task (sequential) or the response when all are in
    on_deadline(...)  -> agents past their deadline time out (or are retried); retries that are
                         due are sent; the response if nothing is left

Retries: an agent with ``retries`` left whose attempt errors or times out is sent a new task (a
new attempt, with its own task id ``<task_id>@<attempt>`` and its own full timeout) after an
exponential backoff; an error reply marked ``retriable: false`` (an HTTP agent's 4xx) is final
at once. Each attempt yields exactly one ``Outcome`` (ok, error or timeout), which
the caller feeds to the agent's circuit breaker. The first ok reply of any attempt wins: an
earlier attempt answering ok after a retry was sent completes the agent, and whatever arrives
after that is counted as late. Nothing is ever published twice: the response is produced once,
when no agent is waiting, queued or retrying.

Forged replies: each slot holds a random secret and each task attempt carries the token
``task_token(secret, task_id)`` (``router/token.py``). ``on_reply`` refuses (outcome ``forged``,
``Transition.refused`` says why) a reply whose token, agent, tenant or conversation does not match
its task: it is never recorded, never reaches the context or the next agent, and yields no
``Outcome`` (so it never counts in a circuit breaker). Slots stored before tokens existed have no
secret; their replies are checked for agent, tenant and conversation only (a rolling upgrade).

Sequential mode runs agents in the decided order, each receiving the earlier replies. An
agent that errors does not stop the chain (the next agent sees the error); an agent that times
out does (the rest are reported as ``skipped``): the caller has already waited too long.

Filter chains (``router/filters.py``): a slot is an agent's or a filter's (``Slot.kind``). Input
filter slots run one by one before any agent; the agents get the messages as the last filter
that changed them left them. Output filter slots run one by one once every agent is settled (if
any answered ok), each seeing the replies as the filters before it left them. A ``blocked``
verdict, or a filter that errors or times out after its retries, stops the turn: the slots not
yet run are ``skipped`` and the response is ``blocked`` (or ``failed``) with the reason, and
carries no agent reply. Filter attempts yield ``Outcome``s marked ``filter`` (never a breaker's).
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Sequence
from datetime import UTC, datetime
from typing import Literal

import msgspec
from routeyard.router.filters import changed_messages, changed_replies, prior
from routeyard.router.token import new_secret, task_token, token_matches
from routeyard.schemas import (
    AgentReply,
    AgentTask,
    ConversationResponse,
    Message,
    Mode,
    PriorReply,
    ResponseStatus,
    TaskKind,
    encode,
    task_decoder,
)

SlotStatus = Literal["queued", "waiting", "retrying", "ok", "error", "timed_out", "skipped"]
ReplyOutcome = Literal["recorded", "duplicate", "late", "unknown", "forged"]
OutcomeKind = Literal["ok", "error", "timeout"]


class Effect(msgspec.Struct, frozen=True, kw_only=True):
    """One thing to carry out after the state is stored: publish a record, or extend the context.

    ``id`` is stable, so carrying out an effect twice is harmless (tasks are deduplicated by
    task id, responses by event id, context appends by effect id).
    """

    id: str
    topic: str | None = None
    key: str | None = None
    value: bytes | None = None
    context: list[Message] | None = None
    headers: list[tuple[str, bytes]] | None = None
    """Record headers (the trace context)."""


class Target(msgspec.Struct, frozen=True, kw_only=True):
    """An agent a turn goes to, with its per-attempt timeout and retry budget."""

    agent: str
    topic: str
    timeout_s: float
    retries: int = 0
    backoff_s: float = 0.0
    """Wait before the first retry; doubled for each further one, up to ``backoff_max_s``."""
    backoff_max_s: float = 0.0
    variant: str | None = None
    """The agent's variant this turn goes to (None: the agent has no variants)."""
    canary: bool = False
    """A variant other than the stable one: its outcomes feed its own breaker, not the agent's."""
    kind: TaskKind = "agent"
    """``agent``, or a filter of the turn's chain (``input_filter``, ``output_filter``)."""


class Slot(msgspec.Struct, frozen=True, kw_only=True):
    agent: str
    topic: str
    timeout_s: float
    task_id: str
    """The first attempt's task id; attempt n > 1 uses ``attempt_task_id(task_id, n)``."""
    status: SlotStatus = "queued"
    deadline: float | None = None
    reply: AgentReply | None = None
    attempt: int = 1
    """The attempt sent last (or to send next, while ``retrying``)."""
    retries: int = 0
    backoff_s: float = 0.0
    backoff_max_s: float = 0.0
    retry_at: float | None = None
    """While ``retrying``: when the next attempt is sent."""
    secret: str = ""
    """Key of this slot's task tokens (``router/token.py``). Empty in slots stored before tokens
    existed: their replies are accepted without a token (a rolling upgrade)."""
    variant: str | None = None
    """The agent's variant (its task carries it; outcomes are fed to the variant's health)."""
    canary: bool = False
    kind: TaskKind = "agent"

    @property
    def current_task_id(self) -> str:
        return attempt_task_id(self.task_id, self.attempt)

    def token(self, task_id: str) -> str:
        """The token a task of this slot carries ("" for a slot without a secret)."""
        return task_token(self.secret, task_id) if self.secret else ""


class Outcome(msgspec.Struct, frozen=True, kw_only=True):
    """How one attempt ended, for the agent's circuit breaker and metrics."""

    agent: str
    kind: OutcomeKind
    attempt: int
    retry: bool = False
    """A further attempt was scheduled because of this one."""
    variant: str | None = None
    canary: bool = False
    filter: bool = False
    """The attempt was a filter's (metrics by filter; never a circuit breaker's)."""
    verdict: str | None = None
    """A filter's ok answer: passed, changed or blocked."""


def attempt_task_id(task_id: str, attempt: int) -> str:
    return task_id if attempt <= 1 else f"{task_id}@{attempt}"


class Correlation(msgspec.Struct, frozen=True, kw_only=True):
    event_id: str
    conversation_id: str
    mode: Mode
    slots: list[Slot]
    context: list[Message]
    replies_topic: str
    response_topic: str
    tenant: str | None = None
    created_at: datetime | None = None
    metadata: dict[str, str] = msgspec.field(default_factory=dict)
    done: bool = False
    late_replies: int = 0
    outbox: list[Effect] = msgspec.field(default_factory=list)
    outbox_since: float = 0.0
    """When effects were last added to the outbox (an outbox older than a lease is stale)."""
    trace: dict[str, str] = msgspec.field(default_factory=dict)
    """The W3C trace context (traceparent, tracestate) every record of this turn carries."""
    stream_topic: str | None = None
    """Where agents publish AgentChunk records (the sender asked for a stream); None: no stream."""

    def headers(self) -> list[tuple[str, bytes]] | None:
        return [(k, v.encode("ascii")) for k, v in sorted(self.trace.items())] if self.trace else None

    @property
    def routes(self) -> list[str]:
        return [s.agent for s in self.slots if s.kind == "agent"]

    def next_wakeup(self) -> float | None:
        """When ``on_deadline`` next has something to do (None: nothing is waited for)."""
        times = [s.deadline for s in self.slots if s.status == "waiting" and s.deadline is not None]
        times += [s.retry_at for s in self.slots if s.status == "retrying" and s.retry_at is not None]
        return min(times) if times else None


class Transition(msgspec.Struct, frozen=True, kw_only=True):
    state: Correlation
    effects: list[Effect]
    response: ConversationResponse | None = None
    outcomes: list[Outcome] = msgspec.field(default_factory=list)
    withheld: list[str] = msgspec.field(default_factory=list)
    """Agents whose due retry was not sent because their circuit breaker is not closed."""
    refused: str | None = None
    """Why a reply was refused as forged (outcome ``forged``); None otherwise."""


def start(
    *,
    event_id: str,
    conversation_id: str,
    tenant: str | None,
    mode: Mode,
    agents: Sequence[Target | tuple[str, str, float]],
    context: list[Message],
    replies_topic: str,
    response_topic: str,
    created_at: datetime | None,
    metadata: dict[str, str],
    now: float,
    trace: dict[str, str] | None = None,
    secret: Callable[[], str] = new_secret,
    stream_topic: str | None = None,
    filters: Sequence[Target] = (),
) -> Transition:
    """Open a correlation for a routed turn. ``agents``: targets (or (name, topic, timeout_s)) in route order.
    ``filters``: the turn's filter chain (targets of kind input_filter / output_filter, in chain
    order; dropped when no agent was routed). ``secret`` makes each slot's token secret (injected
    by tests for deterministic tokens)."""
    targets = [a if isinstance(a, Target) else Target(agent=a[0], topic=a[1], timeout_s=a[2]) for a in agents]
    if targets:
        inputs = [f for f in filters if f.kind == "input_filter"]
        targets = [*inputs, *targets, *[f for f in filters if f.kind == "output_filter"]]
    slots = [
        Slot(
            agent=t.agent,
            topic=t.topic,
            timeout_s=t.timeout_s,
            task_id=f"{event_id}:{step}:{t.agent}",
            retries=t.retries,
            backoff_s=t.backoff_s,
            backoff_max_s=t.backoff_max_s,
            secret=secret(),
            variant=t.variant,
            canary=t.canary,
            kind=t.kind,
        )
        for step, t in enumerate(targets)
    ]
    state = Correlation(
        event_id=event_id,
        conversation_id=conversation_id,
        tenant=tenant,
        mode=mode,
        slots=slots,
        context=context,
        replies_topic=replies_topic,
        response_topic=response_topic,
        created_at=created_at,
        metadata=metadata,
        trace=trace or {},
        stream_topic=stream_topic,
    )
    return _advance(state, now)


def on_reply(
    state: Correlation, reply: AgentReply, now: float, blocked: Collection[str] = ()
) -> tuple[Transition, ReplyOutcome]:
    """Record a reply. The current attempt's reply settles the agent (or schedules a retry on an
    error); an earlier attempt's ok reply settles it too (the first good one wins); anything for
    an agent already settled, or an earlier attempt's error, is a duplicate or late. ``blocked``:
    agents whose breaker is not closed (see ``_advance``)."""
    found = _find(state.slots, reply.task_id)
    if found is None:
        return Transition(state=state, effects=[]), "unknown"
    index, attempt = found
    slot = state.slots[index]
    refused = refusal(state, slot, reply, attempt)
    if refused is not None:
        return Transition(state=state, effects=[], refused=refused), "forged"
    current = slot.status == "waiting" and attempt == slot.attempt
    rescue = slot.status in ("waiting", "retrying") and reply.status == "ok"
    if not (current or rescue):
        if slot.reply is not None and slot.reply.task_id == reply.task_id:
            return Transition(state=state, effects=[]), "duplicate"
        late = msgspec.structs.replace(state, late_replies=state.late_replies + 1)
        return Transition(state=late, effects=[]), "late"
    slots = list(state.slots)
    outcomes: list[Outcome] = []
    if current:
        slots[index] = _settle(slot, reply.status, reply, now, retriable=reply.retriable)
        retry = slots[index].status == "retrying"
        outcomes.append(
            Outcome(
                agent=slot.agent,
                kind=reply.status,
                attempt=attempt,
                retry=retry,
                variant=slot.variant,
                canary=slot.canary,
                filter=slot.kind != "agent",
                verdict=(reply.verdict or "passed") if slot.kind != "agent" and reply.status == "ok" else None,
            )
        )
    else:  # an earlier attempt (already counted as failed) answered ok after all
        slots[index] = msgspec.structs.replace(slot, status="ok", reply=reply, retry_at=None)
    transition = _advance(msgspec.structs.replace(state, slots=slots), now, blocked)
    return msgspec.structs.replace(transition, outcomes=_unretried(outcomes, transition.withheld)), "recorded"


def refusal(state: Correlation, slot: Slot, reply: AgentReply, attempt: int) -> str | None:
    """Why ``reply`` (for ``slot``'s attempt ``attempt``) is not its task's genuine answer; None if it is."""
    if reply.agent != slot.agent:
        return f"reply agent {reply.agent!r} does not match its task's agent {slot.agent!r}"
    if (reply.tenant or None) != (state.tenant or None) or reply.conversation_id != state.conversation_id:
        return "reply tenant or conversation does not match its task"
    if slot.secret and not token_matches(slot.secret, attempt_task_id(slot.task_id, attempt), reply.token):
        return "reply token does not match its task"
    return None


def _find(slots: Sequence[Slot], task_id: str) -> tuple[int, int] | None:
    """(slot index, attempt) of the slot a task id belongs to."""
    base, _, suffix = task_id.rpartition("@")
    attempt = int(suffix) if base and suffix.isdigit() else 1
    base = base if attempt > 1 else task_id
    for i, slot in enumerate(slots):
        if slot.task_id == base and attempt <= slot.attempt:
            return i, attempt
    return None


def _settle(slot: Slot, kind: OutcomeKind, reply: AgentReply | None, now: float, *, retriable: bool = True) -> Slot:
    """The slot after its current attempt ended: done, or retrying if attempts are left (and the
    failure is one another attempt may cure: an error reply marked not retriable is final)."""
    if kind != "ok" and retriable and slot.attempt <= slot.retries:
        delay = min(slot.backoff_max_s, slot.backoff_s * 2.0 ** (slot.attempt - 1))
        return msgspec.structs.replace(slot, status="retrying", reply=reply, retry_at=now + delay)
    status: SlotStatus = "timed_out" if kind == "timeout" else kind
    return msgspec.structs.replace(slot, status=status, reply=reply)


def stage(state: Correlation, effects: list[Effect], now: float) -> Correlation:
    """The state to store: ``effects`` added to its outbox, to be carried out after the write."""
    if not effects:
        return state
    return msgspec.structs.replace(state, outbox=[*state.outbox, *effects], outbox_since=now)


def redeliver(state: Correlation, now: float) -> Correlation:
    """The outbox was never confirmed (its writer died): its tasks may never have left.

    Their agents' clocks restart now, so a task published late is not already past its
    deadline; the task ids stay the same, so an agent that did get the first copy skips this one.
    """
    slots = {s.current_task_id: s for s in state.slots}
    deadlines: dict[str, float] = {}
    outbox = []
    for effect in state.outbox:
        slot = slots.get(effect.id.removeprefix("task:"))
        if effect.id.startswith("task:") and effect.value is not None and slot and slot.status == "waiting":
            deadlines[slot.task_id] = now + slot.timeout_s
            task = task_decoder.decode(effect.value)
            refreshed = msgspec.structs.replace(task, deadline=datetime.fromtimestamp(deadlines[slot.task_id], UTC))
            effect = msgspec.structs.replace(effect, value=encode(refreshed))
        outbox.append(effect)
    new_slots = [
        msgspec.structs.replace(s, deadline=deadlines[s.task_id]) if s.task_id in deadlines else s for s in state.slots
    ]
    return msgspec.structs.replace(state, slots=new_slots, outbox=outbox, outbox_since=now)


def on_deadline(
    state: Correlation, now: float, blocked: Collection[str] = (), *, replies_read_to: float | None = None
) -> Transition:
    """Attempts past their deadline time out (retried if attempts are left); due retries are sent,
    except to the agents in ``blocked`` (see ``_advance``).

    ``replies_read_to``: every reply written before this time has been read (default ``now``). An
    attempt whose deadline is later than that is not timed out yet, however late ``now`` is: its
    reply may be among those still unread, and an agent that answered in time never counts as
    timed out because the correlator fell behind.

    A final timeout drops an earlier attempt's error reply: the agent is reported timed out.
    """
    cutoff = now if replies_read_to is None else min(now, replies_read_to)
    slots = list(state.slots)
    outcomes: list[Outcome] = []
    for i, s in enumerate(slots):
        if s.status == "waiting" and s.deadline is not None and s.deadline <= cutoff:
            slots[i] = _settle(s, "timeout", s.reply, now)
            retry = slots[i].status == "retrying"
            if not retry:
                slots[i] = msgspec.structs.replace(slots[i], reply=None)
            outcomes.append(
                Outcome(
                    agent=s.agent,
                    kind="timeout",
                    attempt=s.attempt,
                    retry=retry,
                    variant=s.variant,
                    canary=s.canary,
                    filter=s.kind != "agent",
                )
            )
    transition = _advance(msgspec.structs.replace(state, slots=slots), now, blocked)
    return msgspec.structs.replace(transition, outcomes=_unretried(outcomes, transition.withheld))


def _unretried(outcomes: list[Outcome], withheld: list[str]) -> list[Outcome]:
    """An attempt whose retry was withheld led to no further attempt."""
    if not withheld:
        return outcomes
    return [msgspec.structs.replace(o, retry=False) if o.retry and o.agent in withheld else o for o in outcomes]


def _advance(state: Correlation, now: float, blocked: Collection[str] = ()) -> Transition:
    """Start whatever may start now; finish when nothing is waiting or queued.

    A retry that is due for an agent in ``blocked`` (its circuit breaker is open or probing) is
    not sent: the failed attempt stands as the agent's result, as if no attempts were left.
    Retrying into an open breaker would only add load to an agent known to be failing, and
    keep the response waiting for another timeout.
    """
    if state.done:
        return Transition(state=state, effects=[])
    slots = list(state.slots)
    withheld = [s.agent for s in slots if s.agent in blocked and s.status == "retrying" and _ready(s, now)]
    if withheld:
        slots = [_give_up(s) if s.agent in withheld and s.status == "retrying" else s for s in slots]
    effects: list[Effect] = []
    _run(state, slots, effects, now)
    state = msgspec.structs.replace(state, slots=slots)
    if any(s.status in ("queued", "waiting", "retrying") for s in slots):
        return Transition(state=state, effects=effects, withheld=withheld)
    response = _response(state, now)
    effects.extend(_finish_effects(state, response))
    done = msgspec.structs.replace(state, done=True)
    return Transition(state=done, effects=effects, response=response, withheld=withheld)


def _give_up(slot: Slot) -> Slot:
    """A retrying slot that will not be retried: its last attempt's failure is final (an error
    reply of that attempt stands; otherwise the attempt timed out)."""
    current = slot.reply is not None and slot.reply.task_id == slot.current_task_id
    if current:
        return msgspec.structs.replace(slot, status="error", retry_at=None)
    return msgspec.structs.replace(slot, status="timed_out", reply=None, retry_at=None)


def _ready(slot: Slot, now: float) -> bool:
    """Queued, or retrying with its backoff over."""
    return slot.status == "queued" or (slot.status == "retrying" and (slot.retry_at or 0.0) <= now)


def _run(state: Correlation, slots: list[Slot], effects: list[Effect], now: float) -> None:
    """Dispatch what may go now: the input filters one by one, then the agents, then the output
    filters one by one (only once every agent is settled and one of them answered ok)."""
    inputs = [i for i, s in enumerate(slots) if s.kind == "input_filter"]
    agents = [i for i, s in enumerate(slots) if s.kind == "agent"]
    if not _run_filters(state, slots, inputs, effects, now, messages=state.context, replies=[]):
        return
    messages = changed_messages(state.context, [slots[i].reply for i in inputs])
    if state.mode == "sequential":
        _advance_chain(state, slots, agents, messages, effects, now)
    else:
        for i in agents:
            if _ready(slots[i], now):
                slots[i] = _dispatch(state, slots[i], step=i, prior=[], effects=effects, now=now, messages=messages)
    if any(slots[i].status in ("queued", "waiting", "retrying") for i in agents):
        return
    outputs = [i for i, s in enumerate(slots) if s.kind == "output_filter"]
    if not any(slots[i].status == "ok" for i in agents):
        _skip(slots, outputs)
        return
    _run_filters(state, slots, outputs, effects, now, messages=messages, replies=_agent_replies(slots))


def _run_filters(
    state: Correlation,
    slots: list[Slot],
    chain: list[int],
    effects: list[Effect],
    now: float,
    *,
    messages: list[Message],
    replies: list[AgentReply],
) -> bool:
    """Advance a filter chain one filter at a time; True when every filter of it passed or changed.
    A filter that blocked, errored or timed out stops the turn: every slot not yet run is skipped."""
    for i in chain:
        slot = slots[i]
        if slot.status in ("error", "timed_out") or (slot.reply is not None and slot.reply.verdict == "blocked"):
            _skip(slots, range(len(slots)))
            return False
        if slot.status == "ok":
            continue
        if _ready(slot, now):
            answers = [slots[j].reply for j in chain if j < i]
            slots[i] = _dispatch(
                state,
                slot,
                step=i,
                prior=prior(changed_replies(replies, answers)),
                effects=effects,
                now=now,
                messages=changed_messages(messages, answers),
                notes=_notes(slots[:i]),
            )
        return False
    return True


def _skip(slots: list[Slot], indexes: Iterable[int]) -> None:
    for j in indexes:
        if slots[j].status == "queued":
            slots[j] = msgspec.structs.replace(slots[j], status="skipped")


def _notes(slots: Sequence[Slot]) -> dict[str, str]:
    """The notes the filters before a slot left (a later note of the same name wins)."""
    notes: dict[str, str] = {}
    for s in slots:
        if s.kind != "agent" and s.reply is not None:
            notes.update(s.reply.notes)
    return notes


def _agent_replies(slots: Sequence[Slot]) -> list[AgentReply]:
    return [s.reply for s in slots if s.kind == "agent" and s.reply is not None]


def _advance_chain(
    state: Correlation, slots: list[Slot], agents: list[int], messages: list[Message], effects: list[Effect], now: float
) -> None:
    for n, i in enumerate(agents):
        slot = slots[i]
        if slot.status == "waiting" or (slot.status == "retrying" and not _ready(slot, now)):
            return
        if slot.status == "timed_out":
            _skip(slots, agents[n + 1 :])
            return
        if _ready(slot, now):
            earlier = [
                PriorReply(agent=s.agent, status=s.reply.status, content=s.reply.content or s.reply.error or "")
                for s in (slots[j] for j in agents[:n])
                if s.reply is not None
            ]
            slots[i] = _dispatch(state, slot, step=i, prior=earlier, effects=effects, now=now, messages=messages)
            return


def _dispatch(
    state: Correlation,
    slot: Slot,
    *,
    step: int,
    prior: list[PriorReply],
    effects: list[Effect],
    now: float,
    messages: list[Message],
    notes: dict[str, str] | None = None,
) -> Slot:
    deadline = now + slot.timeout_s
    attempt = slot.attempt + 1 if slot.status == "retrying" else slot.attempt
    task_id = attempt_task_id(slot.task_id, attempt)
    task = AgentTask(
        task_id=task_id,
        event_id=state.event_id,
        conversation_id=state.conversation_id,
        tenant=state.tenant,
        agent=slot.agent,
        messages=messages,
        reply_topic=state.replies_topic,
        deadline=datetime.fromtimestamp(deadline, UTC),
        prior_replies=prior,
        step=step,
        attempt=attempt,
        metadata=state.metadata,
        token=slot.token(task_id),
        variant=slot.variant,
        stream_topic=state.stream_topic if slot.kind == "agent" else None,
        kind=slot.kind,
        filter_notes=notes or {},
    )
    effects.append(
        Effect(
            id=f"task:{task_id}",
            topic=slot.topic,
            key=state.conversation_id,
            value=encode(task),
            headers=state.headers(),
        )
    )
    return msgspec.structs.replace(slot, status="waiting", deadline=deadline, attempt=attempt, retry_at=None)


def stopped_by(slots: Sequence[Slot]) -> tuple[ResponseStatus, str] | None:
    """(blocked | failed, why) when a filter stopped the turn; None otherwise."""
    for s in slots:
        if s.kind == "agent":
            continue
        if s.reply is not None and s.status == "ok" and s.reply.verdict == "blocked":
            return "blocked", f"{s.agent}: {s.reply.content or 'blocked'}"
        if s.status == "error":
            return "failed", f"filter {s.agent} failed: {s.reply.error if s.reply else 'error'}"
        if s.status == "timed_out":
            return "failed", f"filter {s.agent} timed out"
    return None


def response_status(slots: list[Slot]) -> ResponseStatus:
    stop = stopped_by(slots)
    if stop is not None:
        return stop[0]
    agents = [s for s in slots if s.kind == "agent"]
    if not agents:
        return "no_route"
    ok = sum(1 for s in agents if s.status == "ok")
    if ok == len(agents):
        return "complete"
    return "partial" if ok else "failed"


def filter_verdicts(slots: Sequence[Slot]) -> dict[str, str]:
    """Each filter that answered ok: its name -> passed | changed | blocked."""
    return {s.agent: s.reply.verdict or "passed" for s in slots if s.kind != "agent" and s.reply and s.status == "ok"}


def _response(state: Correlation, now: float) -> ConversationResponse:
    agents = [s for s in state.slots if s.kind == "agent"]
    stop = stopped_by(state.slots)
    outputs = [s.reply for s in state.slots if s.kind == "output_filter"]
    replies = [] if stop else changed_replies(_agent_replies(state.slots), outputs)
    return ConversationResponse(
        event_id=state.event_id,
        conversation_id=state.conversation_id,
        tenant=state.tenant,
        status=response_status(state.slots),
        routes=state.routes,
        replies=[msgspec.structs.replace(r, token="") for r in replies],
        timed_out=[s.agent for s in agents if s.status == "timed_out"],
        skipped=[s.agent for s in agents if s.status == "skipped"],
        created_at=state.created_at,
        responded_at=datetime.fromtimestamp(now, UTC),
        variants={s.agent: s.variant for s in state.slots if s.variant is not None},
        reason=stop[1] if stop else None,
        filters=filter_verdicts(state.slots),
    )


def _finish_effects(state: Correlation, response: ConversationResponse) -> list[Effect]:
    said = [
        Message(role="assistant", content=r.content, name=r.agent, awaiting_input=r.awaiting_input)
        for r in response.replies
        if r.status == "ok" and r.content
    ]
    effects = [Effect(id=f"ctx:{state.event_id}", context=said)] if said else []
    effects.append(
        Effect(
            id=f"response:{state.event_id}",
            topic=state.response_topic,
            key=state.conversation_id,
            value=encode(response),
            headers=state.headers(),
        )
    )
    return effects
