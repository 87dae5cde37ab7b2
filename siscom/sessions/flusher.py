"""One write round per event-loop turn for every session that had frames queued in it.

The router queues a batch's frames into many outboxes in one turn. Each session with direct
writes (see siscom/web/server/coalesce.py) then has to write once, after the batch, so that everything
queued for its client leaves together. Scheduling one callback per session would cost an event
loop handle, a trip through the loop's ready queue and a metrics update for each of them; the
:class:`Flusher` schedules one callback for all of them, and counts the frames they wrote once.
In the manner of a broadcast loop, but each client still gets its frames in one write, and a
client whose socket would block is left to its own session task (its flush wakes it).

One flusher serves the sessions of one gateway (it is created with it, not shared between
event loops).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from siscom.metrics import Metric, Metrics

logger = logging.getLogger(__name__)

#: A session's flush: writes what waits for its client at the given loop time; returns how many
#: frames it wrote. It must not raise (a failure is logged, and the round goes on).
Flush = Callable[[float], int]


class Flusher:
    """Runs the flushes scheduled during one event-loop turn, together, in the next; or, given a
    ``delay``, those scheduled within ``delay`` seconds of the first, together, at its end.

    A delay trades latency for system calls, as Nagle's algorithm or a Kafka producer's
    ``linger.ms`` do: a client that gets a frame every few batches gets them in one write
    instead of one write each (at most one write per client per round, whatever the delay).
    """

    __slots__ = ("_due", "_metrics", "_run_callback", "_delay")

    def __init__(self, metrics: Metrics, delay: float = 0.0) -> None:
        self._due: list[Flush] = []
        self._metrics = metrics
        self._run_callback = self._run
        self._delay = delay

    def schedule(self, flush: Flush) -> None:
        """Run ``flush`` in the next round (a session schedules itself once until it has run)."""
        due = self._due
        if not due:
            loop = asyncio.get_running_loop()
            if self._delay:
                loop.call_later(self._delay, self._run_callback)
            else:
                loop.call_soon(self._run_callback)
        due.append(flush)

    def flush_now(self, flush: Flush) -> None:
        """Run ``flush`` at once, alone (a session's keep-alive timer: nothing else is due with it)."""
        self._run_all([flush])

    def _run(self) -> None:
        due, self._due = self._due, []
        self._run_all(due)

    def _run_all(self, due: list[Flush]) -> None:
        now = asyncio.get_running_loop().time()
        frames = 0
        for flush in due:
            try:
                frames += flush(now)
            except Exception:  # one session's bug must not cost the others their frames
                logger.exception("A session's flush failed")
        if frames:
            self._metrics.incr(Metric.FRAMES_SENT, frames)
