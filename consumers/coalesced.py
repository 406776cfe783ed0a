"""Writes coalesced per turn of the event loop: what many tasks add in one turn goes out in one
call (the agent runtime's replies and answered-marks)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class Coalesced(Generic[T]):
    """``add(item)`` for every item added in the same turn of the event loop, written by one
    ``write(items)`` call that every caller waits for. A failed write reaches each caller (who
    may retry its own item: it joins the next write)."""

    def __init__(self, write: Callable[[list[T]], Awaitable[object]]) -> None:
        self._write_all = write
        self._items: list[T] = []
        self._written: asyncio.Future[None] | None = None
        self._writing: set[asyncio.Task[None]] = set()

    async def add(self, item: T) -> None:
        if self._written is None:
            loop = asyncio.get_running_loop()
            self._written = loop.create_future()
            self._written.add_done_callback(_retrieved)
            loop.call_soon(self._write_soon)
        self._items.append(item)
        await asyncio.shield(self._written)

    def _write_soon(self) -> None:
        items, written = self._items, self._written
        self._items, self._written = [], None
        assert written is not None
        task = asyncio.create_task(self._write(items, written))
        self._writing.add(task)  # owned until done: the loop keeps only weak references
        task.add_done_callback(self._writing.discard)

    async def _write(self, items: list[T], written: asyncio.Future[None]) -> None:
        try:
            await self._write_all(items)
        except asyncio.CancelledError:
            written.cancel()
            raise
        except Exception as exc:  # every waiter sees it
            written.set_exception(exc)
        else:
            written.set_result(None)


def _retrieved(future: asyncio.Future[None]) -> None:
    """Waiters may all have been cancelled: never leave an exception unretrieved (a log warning)."""
    if not future.cancelled():
        future.exception()
