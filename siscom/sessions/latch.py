"""A flag set once, that tasks can wait for: :attr:`Session.finished`.

``asyncio.Event`` would do (set once, never cleared), but under Python 3.11 every event owns a
deque for its waiters, about 0.7 KB, for each of thousands of sessions that nobody but their own
route ever waits on. A :class:`Latch` makes one future, when someone first waits.
"""

from __future__ import annotations

import asyncio

__all__ = ["Latch"]


class Latch:
    """``is_set``, ``set`` and ``wait`` as ``asyncio.Event``'s, for a flag that is never cleared."""

    __slots__ = ("_set", "_future")

    def __init__(self) -> None:
        self._set = False
        #: What waiters wait on, made by the first of them.
        self._future: asyncio.Future[None] | None = None

    def is_set(self) -> bool:
        return self._set

    def set(self) -> None:
        self._set = True
        future = self._future
        if future is not None and not future.done():
            future.set_result(None)

    async def wait(self) -> bool:
        """Return True once set (at once if it is). A waiter cancelled leaves the others waiting."""
        if self._set:
            return True
        if self._future is None:
            self._future = asyncio.get_running_loop().create_future()
        await asyncio.shield(self._future)
        return True
