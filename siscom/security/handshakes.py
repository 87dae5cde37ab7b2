"""How often one client address may open a stream: a token bucket per address (optional).

The connection limits bound how many streams an address holds; this bounds how fast it may make
new ones, since each handshake costs an HTTP parse, an upgrade and a session start even when the
stream closes at once. Past the allowance a handshake is answered 429 before it is accepted, so
a refusal costs an HTTP answer and nothing more.

The table of buckets is bounded: buckets that have refilled say nothing a new bucket would not,
and are dropped first when the table is full; if an attack from very many addresses fills it
anyway, the oldest entries go.
"""

from __future__ import annotations

from siscom.core.buckets import TokenBucket

__all__ = ["HandshakeLimiter"]

#: Addresses remembered at most (about 100 bytes each).
MAX_ADDRESSES = 100_000


class HandshakeLimiter:
    def __init__(self, rate: float, burst: int, max_addresses: int = MAX_ADDRESSES) -> None:
        self.rate = rate
        self.burst = burst
        self._max_addresses = max_addresses
        self._buckets: dict[str, TokenBucket] = {}

    def allow(self, address: str, now: float) -> bool:
        """Count a handshake from ``address``; False when it is past its allowance."""
        bucket = self._buckets.get(address)
        if bucket is None:
            if len(self._buckets) >= self._max_addresses:
                self._prune(now)
            bucket = self._buckets[address] = TokenBucket(self.rate, self.burst, now)
        return bucket.take(now)

    def __len__(self) -> int:
        return len(self._buckets)

    def _prune(self, now: float) -> None:
        buckets = self._buckets
        for address in [address for address, bucket in buckets.items() if bucket.full(now)]:
            del buckets[address]
        if len(buckets) >= self._max_addresses:
            for address in list(buckets)[: len(buckets) // 2]:  # oldest first
                del buckets[address]

    def retry_after(self) -> int:
        """Whole seconds until one more handshake is allowed, for a ``Retry-After`` header."""
        return max(1, int(1 / self.rate + 0.999)) if self.rate > 0 else 1
