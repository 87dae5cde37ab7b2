"""Overload shedding: while the event loop stays late, close the costliest sessions with a backlog.

An actor of its own under the root supervisor. It wakes every ``INTERVAL`` seconds, measures how
late it woke (the loop's lag), publishes the worst lag of each second as the ``loop_lag`` gauge,
and while :class:`~siscom.core.overload.LagWindow` says the loop is overloaded, closes a
``FRACTION`` of the sessions that have frames waiting, those that cost the most work per second
first (see :func:`~siscom.core.overload.pick_victims`), with 1013 "server overloaded" (counted as
``overload_closes``); then it judges ``PAUSE`` seconds of fresh samples before it sheds again, and
stops once the mean lag falls below the threshold. All it needs from a session is its backlog, its
cost and ``close(code, reason)``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable

from siscom.core.overload import LagWindow, Sheddable, pick_victims
from siscom.core.protocol import CloseCode
from siscom.metrics import Metric, Metrics
from supervisors import Actor

logger = logging.getLogger(__name__)

#: Seconds between two looks at the loop.
INTERVAL = 0.1
#: Share of the sessions with a backlog closed at each step. Each client of every device costs
#: the router a call per record, so a loop that is far over may need most of them gone: a
#: quarter per step gets there in a few steps without emptying the server at the first.
FRACTION = 0.25
#: Seconds of fresh samples judged after a step, before the next: the closes take effect, and
#: the lag of before them no longer counts.
PAUSE = 1.0
#: What a shed client sees.
OVERLOADED = "server overloaded"


class LoadShedder(Actor):
    def __init__(
        self,
        sessions: Callable[[], Iterable[Sheddable]],
        metrics: Metrics,
        *,
        lag_threshold: float,
        sustain: float,
    ) -> None:
        super().__init__(name="shedder")
        self._sessions = sessions
        self._metrics = metrics
        self._window = LagWindow(lag_threshold, sustain)

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        due = loop.time() + INTERVAL
        worst, report_at = 0.0, loop.time() + 1.0
        span: float | None = None  # the first decision needs the whole window; after a step, PAUSE
        while True:
            await asyncio.sleep(max(0.0, due - loop.time()))
            now = loop.time()
            lag = max(0.0, now - due)
            due = now + INTERVAL
            worst = max(worst, lag)
            if now >= report_at:
                self._metrics.gauge(Metric.LOOP_LAG, round(worst * 1000, 1))
                worst, report_at = 0.0, now + 1.0
            if self._window.observe(now, lag, span):
                self._shed(self._window.mean)
                self._window.restart()
                span = PAUSE
            elif span is not None and self._window.mean < self._window.threshold:
                span = None  # recovered: the next overload is judged on a whole window again

    def _shed(self, lag: float) -> None:
        victims = pick_victims(self._sessions(), FRACTION)
        if not victims:
            return
        logger.warning(
            "Event loop %.0f ms late on average: closing the %d costliest clients with a backlog (%.0f to %.0f work/s)",
            lag * 1000,
            len(victims),
            victims[-1].cost,
            victims[0].cost,
        )
        for session in victims:
            session.close(CloseCode.TRY_AGAIN_LATER, OVERLOADED)
        self._metrics.incr(Metric.OVERLOAD_CLOSES, len(victims))
