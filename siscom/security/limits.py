"""How many streams one process holds open, in total and per client address.

Every open stream costs a socket, a session actor and its buffers, so a cap keeps one noisy
client, or a flood, from taking the process down for everyone. Counting is synchronous and
happens on the event loop, so admitting and releasing need no lock. The limits are per process:
with N workers or replicas the fleet-wide totals are N times larger.
"""

from __future__ import annotations

from collections import Counter

__all__ = ["ConnectionLimiter"]


class ConnectionLimiter:
    """Admits a connection while both counts stay within their limits (0: no limit)."""

    def __init__(self, max_total: int, max_per_address: int) -> None:
        self.max_total = max_total
        self.max_per_address = max_per_address
        self.total = 0
        self._per_address: Counter[str] = Counter()

    def acquire(self, address: str) -> str | None:
        """Count a new connection from ``address``; or, past a limit, say which (and count nothing)."""
        if self.max_total and self.total >= self.max_total:
            return "server at its connection limit"
        if self.max_per_address and self._per_address[address] >= self.max_per_address:
            return "too many connections from this address"
        self.total += 1
        self._per_address[address] += 1
        return None

    def release(self, address: str) -> None:
        """Forget one connection from ``address`` that :meth:`acquire` admitted."""
        self.total -= 1
        left = self._per_address[address] - 1
        if left > 0:
            self._per_address[address] = left
        else:
            del self._per_address[address]

    def count(self, address: str) -> int:
        return self._per_address.get(address, 0)
