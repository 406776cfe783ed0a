"""``routeyard demo``: play the scripted conversations through a running pipeline and print
each decision and response."""

from __future__ import annotations

import asyncio
import sys
from typing import TextIO

from routeyard.consumers.client import RouteyardClient
from routeyard.consumers.dev.demo.script import CONVERSATIONS
from routeyard.consumers.settings import Settings
from routeyard.schemas import ConversationResponse, RoutingDecision


async def play(settings: Settings, *, out: TextIO = sys.stdout, timeout: float = 30.0) -> list[ConversationResponse]:
    """Returns every response, in script order. Raises TimeoutError if one does not come."""
    responses = []
    async with RouteyardClient(settings.kafka, prefix=settings.topic_prefix, watch_decisions=True) as client:
        for conversation_id, turns in CONVERSATIONS.items():
            out.write(f"\n=== conversation {conversation_id}\n")
            for text, mode in turns:
                event = client.event(conversation_id, text, mode=mode)
                out.write(f"user      > {text}\n")
                (response,) = await client.ask_many([event], timeout=timeout)
                decision = await _decision(client, event.event_id)
                out.write(_describe(decision, response))
                out.flush()
                responses.append(response)
    return responses


async def _decision(client: RouteyardClient, event_id: str) -> RoutingDecision | None:
    for _ in range(40):  # the decision is published before the tasks; allow the reader to catch up
        if event_id in client.decisions:
            return client.decisions.pop(event_id)
        await asyncio.sleep(0.025)
    return None


def _describe(decision: RoutingDecision | None, response: ConversationResponse) -> str:
    lines = []
    if decision is not None:
        routes = " -> ".join(decision.routes) if decision.mode == "sequential" else ", ".join(decision.routes)
        why = f" ({decision.fallback_reason})" if decision.fallback_reason else ""
        lines.append(
            f"  decision: [{routes or 'no route'}] mode={decision.mode} engine={decision.engine}"
            f" {decision.latency_ms:.2f} ms{why}"
        )
    lines.append(f"  response: {response.status}")
    for reply in response.replies:
        text = reply.content if reply.status == "ok" else f"error: {reply.error}"
        lines.append(f"    {reply.agent:<16}< {text}")
    if response.timed_out:
        lines.append(f"    timed out: {', '.join(response.timed_out)}")
    return "\n".join(lines) + "\n"
