"""Multi-intent turns, parallel and sequential, streamed through the pipelined router worker.

Many conversations at once, several turns each, every turn for two agents: in parallel mode each
agent gets the turn without the other's reply; in sequential mode the second gets the first's
reply (``prior_replies``). Each turn is decided with the earlier turns and both replies to each in
its context, answered once, and each agent gets one task per turn.
"""

from __future__ import annotations

import asyncio
import collections

from routeyard.consumers.client import RouteyardClient
from routeyard.consumers.dev.embedded import EmbeddedValkey
from routeyard.consumers.kafka.bus import Bus
from routeyard.consumers.settings import Settings
from routeyard.schemas import ConversationResponse, Mode, response_decoder

from tests.integration.stack import Recorder, catalog, make_settings, read_all, running, spec

CATALOG = catalog(spec("RestaurantAgent", "table"), spec("MessagingAgent", "text"))
AGENTS = ["RestaurantAgent", "MessagingAgent"]
CONVERSATIONS, TURNS = 16, 3


def _text(conversation: str, turn: int) -> str:
    return f"book a table and text Anna ({conversation} turn {turn})"


async def _converse(client: RouteyardClient, conversation: str, mode: Mode) -> list[ConversationResponse]:
    texts = [_text(conversation, k) for k in range(TURNS)]
    return [await client.ask(conversation, text, mode=mode, timeout=60) for text in texts]


async def test_parallel_and_sequential_turns_stream_through_the_pipeline(
    bus: Bus, valkey: EmbeddedValkey, prefix: str
) -> None:
    await multi_intent_stream(make_settings(bus, valkey, prefix, pipeline="on", max_in_flight=8))


async def multi_intent_stream(settings: Settings) -> None:
    agents = Recorder()
    modes: dict[str, Mode] = {f"mi-{i}": "parallel" if i % 2 else "sequential" for i in range(CONVERSATIONS)}
    async with running(settings, CATALOG, [agents.agent(a, delay=0.01) for a in AGENTS]) as client:
        answers = await asyncio.gather(*(_converse(client, c, m) for c, m in modes.items()))
    responses = [r for rs in answers for r in rs]
    assert {r.status for r in responses} == {"complete"}
    assert {tuple(r.routes) for r in responses} == {tuple(AGENTS)}
    on_topic = collections.Counter(
        response_decoder.decode(v).event_id for v in await read_all(settings, settings.topics.responses)
    )
    assert sorted(on_topic) == sorted(r.event_id for r in responses)
    assert max(on_topic.values()) == 1
    for name in AGENTS:
        assert sorted(t.event_id for t in agents.tasks[name]) == sorted(on_topic)  # one task each, none twice
    for task in agents.tasks["MessagingAgent"]:
        sequential = modes[task.conversation_id] == "sequential"
        assert [p.agent for p in task.prior_replies] == (["RestaurantAgent"] if sequential else [])
        turn = int(task.messages[-1].content.split(" turn ")[1].rstrip(")"))
        users = [m.content for m in task.messages if m.role == "user"]
        assert users == [_text(task.conversation_id, k) for k in range(turn + 1)]  # earlier turns, in order
        assert len([m for m in task.messages if m.role == "assistant"]) == len(AGENTS) * turn  # both replies each
