"""A mailbox: the only way into an actor.

It is an :class:`asyncio.Queue` underneath, which already gets the hard part right (waiters that are
cancelled while an item arrives). This module adds the words actors use, an exception of its own
for a full mailbox, and :meth:`Mailbox.drain`, so that an actor can take a whole batch in one step
and pay the per-message cost of a hop once per batch.
"""

from __future__ import annotations

import asyncio
from typing import Generic, TypeVar

__all__ = ["Mailbox", "MailboxFull"]

T = TypeVar("T")


class MailboxFull(Exception):
    """A bounded mailbox had no room for one more message."""


class Mailbox(Generic[T]):
    """First-in, first-out messages for one actor; bounded when ``maxsize`` > 0.

    A bounded mailbox gives the sender a choice: :meth:`put` waits for room (backpressure), and
    :meth:`put_nowait` refuses at once with :class:`MailboxFull` (the sender decides what to drop).
    """

    def __init__(self, maxsize: int = 0) -> None:
        if maxsize < 0:
            raise ValueError("maxsize must be 0 (unbounded) or positive")
        self._queue: asyncio.Queue[T] = asyncio.Queue(maxsize)

    @property
    def maxsize(self) -> int:
        """The bound, or 0 when the mailbox is unbounded."""
        return self._queue.maxsize

    def put_nowait(self, item: T) -> None:
        """Deliver ``item`` now, or raise :class:`MailboxFull` when there is no room."""
        try:
            self._queue.put_nowait(item)
        except asyncio.QueueFull:
            raise MailboxFull(f"mailbox full ({self.maxsize} messages)") from None

    async def put(self, item: T) -> None:
        """Deliver ``item``, waiting for room if the mailbox is bounded and full."""
        await self._queue.put(item)

    async def get(self) -> T:
        """Take the oldest message, waiting for one if the mailbox is empty."""
        return await self._queue.get()

    def drain(self, limit: int | None = None) -> list[T]:
        """Take every message waiting now, oldest first, at most ``limit``; never waits."""
        count = len(self) if limit is None else min(limit, len(self))
        return [self._queue.get_nowait() for _ in range(count)]

    def __len__(self) -> int:
        return self._queue.qsize()

    def __repr__(self) -> str:
        bound = f"/{self.maxsize}" if self.maxsize else ""
        return f"<Mailbox {len(self)}{bound}>"
