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
from siscom.core.fields import Projections
from siscom.core.geo import BBox, Position
from siscom.core.viewport import ViewportIndex


class Subscriber(Protocol):
    def deliver(self, delivery: Delivery) -> None:
        """Take one delivery without blocking (the router never waits for a client)."""


class SubscriptionTable:
    """Device id -> subscribers, the all-devices subscribers, and the snapshot frames.

    Subscribers that watch a box are filed in :attr:`viewports` instead of the device index; the
    shared field selections of the streams are in :attr:`projections`.
    """

    def __init__(self) -> None:
        self._by_device: dict[str, set[Subscriber]] = {}
        self._everything: set[Subscriber] = set()
        self._filters: dict[Subscriber, frozenset[str] | None] = {}
        #: The newest position delivery of each device (its text is the snapshot frame).
        self._last: dict[str, Delivery] = {}
        self.viewports = ViewportIndex(self._last_positions)
        self.projections = Projections()

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

    def subscribe_box(self, subscriber: Subscriber, device_ids: frozenset[str] | None, box: BBox) -> None:
        """Set ``subscriber``'s filter to the devices in ``box`` (and among ``device_ids``, unless
        ``None``); the viewport index reaches it, not the device index."""
        if self.viewports.box_of(subscriber) is None:  # type: ignore[arg-type]
            self.unsubscribe(subscriber)
        self._filters[subscriber] = device_ids
        self.viewports.watch(subscriber, box)  # moves the box it had, if any  # type: ignore[arg-type]  # box subscribers are Watchers

    def unsubscribe(self, subscriber: Subscriber) -> None:
        if self.viewports.box_of(subscriber) is not None:  # type: ignore[arg-type]
            self.viewports.unwatch(subscriber)  # type: ignore[arg-type]
            self._filters.pop(subscriber, None)
            return
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

    def remember(self, delivery: Delivery) -> None:
        """Keep ``delivery`` (a position) as its device's newest."""
        self._last[delivery.device_id] = delivery

    def snapshot(self, device_ids: Iterable[str] | None) -> list[tuple[str, str]]:
        """The last known frame of each given device that has reported (all devices for ``None``)."""
        last = self._last
        if device_ids is None:
            return [(device_id, delivery.text) for device_id, delivery in last.items()]
        return [(device_id, last[device_id].text) for device_id in device_ids if device_id in last]

    def _last_positions(self) -> list[tuple[str, Position]]:
        return [(d, delivery.position) for d, delivery in self._last.items() if delivery.position is not None]

    @property
    def devices_indexed(self) -> int:
        return len(self._by_device)

    @property
    def devices_known(self) -> int:
        return len(self._last)
