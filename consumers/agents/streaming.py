"""Streamed replies: an agent's reply published piece by piece while it is written.

    async with ChunkWriter(producer, task, max_bytes=settings.agent.max_reply_bytes) as writer:
        async for piece in model.stream(task.messages):
            await writer.write(piece)
    reply_content = writer.text

Each piece becomes an ``AgentChunk`` (seq 0, 1, 2, ... for the task attempt) on the task's
``stream_topic``, keyed by conversation id so the pieces stay in order. A task without a
``stream_topic`` (the sender did not ask for a stream) only collects the text.

Chunks are a best-effort side channel: ``write`` never waits for the broker (one background send,
in order, several pieces per publish when they come faster than the broker acknowledges), a
failed publish stops the stream but not the reply, and leaving the block waits at most
``flush_timeout_s`` for the chunks in hand, so a stream topic that is slow or missing delays the
reply by that much at most. The ``AgentReply`` stays the durable record: its content is ``text``,
the concatenation of every piece. ``write`` raises ``BadReply`` for a piece that is not ``str`` or
that takes the reply over ``max_bytes`` (UTF-8) in all.

Any agent runtime can reuse this: the Python ``@agent`` runtime for async-generator handlers, the
HTTP agent bridge for an agent's server-sent events.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncGenerator
from types import TracebackType
from typing import Self

from routeyard.consumers.errors import BadReply
from routeyard.consumers.kafka.bus import Outgoing, Producer
from routeyard.schemas import AgentChunk, AgentTask, encode

log = logging.getLogger(__name__)

FLUSH_TIMEOUT_S = 1.0


class ChunkWriter:
    def __init__(
        self, producer: Producer, task: AgentTask, *, max_bytes: int, flush_timeout_s: float = FLUSH_TIMEOUT_S
    ) -> None:
        self._producer = producer
        self._task = task
        self._max_bytes = max_bytes
        self._flush_timeout_s = flush_timeout_s
        self._parts: list[str] = []
        self._size = 0
        self._pending: list[Outgoing] = []
        self._sender: asyncio.Task[None] | None = None
        self._broken = task.stream_topic is None
        self.seq = 0
        """The number of chunks queued for publishing so far (the next chunk's seq)."""

    @property
    def text(self) -> str:
        """Everything written so far: the reply's content."""
        return "".join(self._parts)

    async def write(self, text: object) -> None:
        """Append ``text`` to the reply and queue it as the next chunk (empty text is skipped)."""
        if not isinstance(text, str):
            raise BadReply(f"{self._task.agent} yielded {type(text).__name__}, not str")
        if not text:
            return
        size = len(text.encode("utf-8", "surrogatepass"))
        if self._size + size > self._max_bytes:
            raise BadReply(f"reply of more than {self._max_bytes} bytes exceeds agent.max_reply_bytes")
        self._parts.append(text)
        self._size += size
        if not self._broken:
            self._pending.append(self._outgoing(text))
            self.seq += 1
            if self._sender is None:
                self._sender = asyncio.create_task(self._send())

    def _outgoing(self, text: str) -> Outgoing:
        task = self._task
        chunk = AgentChunk(
            task_id=task.task_id,
            event_id=task.event_id,
            conversation_id=task.conversation_id,
            agent=task.agent,
            attempt=task.attempt,
            seq=self.seq,
            text=text,
            tenant=task.tenant,
        )
        return Outgoing(topic=task.stream_topic or "", value=encode(chunk), key=task.conversation_id)

    async def _send(self) -> None:
        """Publish what is pending, in order, until nothing is; the first failure ends the stream."""
        try:
            while self._pending:
                batch, self._pending = self._pending, []
                await self._producer.publish(batch)
        except Exception as exc:
            log.warning(
                "agent %s: stream of task %s stopped at chunk %d (%s); the reply still goes out",
                self._task.agent, self._task.task_id, self.seq, type(exc).__name__,
            )  # fmt: skip
            self._stop_stream()
        finally:
            self._sender = None

    def _stop_stream(self) -> None:
        self._broken = True
        self._pending.clear()

    async def close(self) -> None:
        """Wait up to ``flush_timeout_s`` for the chunks in hand; give up on the rest."""
        sender = self._sender
        if sender is None:
            return
        done, _ = await asyncio.wait({sender}, timeout=self._flush_timeout_s)
        if not done:
            log.warning("agent %s: stream of task %s not flushed in time", self._task.agent, self._task.task_id)
            await self.abort()

    async def abort(self) -> None:
        """Stop publishing at once (the handler failed or ran out of time)."""
        self._stop_stream()
        sender = self._sender
        if sender is not None:
            sender.cancel()
            await asyncio.wait({sender})  # never raises the sender's CancelledError, nor swallows ours

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc_type is None or issubclass(exc_type, Exception):
            await self.close()  # what was written before a failure goes out: the reader sees where it stopped
        else:
            await self.abort()  # cancelled (the deadline passed, or shutdown): stop at once


async def write_all(pieces: AsyncGenerator[object, None], writer: ChunkWriter) -> None:
    """Write every piece an async generator yields; the generator is closed however this ends."""
    async with contextlib.aclosing(pieces):
        async for piece in pieces:
            await writer.write(piece)
