"""A FIFO queue that allocates only while something waits in it: the queues Hypercorn and Quart
keep for every connection, lighter.

Each stream Hypercorn serves (every websocket, every HTTP request) gets an ``asyncio.Queue``
between the task that reads the connection and the app's ``receive``; Quart adds another per
websocket, between its receiving task and the route. Under Python 3.11 such a queue is four
deques (waiting getters, waiting putters, the items, and its ``join`` event's waiters), about
3 KB made at once for each of the thousands of connections that, once open, hardly ever receive
anything. :class:`Inbox` keeps what those two ask of a queue (``put`` waits while the queue is
full, ``get`` waits for the next item, in order, and a waiter cancelled as it is woken passes
its turn on, as ``asyncio.Queue`` does) with a list of waiters, and a deque only while items wait.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Any

__all__ = ["Inbox"]


class Inbox:
    """A FIFO queue; ``maxsize`` 0 (the default) is unbounded."""

    __slots__ = ("_maxsize", "_items", "_getters", "_putters")

    def __init__(self, maxsize: int = 0) -> None:
        self._maxsize = maxsize
        #: What waits to be read, in order; None while nothing does.
        self._items: deque[Any] | None = None
        #: Readers waiting for an item, and writers for room, oldest first; None until one waits.
        self._getters: list[asyncio.Future[None]] | None = None
        self._putters: list[asyncio.Future[None]] | None = None

    def qsize(self) -> int:
        return 0 if self._items is None else len(self._items)

    def full(self) -> bool:
        return 0 < self._maxsize <= self.qsize()

    async def put(self, item: Any) -> None:
        """Add ``item``, once there is room for it."""
        while self.full():
            putters = self._putters
            if putters is None:
                putters = self._putters = []
            waiter = asyncio.get_running_loop().create_future()
            putters.append(waiter)
            try:
                await waiter
            except BaseException:
                _leave(putters, waiter, blocked=self.full())
                raise
        self.put_nowait(item)

    def put_nowait(self, item: Any) -> None:
        if self.full():
            raise asyncio.QueueFull
        if self._items is None:
            self._items = deque()
        self._items.append(item)
        _wake_next(self._getters)

    async def get(self) -> Any:
        """The oldest item, once there is one. A reader cancelled while waiting takes nothing:
        the item stays for the next reader."""
        while not self._items:
            getters = self._getters
            if getters is None:
                getters = self._getters = []
            waiter = asyncio.get_running_loop().create_future()
            getters.append(waiter)
            try:
                await waiter
            except BaseException:
                _leave(getters, waiter, blocked=not self._items)
                raise
        items = self._items
        item = items.popleft()
        if not items:
            self._items = None
        _wake_next(self._putters)
        return item


def _leave(line: list[asyncio.Future[None]], waiter: asyncio.Future[None], *, blocked: bool) -> None:
    """``waiter`` gives up its place in ``line`` (its task was cancelled). Woken already but not
    to act on it: the next in line is woken instead, unless what blocked is back (Python's
    ``asyncio.Queue`` does the same). The waiting is written out in ``put`` and ``get``, not in
    a helper coroutine: a websocket's reader waits for its whole life, and a coroutine frame
    more for each of thousands of them is what this class saves."""
    waiter.cancel()
    if waiter in line:
        line.remove(waiter)
    if not waiter.cancelled() and not blocked:
        _wake_next(line)


def _wake_next(line: list[asyncio.Future[None]] | None) -> None:
    """Wake the oldest waiter of ``line`` that still waits."""
    while line:
        waiter = line.pop(0)
        if not waiter.done():
            waiter.set_result(None)
            return
