"""A turn as server-sent events: ``chat.completion.chunk`` objects, then ``data: [DONE]``.

The first chunk carries the role and the decision (``routeyard.decision``); then the agents'
chunks (AgentChunk from the streams topic) as they arrive, each a content chunk labelled with
its agent (``routeyard.agent``), their text as the agent wrote it; when the response arrives,
each agent that did not stream gets its whole reply as one content chunk (after earlier content,
preceded by a blank line, as the non-streaming answer joins replies), and a streamed reply whose
last chunks were lost gets its missing tail. The last chunk before [DONE] carries
``finish_reason: "stop"`` and the whole turn's summary, as a non-streaming answer would (the
durable replies). A turn not answered in time ends with an error event (the status line was
sent long before) and is kept, for GET /v1/turns/{id} later.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from typing import Any, cast

from routeyard.consumers.feed import COMPLETION_GRACE_S, Item, TurnFeed
from routeyard.consumers.gateway.replies import Waiter
from routeyard.consumers.gateway.turns import Turns, answer_text
from routeyard.consumers.gateway.wire import DONE, chunk, decision_info, error_body, sse, summary
from routeyard.consumers.metrics import METRICS
from routeyard.schemas import AgentChunk, ConversationEvent, ConversationResponse

__all__ = ["sse_turn"]


async def sse_turn(
    turns: Turns, event: ConversationEvent, waiter: Waiter, model: str, done: Callable[[], None]
) -> AsyncIterator[bytes]:
    """The events of one turn; ``done`` is called once it ended, however it ended (the client
    may go away: the generator is closed then)."""
    started = time.perf_counter()
    loop = asyncio.get_running_loop()
    deadline = loop.time() + turns.cfg.turn_timeout_s
    feed = waiter.feed or TurnFeed()
    sent: dict[str, str] = {}
    """Text forwarded so far, by task id."""
    try:
        await _first_of(waiter, deadline)
        decision = await turns.decision(waiter)
        first = {
            "event_id": event.event_id,
            "conversation_id": event.conversation_id,
            "decision": decision_info(decision),
        }
        yield chunk(event.event_id, model, {"role": "assistant", "content": ""}, first)
        item = await _next(feed, waiter, deadline)
        while not isinstance(item, ConversationResponse):
            if isinstance(item, AgentChunk) and item.text:
                sent[item.task_id] = sent.get(item.task_id, "") + item.text
                yield chunk(event.event_id, model, {"content": item.text}, {"agent": item.agent})
            item = await _next(feed, waiter, deadline)
        response, grace = item, loop.time() + COMPLETION_GRACE_S
        while feed.behind(response) and (late := await _before(feed, grace)) is not None:
            if isinstance(late, AgentChunk) and late.text:
                sent[late.task_id] = sent.get(late.task_id, "") + late.text
                yield chunk(event.event_id, model, {"content": late.text}, {"agent": late.agent})
        for agent, text in _rest(turns, response, sent):
            yield chunk(event.event_id, model, {"content": text}, {"agent": agent})
        yield chunk(event.event_id, model, {}, summary(response, decision), finish="stop")
        yield DONE
        METRICS.gateway_requests.labels(kind="stream", status="200").inc()
    except TimeoutError:
        await turns.replies.keep(event.event_id)
        message = (
            f"no response within {turns.cfg.turn_timeout_s:g} s for event {event.event_id}"
            f" (GET /v1/turns/{event.event_id} later)"
        )
        yield sse(error_body(message, "timeout", "turn_timeout"))
        yield DONE
        METRICS.gateway_requests.labels(kind="stream", status="504").inc()
    finally:
        METRICS.gateway_seconds.labels(kind="stream").observe(time.perf_counter() - started)
        done()


async def _first_of(waiter: Waiter, deadline: float) -> None:
    """Until the decision or the response arrives (chunks wait in the feed meanwhile)."""
    decided: asyncio.Future[Any] = asyncio.ensure_future(waiter.decided.wait())
    try:
        finished, _ = await asyncio.wait(
            [decided, cast("asyncio.Future[Any]", waiter.response)],
            timeout=max(0.0, deadline - asyncio.get_running_loop().time()),
            return_when=asyncio.FIRST_COMPLETED,
        )
    finally:
        decided.cancel()
    if not finished:
        raise TimeoutError


async def _next(feed: TurnFeed, waiter: Waiter, deadline: float) -> Item:
    """The feed's next chunk or the response (a feedless waiter gets only the response)."""
    if waiter.feed is None:
        async with asyncio.timeout_at(deadline):
            return await asyncio.shield(waiter.response)
    item = await _before(feed, deadline)
    if item is None:
        raise TimeoutError
    return item


async def _before(feed: TurnFeed, deadline: float) -> Item | None:
    try:
        async with asyncio.timeout_at(deadline):
            return await feed.get()
    except TimeoutError:
        return None


def _rest(turns: Turns, response: ConversationResponse, sent: dict[str, str]) -> list[tuple[str | None, str]]:
    """(agent, text) of the content chunks the response adds: the whole reply of each agent that
    did not stream, the missing tail of a streamed reply whose last chunks were lost, or the
    configured text of a turn without an answer (no agent)."""
    if response.status not in ("complete", "partial"):
        return [(None, answer_text(response, turns.cfg))]
    rest: list[tuple[str | None, str]] = []
    anything = bool(sent)
    for reply in response.replies:
        if reply.status != "ok" or not reply.content:
            continue
        streamed = sent.get(reply.task_id)
        if streamed is None:
            rest.append((reply.agent, ("\n\n" if anything else "") + reply.content))
            anything = True
        elif len(streamed) < len(reply.content) and reply.content.startswith(streamed):
            rest.append((reply.agent, reply.content[len(streamed) :]))
    return rest
