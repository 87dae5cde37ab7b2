"""A session's mailbox: first in, first out while the client keeps up; conflating once it doesn't.

A client that reads as fast as frames arrive gets every frame in order. A client that falls more
than ``soft_limit`` frames behind has its backlog compacted: only the newest position of each
device is kept (a map should show where a vehicle *is*, not replay where it was), while alerts
and control frames are kept whole, in order. Memory is therefore bounded by the number of devices
the client watches plus the alerts it has not read; alerts past ``max_alerts`` make the outbox
refuse more (:class:`~supervisors.MailboxFull`), and the session closes that client with 1013.
"""

from __future__ import annotations

import asyncio
from collections import deque

from supervisors import MailboxFull

from siscom.frames import Frame

#: Key of frames that are never conflated (alerts, pings, errors, acks).
_KEEP = None


class Outbox:
    __slots__ = ("_queue", "_soft_limit", "_compact_at", "_max_alerts", "_alerts", "_waiter", "conflated")

    def __init__(self, soft_limit: int, max_alerts: int) -> None:
        self._queue: deque[tuple[str | None, str]] = deque()
        self._soft_limit = soft_limit
        self._compact_at = soft_limit
        self._max_alerts = max_alerts
        self._alerts = 0
        self._waiter: asyncio.Future[None] | None = None
        #: Positions dropped because a newer one of the same device replaced them.
        self.conflated = 0

    def __len__(self) -> int:
        return len(self._queue)

    def put_frame(self, frame: Frame) -> None:
        if frame.alert:
            self.put_kept(frame.text)
        else:
            self.put_position(frame.device_id, frame.text)

    def put_position(self, device_id: str, text: str) -> None:
        self._queue.append((device_id, text))
        if len(self._queue) > self._compact_at:
            self._compact()
        self.wake()

    def put_kept(self, text: str) -> None:
        """Queue a frame that must never be dropped; refuses once too many are waiting."""
        if self._alerts >= self._max_alerts:
            raise MailboxFull(f"{self._alerts} unconflatable frames waiting")
        self._alerts += 1
        self._queue.append((_KEEP, text))
        self.wake()

    async def take(self, timeout: float) -> list[str]:
        """Wait up to ``timeout`` seconds for frames, then take everything, oldest first.

        Returns an empty list when the time ran out first (the session's cue for a keep-alive).
        """
        if not self._queue:
            loop = asyncio.get_running_loop()
            waiter = self._waiter = loop.create_future()
            timer = loop.call_later(timeout, _resolve, waiter)
            try:
                await waiter
            finally:
                timer.cancel()
                self._waiter = None
        texts = [text for _, text in self._queue]
        self._queue.clear()
        self._alerts = 0
        self._compact_at = self._soft_limit
        return texts

    def clear(self) -> None:
        self._queue.clear()
        self._alerts = 0

    def wake(self) -> None:
        """Make a waiting :meth:`take` return now, even with nothing queued."""
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _compact(self) -> None:
        """Keep kept frames and the newest position per device, in their original order."""
        newest: dict[str, int] = {}
        for index, (key, _) in enumerate(self._queue):
            if key is not _KEEP:
                newest[key] = index
        before = len(self._queue)
        self._queue = deque(
            item for index, item in enumerate(self._queue) if item[0] is _KEEP or newest[item[0]] == index
        )
        self.conflated += before - len(self._queue)
        # A client watching more devices than the soft limit would compact on every frame:
        # wait for the queue to double before paying for the next pass.
        self._compact_at = max(self._soft_limit, 2 * len(self._queue))


def _resolve(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)
