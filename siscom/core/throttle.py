"""``max_hz``: at most so many position frames per second per device for one client.

Each device has a slot: a position that arrives when the device's slot is free goes out at once
and takes the slot for ``1 / max_hz`` seconds; one that arrives while the slot is taken waits, and
a newer position of the same device replaces the waiting one (conflation), so that when the slot
frees the client gets the newest position there is. Alerts never pass through here. Times are
given by the caller (any monotonic clock).
"""

from __future__ import annotations

import heapq

__all__ = ["Throttle"]


class Throttle:
    __slots__ = ("_interval", "_busy_until", "_waiting", "_due", "conflated")

    def __init__(self, max_hz: float) -> None:
        self._interval = 1.0 / max_hz
        #: Device -> when its slot frees.
        self._busy_until: dict[str, float] = {}
        #: Device -> the newest position waiting for its slot.
        self._waiting: dict[str, str] = {}
        #: (when, device) of the waiting positions, soonest first.
        self._due: list[tuple[float, str]] = []
        #: Waiting positions replaced by a newer one.
        self.conflated = 0

    def __len__(self) -> int:
        """Positions waiting for their slot."""
        return len(self._waiting)

    def offer(self, device_id: str, text: str, now: float) -> bool:
        """True when the position may go out now (its slot is taken); else it waits here."""
        busy_until = self._busy_until.get(device_id)
        if busy_until is None or now >= busy_until:
            self._busy_until[device_id] = now + self._interval
            if self._waiting.pop(device_id, None) is not None:  # not released yet: this one is newer
                self.conflated += 1
            return True
        if device_id in self._waiting:
            self.conflated += 1
        else:
            heapq.heappush(self._due, (busy_until, device_id))
        self._waiting[device_id] = text
        return False

    def release(self, now: float) -> list[tuple[str, str]]:
        """The waiting positions whose slot has freed by ``now`` (each takes its slot again)."""
        released = []
        due = self._due
        while due and due[0][0] <= now:
            when, device_id = heapq.heappop(due)
            text = self._waiting.pop(device_id, None)
            if text is None:  # dropped meanwhile
                continue
            self._busy_until[device_id] = max(when, now - self._interval) + self._interval
            released.append((device_id, text))
        if not due and len(self._busy_until) > 64:
            # Nothing waits: forget the slots that are free anyway.
            self._busy_until = {d: t for d, t in self._busy_until.items() if t > now}
        return released

    def drop(self, device_id: str) -> None:
        """Forget a waiting position of ``device_id`` (it left the client's view)."""
        self._waiting.pop(device_id, None)

    def next_due(self) -> float | None:
        """When the soonest waiting position may go out, if any waits."""
        while self._due and self._due[0][1] not in self._waiting:
            heapq.heappop(self._due)
        return self._due[0][0] if self._due else None

    def clear(self) -> None:
        self._waiting.clear()
        self._due.clear()
