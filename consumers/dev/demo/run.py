"""``routeyard demo``: play the scripted conversations through a running pipeline and print
each decision and response (the transcript format of ``routeyard.consumers.cli.transcript``)."""

from __future__ import annotations

import sys
from typing import TextIO

from routeyard.consumers.cli.transcript import describe, wait_decision
from routeyard.consumers.client import RouteyardClient
from routeyard.consumers.dev.demo.script import CONVERSATIONS
from routeyard.consumers.settings import Settings
from routeyard.schemas import ConversationResponse


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
                decision = await wait_decision(client, response)
                out.write(describe(decision, response))
                out.flush()
                responses.append(response)
    return responses
