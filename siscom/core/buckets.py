"""Token buckets: how many events a source may send, on average and at once.

A bucket holds up to ``burst`` tokens and gains ``rate`` of them per second; each event takes one
(or ``cost``). An empty bucket refuses. Time is passed in, so the bucket is pure and a test can
drive it with any clock.
"""

from __future__ import annotations

__all__ = ["TokenBucket"]


class TokenBucket:
    __slots__ = ("rate", "burst", "_tokens", "_stamp")

    def __init__(self, rate: float, burst: float, now: float) -> None:
        self.rate = rate
        self.burst = burst
        self._tokens = float(burst)
        self._stamp = now

    def take(self, now: float, cost: float = 1.0) -> bool:
        """Take ``cost`` tokens if there are that many; say whether the event is allowed."""
        tokens = self.tokens(now)
        self._stamp = now
        if tokens < cost:
            self._tokens = tokens
            return False
        self._tokens = tokens - cost
        return True

    def tokens(self, now: float) -> float:
        """Tokens available at ``now`` (refilled since the last take, at most ``burst``)."""
        return min(self.burst, self._tokens + max(0.0, now - self._stamp) * self.rate)

    def full(self, now: float) -> bool:
        """True once the bucket has refilled: it then says nothing a fresh bucket would not."""
        return self.tokens(now) >= self.burst
