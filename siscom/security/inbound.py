"""What one client may send: messages, and WebSocket pings and pongs, each within a token bucket.

A client sends almost nothing in normal use (a subscription change now and then; a ping every
20 s or so from non-browser clients), but each message costs a parse and an ack, and each ping a
pong written back. Past its allowance a client is closed with 1008 "too many messages" (by its
:class:`~siscom.core.stream.StreamCore`) and counted, so a flood costs the server at most a burst.

Pure: the caller passes the time (the event loop's clock).
"""

from __future__ import annotations

from dataclasses import dataclass

from siscom.core.buckets import TokenBucket

__all__ = ["InboundLimits", "InboundRates"]


@dataclass(frozen=True, slots=True)
class InboundRates:
    """The allowances, from the settings; a rate of 0 means no limit."""

    messages_per_second: float
    message_burst: int
    pings_per_second: float
    ping_burst: int


class InboundLimits:
    """One client's allowances: one bucket for messages, one for pings and pongs."""

    __slots__ = ("_messages", "_control")

    def __init__(self, rates: InboundRates, now: float) -> None:
        self._messages = (
            TokenBucket(rates.messages_per_second, rates.message_burst, now) if rates.messages_per_second > 0 else None
        )
        self._control = (
            TokenBucket(rates.pings_per_second, rates.ping_burst, now) if rates.pings_per_second > 0 else None
        )

    def message(self, now: float) -> bool:
        """A message arrived: True while within the allowance."""
        return self._messages is None or self._messages.take(now)

    def control_frame(self, now: float) -> bool:
        """A ping or a pong arrived: True while within the allowance."""
        return self._control is None or self._control.take(now)
