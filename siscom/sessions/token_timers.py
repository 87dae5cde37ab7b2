"""The token's two timers of one session: the ``token-expiring`` notice and the expiry.

A token's ``exp`` is POSIX time; the delays are worked out from it by the core
(:meth:`~siscom.core.stream.StreamCore.notice_delay`, :meth:`~siscom.core.stream.StreamCore.expiry_delay`)
and go on the event loop's clock. A refresh the core accepted (its
:class:`~siscom.core.stream.Refresh` effect) moves both.

Context: event-loop timer callbacks. The timers are armed by the pump when the stream opens and
by the session's handling of a refresh (whichever context the refresh arrived in); they fire as
callbacks of their own, which hand their event to the core and its effects to the session.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from siscom.core.stream import Effects, Refresh, StreamCore
from siscom.metrics import Metric, Metrics

logger = logging.getLogger(__name__)


class TokenTimers:
    """Schedules the notice and the expiry of one stream's grant (none without a token)."""

    __slots__ = ("_core", "_metrics", "_peer", "_on_effects", "_notice", "_expiry")

    def __init__(
        self, core: StreamCore, metrics: Metrics, peer: str, on_effects: Callable[[Effects | None], None]
    ) -> None:
        """``on_effects``: the session's handling of what the core returns (the close at expiry)."""
        self._core = core
        self._metrics = metrics
        self._peer = peer
        self._on_effects = on_effects
        self._notice: asyncio.TimerHandle | None = None
        self._expiry: asyncio.TimerHandle | None = None

    def arm(self, *, refreshed: bool = False) -> None:
        """Schedule the notice and the expiry of the current grant (none without a token).

        After a refresh to a token already inside the notice time, no notice is scheduled: the
        client has just answered one, and a new notice at once would have it refresh in a loop.
        """
        self.cancel()
        loop = asyncio.get_running_loop()
        now = time.time()  # a token's exp is POSIX time; the delays go on the loop's clock
        delay = self._core.expiry_delay(now)
        if delay is not None:
            self._expiry = loop.call_later(delay, self._expired)
        notice = self._core.notice_delay(now)
        if notice is not None and not (refreshed and notice <= 0):
            self._notice = loop.call_later(notice, self._noticed)

    def cancel(self) -> None:
        for timer in (self._notice, self._expiry):
            if timer is not None:
                timer.cancel()
        self._notice = self._expiry = None

    def refreshed(self, refresh: Refresh) -> None:
        """The client sent a new token: count it; when accepted, the timers follow the new expiry.

        Logged at DEBUG only: a refresh is a client's routine action, repeated by every client as
        often as its tokens expire; the counters say how many (and the client got its answer)."""
        if refresh.accepted:
            self._metrics.incr(Metric.TOKEN_REFRESHES)
            self.arm(refreshed=True)
            logger.debug("Token refreshed for %s", self._peer)
        else:
            self._metrics.incr(Metric.TOKEN_REFRESH_REFUSALS)
            logger.debug("Token refresh refused for %s", self._peer)

    def _noticed(self) -> None:
        self._notice = None
        self._on_effects(self._core.token_expiring(time.time()))

    def _expired(self) -> None:
        self._on_effects(self._core.token_expired())
