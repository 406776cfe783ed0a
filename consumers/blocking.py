"""A blocking facade of ``RouteyardClient`` for code without an event loop (Flask, Django, scripts).

    from routeyard import SyncRouteyardClient

    with SyncRouteyardClient("kafka:9092") as client:
        response = client.ask("conv-42", "What's the weather in Paris?")
        for item in client.stream("conv-42", "And tell me a story"):
            ...  # RoutingDecision (with watch_decisions), AgentChunk..., then the ConversationResponse

The facade runs one ``RouteyardClient`` on a private event loop in a daemon thread; every call
hands a coroutine to that loop and blocks its caller until it is done. Calls from several threads
at once are safe (each waits for its own turn's response). Errors are those of
``RouteyardClient``: ``TurnRejected``, ``TurnTimeout``, ``CannotReach``. ``close()`` (or leaving
the ``with`` block) stops the client, the loop and the thread; it is idempotent.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Coroutine, Iterator, Sequence
from types import TracebackType
from typing import Any, Self, TypeVar

from routeyard.consumers.client import RouteyardClient
from routeyard.consumers.feed import Item
from routeyard.consumers.settings import KafkaSettings
from routeyard.schemas import ConversationEvent, ConversationResponse, Message, RoutingDecision

T = TypeVar("T")


class SyncRouteyardClient:
    def __init__(self, kafka: str | KafkaSettings | None = None, **options: Any) -> None:
        """The arguments of ``RouteyardClient`` (a broker, or ``bus=``; prefix, tenant, ...)."""
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="routeyard-client", daemon=True)
        self._thread.start()
        self._closed = False
        try:
            self._client = self._run(_started(kafka, options))
        except BaseException:
            self._stop_loop()
            raise

    def _run(self, coro: Coroutine[Any, Any, T]) -> T:
        if self._closed:
            coro.close()
            raise RuntimeError("the client is closed")
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result()

    @property
    def decisions(self) -> dict[str, RoutingDecision]:
        """With ``watch_decisions``: the decisions of this client's events, by event id."""
        return self._client.decisions

    def event(self, conversation_id: str, messages: str | Sequence[Message], **options: Any) -> ConversationEvent:
        return self._client.event(conversation_id, messages, **options)

    def publish(self, events: Sequence[ConversationEvent]) -> None:
        self._run(self._client.publish(events))

    def send(self, conversation_id: str, messages: str | Sequence[Message], **options: Any) -> str:
        return self._run(self._client.send(conversation_id, messages, **options))

    def ask(
        self, conversation_id: str, messages: str | Sequence[Message], *, timeout: float = 60.0, **options: Any
    ) -> ConversationResponse:
        return self._run(self._client.ask(conversation_id, messages, timeout=timeout, **options))

    def ask_many(self, events: Sequence[ConversationEvent], *, timeout: float = 60.0) -> list[ConversationResponse]:
        return self._run(self._client.ask_many(events, timeout=timeout))

    def stream(
        self,
        event: ConversationEvent | str,
        messages: str | Sequence[Message] = (),
        *,
        timeout: float = 60.0,
        **options: Any,
    ) -> Iterator[Item]:
        """``RouteyardClient.stream``, one item per ``next()``; leaving the loop early stops it."""
        items = self._client.stream(event, messages, timeout=timeout, **options)
        try:
            while True:
                try:
                    item = self._run(_next(items))
                except StopAsyncIteration:
                    return
                yield item
        finally:
            if not self._closed:
                self._run(_close(items))

    def close(self) -> None:
        if self._closed:
            return
        try:
            self._run(self._client.stop())
        finally:
            self._closed = True
            self._stop_loop()

    def _stop_loop(self) -> None:
        self._closed = True
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()
        self._loop.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


async def _started(kafka: str | KafkaSettings | None, options: dict[str, Any]) -> RouteyardClient:
    """A started client, made on the loop that will run it (its Kafka clients bind to that loop)."""
    client = RouteyardClient(kafka, **options)
    await client.start()
    return client


async def _next(items: AsyncIterator[Item]) -> Item:
    return await anext(items)


async def _close(items: AsyncIterator[Item]) -> None:
    aclose = getattr(items, "aclose", None)
    if aclose is not None:
        await aclose()
