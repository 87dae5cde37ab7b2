"""The direct-write path of a session, and the pump's wait it stands in for.

When the transport can write without awaiting (``transport.direct``: write coalescing, see
siscom/web/server/coalesce.py), a frame queued while the pump waits does not wake it: the gateway's
:class:`~siscom.sessions.flusher.Flusher` writes, in the next event-loop turn, everything waiting
for each client it was queued for, in one write per client. The pump takes over only when the
socket would block, and writes through the transport's ``send`` under the deadline.

Context: event-loop callbacks. :meth:`DirectPath.flush` runs in the flusher's write round and
:meth:`DirectPath.time_is_up` as a timer callback; the pump only parks here (:meth:`wait`) and
is woken from here. Nothing in this module awaits but that one future.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable

from siscom.core.stream import Effects, StreamCore
from siscom.metrics import Metric, Metrics
from siscom.sessions.flusher import Flusher
from siscom.sessions.transport import DirectWrites

#: Deadlines closer than this (seconds) are the same deadline, computed twice.
_SAME_DEADLINE = 0.001


class DirectPath:
    """Where one session's pump waits for frames or the next keep-alive, and what writes for it
    meanwhile when the transport allows it."""

    __slots__ = (
        "_core",
        "_direct",
        "_flusher",
        "_metrics",
        "_on_effects",
        "_waiter",
        "_timer",
        "_loop",
        "_wake_callback",
        "_queued_callback",
    )

    def __init__(
        self,
        core: StreamCore,
        direct: DirectWrites | None,
        flusher: Flusher,
        metrics: Metrics,
        on_effects: Callable[[Effects | None], None],
    ) -> None:
        """``direct``: the transport's writer that never awaits (None: every write is the pump's);
        ``on_effects``: the session's handling of what the core returns (a client found gone)."""
        self._core = core
        self._direct = direct
        self._flusher = flusher
        self._metrics = metrics
        self._on_effects = on_effects
        #: Waiting for frames or the next keep-alive; and the timer that ends that wait. The
        #: deadline is the same for many waits in a row, so one timer serves them all.
        self._waiter: asyncio.Future[None] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake_callback = self.wake
        #: A queued frame schedules this session's flush in the next write round.
        self._queued_callback = functools.partial(flusher.schedule, self.flush)

    @property
    def waiting(self) -> bool:
        """Whether the pump is parked here, not woken yet."""
        waiter = self._waiter
        return waiter is not None and not waiter.done()

    async def wait(self, delay: float) -> None:
        """The pump's wait: until a frame is queued, the stream is closed, or ``delay`` seconds
        pass (with direct writes, queued frames are written from here instead)."""
        loop = self._loop = asyncio.get_running_loop()
        self._arm_timer(loop.time() + delay)
        self._waiter = loop.create_future()
        outbox = self._core.outbox
        outbox.waker = self._wake_callback if self._direct is None else self._queued_callback
        try:
            await self._waiter
        finally:
            self._waiter = None
            outbox.waker = None

    def wake(self) -> None:
        """End the pump's wait, if it is waiting."""
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def stop(self) -> None:
        """The session ends: no more timer."""
        if self._timer is not None:
            self._timer.cancel()

    def flush(self, now: float) -> int:
        """Write what waits straight to the socket, in one write, while the pump waits and the
        socket takes the bytes now; otherwise wake the pump, which writes through the plain path
        and waits for the client under the send deadline (so a slow client only holds its own
        task, never the turn that routes for everyone). Returns the frames written (the flusher
        counts them)."""
        waiter, core, direct = self._waiter, self._core, self._direct
        if waiter is None or waiter.done() or core.closing is not None or direct is None:
            return 0  # the pump is busy writing, or the stream is ending: it takes what waits
        if not direct.ready():
            self.wake()
            return 0
        outbox = core.outbox
        texts = core.take(now)
        while core.more:  # everything (a snapshot's rest too), not a chunk: it all leaves in this one write
            texts += core.take(now)
        if core.pending is not None:
            self._on_effects(core.effects())
        if texts:
            try:
                direct.write(texts)
            except (OSError, RuntimeError):  # the connection is going (e.g. after write_eof)
                self._on_effects(core.client_gone())
                return 0
            if outbox.conflated:
                self._metrics.incr(Metric.CONFLATED, core.take_conflated())
        outbox.waker = self._queued_callback
        # What the core says to wait for may have changed (a frame held for a rate slot, the
        # keep-alive just written): the pump's wait ends then, as if it had recomputed it.
        self._arm_timer(now + core.wait_time(now))
        return len(texts)

    def time_is_up(self) -> None:
        """The pump's wait is over (a keep-alive or a held frame is due). With direct writes, what
        is due is written from this timer callback, as a routed frame is, so that a keep-alive
        costs no task wake-up and no pass through ASGI; the pump is woken only when the socket
        would block (see :meth:`flush`)."""
        self._timer = None
        if self._direct is not None:
            self._flusher.flush_now(self.flush)
        else:
            self.wake()

    def _arm_timer(self, deadline: float) -> None:
        """End the pump's wait at ``deadline`` (the timer already set is kept if it is the same)."""
        timer = self._timer
        if timer is None or abs(timer.when() - deadline) > _SAME_DEADLINE:
            if timer is not None:
                timer.cancel()
            assert self._loop is not None
            self._timer = self._loop.call_at(deadline, self.time_is_up)
