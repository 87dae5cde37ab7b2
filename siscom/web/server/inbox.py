"""What a client sent on its websocket, waiting for the route to read it: a queue for one reader.

Quart gives every websocket an ``asyncio.Queue`` between the task that receives from the server
and the route's ``websocket.receive``. Under Python 3.11 a queue is four deques (waiting getters,
waiting putters, the items, and its ``join`` event's waiters), about 3 KB for every connection,
most of which never send a message. :class:`Inbox` does what Quart asks of that queue (``put``
never waits: Quart 0.22's queue is unbounded; ``get`` waits for the next item, in order) with
one future while the reader waits, and a deque only while items wait.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Any

__all__ = ["Inbox"]


class Inbox:
    """An unbounded FIFO queue for one reader at a time."""

    __slots__ = ("_items", "_waiter")

    def __init__(self) -> None:
        #: What waits to be read, in order; None while nothing does.
        self._items: deque[Any] | None = None
        #: The reader waiting for an item, if any.
        self._waiter: asyncio.Future[None] | None = None

    async def put(self, item: Any) -> None:
        """Add ``item`` (never waits)."""
        self.put_nowait(item)

    def put_nowait(self, item: Any) -> None:
        if self._items is None:
            self._items = deque()
        self._items.append(item)
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def get(self) -> Any:
        """The oldest item, once there is one. A reader cancelled while waiting takes nothing:
        the item stays for the next reader (as with ``asyncio.Queue``)."""
        while not self._items:
            if self._waiter is not None:
                raise RuntimeError("an Inbox has one reader at a time")
            waiter = self._waiter = asyncio.get_running_loop().create_future()
            try:
                await waiter
            finally:
                self._waiter = None
        items = self._items
        item = items.popleft()
        if not items:
            self._items = None
        return item

    def qsize(self) -> int:
        return 0 if self._items is None else len(self._items)
