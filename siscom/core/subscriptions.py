"""Who wants which device, and the last position each device reported.

This table outlives any one incarnation of the router, the way an ETS table owned by a
supervisor outlives the processes that use it: a router restarted after a crash finds every
session still subscribed and every snapshot frame still there. Sessions write their own entry
when they start and remove it when they stop; the router only reads. Everything runs on one event
loop, so no locking is needed, and a subscriber that reads its snapshot in the same step as it
subscribes can never miss or duplicate a frame.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from typing import Protocol

from siscom.core.deliveries import Delivery


class Subscriber(Protocol):
    def deliver(self, delivery: Delivery) -> None:
        """Take one delivery without blocking (the router never waits for a client)."""


class SubscriptionTable:
    """Device id -> subscribers, the all-devices subscribers, and the snapshot frames."""

    def __init__(self) -> None:
        self._by_device: dict[str, set[Subscriber]] = {}
        self._everything: set[Subscriber] = set()
        self._filters: dict[Subscriber, frozenset[str] | None] = {}
        self._last_frames: dict[str, str] = {}

    def __len__(self) -> int:
        return len(self._filters)

    def subscribe(self, subscriber: Subscriber, device_ids: frozenset[str] | None) -> None:
        """Set ``subscriber``'s filter: ``None`` means every device. Replaces any earlier filter."""
        self.unsubscribe(subscriber)
        self._filters[subscriber] = device_ids
        if device_ids is None:
            self._everything.add(subscriber)
            return
        for device_id in device_ids:
            self._by_device.setdefault(device_id, set()).add(subscriber)

    def unsubscribe(self, subscriber: Subscriber) -> None:
        device_ids = self._filters.pop(subscriber, ())
        if device_ids is None:
            self._everything.discard(subscriber)
            return
        for device_id in device_ids:
            subscribers = self._by_device[device_id]
            subscribers.discard(subscriber)
            if not subscribers:
                del self._by_device[device_id]

    def filter_of(self, subscriber: Subscriber) -> frozenset[str] | None:
        return self._filters[subscriber]

    def subscribers_of(self, device_id: str) -> tuple[Collection[Subscriber], Collection[Subscriber]]:
        """Those subscribed to ``device_id`` by name, and those subscribed to everything.

        Two collections rather than their union: the router iterates both, and building a union
        per record would cost an allocation on the hottest path.
        """
        return self._by_device.get(device_id, ()), self._everything

    def remember(self, device_id: str, text: str) -> None:
        self._last_frames[device_id] = text

    def snapshot(self, device_ids: Iterable[str] | None) -> list[tuple[str, str]]:
        """The last known frame of each given device that has reported (all devices for ``None``)."""
        if device_ids is None:
            return list(self._last_frames.items())
        last = self._last_frames
        return [(device_id, last[device_id]) for device_id in device_ids if device_id in last]

    @property
    def devices_indexed(self) -> int:
        return len(self._by_device)

    @property
    def devices_known(self) -> int:
        return len(self._last_frames)
