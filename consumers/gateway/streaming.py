"""A turn as server-sent events: ``chat.completion.chunk`` objects, then ``data: [DONE]``.

The first chunk carries the role and the decision (``routeyard.decision``); then each agent's
reply as content chunks labelled with the agent; the last chunk before [DONE] carries
``finish_reason: "stop"`` and the whole turn's summary, as a non-streaming answer would. A turn
not answered in time ends with an error event (the status line was sent long before).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from typing import Any, cast

from routeyard.consumers.gateway.replies import Waiter
from routeyard.consumers.gateway.turns import Turns, answer_text
from routeyard.consumers.gateway.wire import DONE, chunk, decision_info, error_body, sse, summary
from routeyard.consumers.metrics import METRICS
from routeyard.schemas import ConversationEvent, ConversationResponse

__all__ = ["sse_turn"]


async def sse_turn(
    turns: Turns, event: ConversationEvent, waiter: Waiter, model: str, done: Callable[[], None]
) -> AsyncIterator[bytes]:
    """The events of one turn; ``done`` is called once it ended, however it ended (the client
    may go away: the generator is closed then)."""
    started = time.perf_counter()
    deadline = started + turns.cfg.turn_timeout_s
    try:
        response = await _first_of(waiter, deadline)
        decision = await turns.decision(waiter)
        first = {
            "event_id": event.event_id,
            "conversation_id": event.conversation_id,
            "decision": decision_info(decision),
        }
        yield chunk(event.event_id, model, {"role": "assistant", "content": ""}, first)
        if response is None:
            response = await asyncio.wait_for(asyncio.shield(waiter.response), max(0.0, deadline - time.perf_counter()))
        for agent, text in _contents(turns, response):
            yield chunk(event.event_id, model, {"content": text}, {"agent": agent})
        yield chunk(event.event_id, model, {}, summary(response, decision), finish="stop")
        yield DONE
        METRICS.gateway_requests.labels(kind="stream", status="200").inc()
    except TimeoutError:
        message = f"no response within {turns.cfg.turn_timeout_s:g} s for event {event.event_id}"
        yield sse(error_body(message, "timeout", "turn_timeout"))
        yield DONE
        METRICS.gateway_requests.labels(kind="stream", status="504").inc()
    finally:
        METRICS.gateway_seconds.labels(kind="stream").observe(time.perf_counter() - started)
        done()


async def _first_of(waiter: Waiter, deadline: float) -> ConversationResponse | None:
    """Until the decision or the response arrives; the response if it came first."""
    decided: asyncio.Future[Any] = asyncio.ensure_future(waiter.decided.wait())
    try:
        finished, _ = await asyncio.wait(
            [decided, cast("asyncio.Future[Any]", waiter.response)],
            timeout=max(0.0, deadline - time.perf_counter()),
            return_when=asyncio.FIRST_COMPLETED,
        )
    finally:
        decided.cancel()
    if not finished:
        raise TimeoutError
    return waiter.response.result() if waiter.response.done() else None


def _contents(turns: Turns, response: ConversationResponse) -> list[tuple[str | None, str]]:
    """(agent, text) of each content chunk: one per agent that answered (each reply is one
    piece), or the configured text of a turn without an answer (no agent)."""
    if response.status not in ("complete", "partial"):
        return [(None, answer_text(response, turns.cfg))]
    answered = [r for r in response.replies if r.status == "ok" and r.content]
    # separated as in the non-streaming answer: the client's concatenation reads the same
    return [(r.agent, ("\n\n" if i else "") + r.content) for i, r in enumerate(answered)]
