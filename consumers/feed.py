"""What one streamed turn's reader sees, in order: its decision, its agents' chunks, its response.

A ``TurnFeed`` is filled by the client's readers (decisions and responses from one consumer,
chunks from another) and drained by ``RouteyardClient.stream``. Within a task attempt chunks are
passed on in ``seq`` order: a chunk at or below a seq already passed on (a duplicate, a
replay) is dropped; a gap (a lost chunk) is passed over, since chunks are best effort and the
response holds every reply in full. At most ``max_chunks`` chunks are held unread; beyond that
chunks are dropped (a flood of chunks cannot exhaust memory), never the decision or the response.

Chunks are not authenticated (a task's token stays between the agent and the router): a reader
that must trust what it shows waits for the response, whose replies the correlator checked.
"""

from __future__ import annotations

import asyncio
import collections
import logging

from routeyard.schemas import AgentChunk, ConversationResponse, RoutingDecision

log = logging.getLogger(__name__)

Item = RoutingDecision | AgentChunk | ConversationResponse
MAX_CHUNKS = 10_000
COMPLETION_GRACE_S = 0.5
"""How long a response waits for chunks still on their way (they travel on another topic)."""


class TurnFeed:
    def __init__(self, *, max_chunks: int = MAX_CHUNKS) -> None:
        self._items: collections.deque[Item] = collections.deque()
        self._ready = asyncio.Event()
        self._max_chunks = max_chunks
        self._held = 0
        self._next_seq: dict[str, int] = {}
        self.text: dict[str, str] = {}
        """Every task attempt's text passed on so far, by task id."""
        self.dropped = 0

    def put(self, item: RoutingDecision | ConversationResponse) -> None:
        self._items.append(item)
        self._ready.set()

    def chunk(self, chunk: AgentChunk) -> None:
        if chunk.seq < self._next_seq.get(chunk.task_id, 0):
            return
        if self._held >= self._max_chunks:
            self.dropped += 1
            return
        self._next_seq[chunk.task_id] = chunk.seq + 1
        self.text[chunk.task_id] = self.text.get(chunk.task_id, "") + chunk.text
        self._held += 1
        self._items.append(chunk)
        self._ready.set()

    async def get(self) -> Item:
        while not self._items:
            self._ready.clear()
            await self._ready.wait()
        item = self._items.popleft()
        if isinstance(item, AgentChunk):
            self._held -= 1
        return item

    def behind(self, response: ConversationResponse) -> bool:
        """Some streamed reply's chunks passed on so far are a strict prefix of its content: the
        rest is likely still on its way."""
        for reply in response.replies:
            text = self.text.get(reply.task_id)
            if text is not None and len(text) < len(reply.content) and reply.content.startswith(text):
                return True
        return False

    def pending(self) -> list[Item]:
        """What is held and not yet read (in order), emptied."""
        items, self._items = list(self._items), collections.deque()
        self._held = 0
        return items
