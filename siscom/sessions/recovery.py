"""Admission and budgets for replays: what a storm of resumes may cost one process.

A replay (a resume with ``cursor`` or ``since``) is paid for by the process that serves every
live client, so its cost is bounded before it starts, the same for WebSocket and SSE:

- **how far behind**: the records between the client's cursor and where this process has read
  (every partition, both topics; computed from offsets alone, before anything is read). Past
  ``STREAM_REPLAY_MAX_RECORDS`` the stream opens with ``recovered: false`` and a reason, then the
  snapshot and live, as for a cursor older than the log;
- **how many at once**: at most ``STREAM_REPLAY_CONCURRENCY`` replays run in a process; the
  others wait their turn, first come first served, for at most ``STREAM_REPLAY_WAIT_SECONDS``;
  past that, ``recovered: false`` as above. A client waiting for its turn misses nothing: its
  replay, when it comes, runs up to where the process has read by then.

The replay itself is :class:`~siscom.sessions.replay.Replayer`'s; :class:`BudgetedReplayer` only
decides whether and when it runs. The session runs it in a task that ends when the client leaves
(see :meth:`~siscom.sessions.session.Session.run`), which gives the turn back.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable

from siscom.core import cursors
from siscom.core.protocol import resumed_frame
from siscom.core.resume import ResumeRequest
from siscom.core.stream import StreamCore
from siscom.core.window import RecentWindow
from siscom.metrics import Metric, Metrics
from siscom.pipeline.history import HistoryUnavailable
from siscom.sessions.replay import Replayer

logger = logging.getLogger(__name__)

__all__ = ["BudgetedReplayer", "ReplayTurns", "records_behind"]


def records_behind(vector: cursors.Vector, dispatched: cursors.Vector) -> int:
    """Offsets between ``vector`` and ``dispatched``, every partition of every topic: what a
    replay from ``vector`` reads at most. A partition the cursor does not name counts from 0 (the
    replay reads it from there); one it is ahead on, or one not known yet, counts nothing."""
    total = 0
    for offsets, routed in zip(vector, dispatched):
        for partition, reached in enumerate(routed):
            if reached == cursors.UNKNOWN:
                continue
            start = offsets[partition] if partition < len(offsets) else 0
            if start != cursors.UNKNOWN and reached > start:
                total += reached - start
    return total


class ReplayTurns:
    """At most ``limit`` holders at once; the others wait in arrival order, each at most
    ``wait_seconds``. Counted in the ``replays_running`` and ``replays_waiting`` gauges."""

    def __init__(self, limit: int, wait_seconds: float, metrics: Metrics) -> None:
        self._limit = limit
        self._wait_seconds = wait_seconds
        self._metrics = metrics
        self.running = 0
        #: Waiters in arrival order; a waiter's future is resolved when it is handed a turn.
        self._queue: deque[asyncio.Future[None]] = deque()

    @property
    def waiting(self) -> int:
        return len(self._queue)

    async def take(self) -> bool:
        """Take a turn (give it back with :meth:`give_back`): True, or False when none came in
        time. A caller cancelled while waiting takes none."""
        if self.running < self._limit and not self._queue:
            self.running += 1
            self._publish()
            return True
        if self._wait_seconds <= 0:
            return False
        turn = asyncio.get_running_loop().create_future()
        self._queue.append(turn)
        self._publish()
        try:
            async with asyncio.timeout(self._wait_seconds):
                await turn
        except TimeoutError:
            # Handed a turn just as the time ran out: it is this caller's to use.
            return turn.done() and not turn.cancelled()
        except asyncio.CancelledError:
            if turn.done() and not turn.cancelled():
                self.give_back()
            raise
        finally:
            if turn in self._queue:
                self._queue.remove(turn)
            self._publish()
        return True

    def give_back(self) -> None:
        """End a turn: the longest waiter gets it, or it is free."""
        while self._queue:
            turn = self._queue.popleft()
            if not turn.done():
                turn.set_result(None)  # the turn passes on: as many running as before
                self._publish()
                return
        self.running -= 1
        self._publish()

    def _publish(self) -> None:
        self._metrics.gauge(Metric.REPLAYS_RUNNING, self.running)
        self._metrics.gauge(Metric.REPLAYS_WAITING, len(self._queue))


class BudgetedReplayer:
    """Opens resumed streams through ``replayer``, within the process's budget (see above)."""

    def __init__(
        self,
        replayer: Replayer,
        *,
        window: RecentWindow,
        turns: ReplayTurns,
        max_records: int,
        metrics: Metrics,
    ) -> None:
        self._replayer = replayer
        self._window = window
        self._turns = turns
        self._max_records = max_records
        self._metrics = metrics

    async def open(self, core: StreamCore, request: ResumeRequest, clock: Callable[[], float]) -> None:
        """Open ``core``'s stream as ``request`` asks, or refused by a budget (``recovered:false``)."""
        if request.since_ms is not None:
            try:
                vector = await self._replayer.since_vector(request.since_ms)
            except (HistoryUnavailable, TimeoutError) as error:
                logger.warning("Cannot find where to replay from: %r", error)
                self._refuse(core, clock, "the log cannot be read now", None)
                return
            if vector is not None:
                request = ResumeRequest(vector=vector)
        dispatched = self._window.dispatched
        if request.vector is not None and dispatched is not None:
            behind = records_behind(request.vector, cursors.decode(dispatched)[1])
            if behind > self._max_records:
                self._refuse(
                    core,
                    clock,
                    f"the cursor is {behind} records behind, more than this server replays "
                    f"({self._max_records}, STREAM_REPLAY_MAX_RECORDS)",
                    Metric.REPLAY_COST_REFUSALS,
                )
                return
        if not await self._turns.take():
            self._refuse(
                core,
                clock,
                "too many replays at once: no turn came in time (STREAM_REPLAY_WAIT_SECONDS)",
                Metric.REPLAY_WAIT_REFUSALS,
            )
            return
        try:
            await self._replayer.open(core, request, clock)
        finally:
            self._turns.give_back()

    def _refuse(self, core: StreamCore, clock: Callable[[], float], reason: str, counter: Metric | None) -> None:
        logger.info("Resume not replayed: %s", reason)
        core.open(clock(), resumed=resumed_frame(False, reason))
        self._metrics.incr(Metric.RESUMES_NOT_RECOVERED)
        if counter is not None:
            self._metrics.incr(counter)
