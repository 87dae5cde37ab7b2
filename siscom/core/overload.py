"""When is the process overloaded, and whom to shed: the pure part of load shedding.

The signal is event-loop lag: how late a timer runs. Every session, the pipeline and the status
routes share one loop, so when it runs late everything is late, and a loop that stays late is
doing more work than it can. A single late timer is not overload (a pass of the cyclic garbage
collector at 10,000 connections takes about a second); a loop late on average over a few seconds
is.

Whom: of the sessions with frames waiting (a client that keeps up has next to nothing waiting),
those that cost the most, a fraction at a time. Cost is the work done for a session per second
(frames written, devices looked at for its commands), so that a client that takes a lot of the
loop goes before one whose backlog only grew because the loop was late for everyone; the backlog
breaks ties.
"""

from __future__ import annotations

import heapq
import math
from collections import deque
from collections.abc import Iterable
from typing import Protocol, TypeVar

from siscom.core.protocol import CloseCode

__all__ = ["LagWindow", "Sheddable", "pick_victims"]


class LagWindow:
    """Overloaded while the mean lag of the last ``sustain`` seconds is at least ``threshold``.

    The mean, not every sample: under overload each look finds the loop late by about one pass
    over its ready callbacks, which varies (300-700 ms at 500 non-readers); one pause of a
    second (the collector) among normal samples does not move a mean over seconds that far.
    Only a window holding at least ``span`` seconds of samples decides, so a fresh start (and,
    after :meth:`restart`, a fresh look) needs that much evidence first.
    """

    __slots__ = ("threshold", "sustain", "_samples", "_total", "_started")

    def __init__(self, threshold: float, sustain: float) -> None:
        self.threshold = threshold
        self.sustain = sustain
        self._samples: deque[tuple[float, float]] = deque()
        self._total = 0.0
        self._started: float | None = None

    def observe(self, now: float, lag: float, span: float | None = None) -> bool:
        """Record the lag measured at ``now``; say whether the loop counts as overloaded.

        ``span`` (default ``sustain``) is how many seconds of samples are needed to decide.
        """
        if self._started is None:
            self._started = now - lag
        samples = self._samples
        samples.append((now, lag))
        self._total += lag
        while samples and samples[0][0] < now - self.sustain:
            self._total -= samples.popleft()[1]
        needed = self.sustain if span is None else span
        if now - self._started < needed:
            return False
        return self._total / len(samples) >= self.threshold

    @property
    def mean(self) -> float:
        return self._total / len(self._samples) if self._samples else 0.0

    def restart(self) -> None:
        """Forget every sample: what comes next is judged on its own."""
        self._samples.clear()
        self._total = 0.0
        self._started = None


class Sheddable(Protocol):
    @property
    def backlog(self) -> int: ...

    @property
    def cost(self) -> float: ...

    def close(self, code: CloseCode, reason: str) -> None: ...


S = TypeVar("S", bound=Sheddable)


def pick_victims(sessions: Iterable[S], fraction: float) -> list[S]:
    """The ``fraction`` (at least one) of the sessions with frames waiting that cost the most (the
    largest backlog first among equals); none with nothing waiting."""
    waiting = [(session.cost, session.backlog, session) for session in sessions if session.backlog > 0]
    if not waiting:
        return []
    count = max(1, math.ceil(len(waiting) * fraction))
    return [session for _, _, session in heapq.nlargest(count, waiting, key=lambda entry: entry[:2])]
