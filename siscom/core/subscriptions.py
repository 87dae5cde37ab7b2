"""Who wants which device, and the last position each device reported.

Memory is what a stranger can make this table spend, so it is spent carefully and bounded: a
device with few subscribers (the common case: a fleet's vehicles, each on a few dashboards) keeps
them in a small tuple rather than a set (48 bytes instead of 216); clients with equal filters
share one frozenset; and ``max_ids`` bounds the ids of all filters together (a filter of every
device counts as one), so that past it :meth:`subscribe` refuses with :class:`SubscriptionLimit`.

This table outlives any one incarnation of the router, the way an ETS table owned by a
supervisor outlives the processes that use it: a router restarted after a crash finds every
session still subscribed and every snapshot frame still there. Sessions write their own entry
when they start and remove it when they stop; the router only reads. Everything runs on one event
loop, so no locking is needed, and a subscriber that reads its snapshot in the same step as it
subscribes can never miss or duplicate a frame.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Sequence
from typing import Protocol

from siscom.core.deliveries import Delivery
from siscom.core.fields import Projections
from siscom.core.geo import BBox, Position
from siscom.core.protocol import without_cursor
from siscom.core.viewport import ViewportIndex

#: Subscribers of one device kept in a tuple up to this many; a set beyond.
_TUPLE_MAX = 8


class SubscriptionLimit(Exception):
    """Subscribing would take the table past its bound of subscribed ids."""


class Subscriber(Protocol):
    def deliver(self, delivery: Delivery, now: float) -> None:
        """Take one delivery, routed at ``now`` (a monotonic clock's), without blocking (the
        router never waits for a client)."""


class SubscriptionTable:
    """Device id -> subscribers, the all-devices subscribers, and the snapshot frames.

    Subscribers that watch a box are filed in :attr:`viewports` instead of the device index; the
    shared field selections of the streams are in :attr:`projections`.
    """

    def __init__(self, max_ids: int = 0) -> None:
        #: Device id -> its subscribers: a tuple while few, a set beyond _TUPLE_MAX.
        self._by_device: dict[str, tuple[Subscriber, ...] | set[Subscriber]] = {}
        self._everything: set[Subscriber] = set()
        self._filters: dict[Subscriber, frozenset[str] | None] = {}
        #: The newest position delivery of each device (its text is the snapshot frame).
        self._last: dict[str, Delivery] = {}
        #: Every device of _last, for snapshots of every device (see snapshot_ids).
        self._every_id: tuple[str, ...] | None = None
        #: Per device: its last frame, and that frame without its cursor (see snapshot_frame).
        self._bare: dict[str, tuple[str, str]] = {}
        self.viewports = ViewportIndex(self._last_positions)
        self.projections = Projections()
        #: Equal filters share one frozenset: filter -> (the shared one, how many hold it).
        self._shared: dict[frozenset[str], tuple[frozenset[str], int]] = {}
        #: Most ids the device filters may hold together (0: no bound), and how many they hold
        #: (box subscribers are in the viewport index, outside this count).
        self.max_ids = max_ids
        self.subscribed_ids = 0

    def __len__(self) -> int:
        return len(self._filters)

    def subscribe(self, subscriber: Subscriber, device_ids: frozenset[str] | None) -> None:
        """Set ``subscriber``'s filter: ``None`` means every device. Replaces any earlier filter.

        Raises :class:`SubscriptionLimit`, leaving the earlier filter in place, when the new one
        would take the table past ``max_ids``.
        """
        counted = subscriber in self._filters and self.viewports.box_of(subscriber) is None  # type: ignore[arg-type]
        held = self._weight(self._filters[subscriber]) if counted else 0
        if self.max_ids and self.subscribed_ids - held + self._weight(device_ids) > self.max_ids:
            raise SubscriptionLimit(f"at most {self.max_ids} device ids subscribed in this process")
        self.unsubscribe(subscriber)
        self.subscribed_ids += self._weight(device_ids)
        if device_ids is None:
            self._filters[subscriber] = None
            self._everything.add(subscriber)
            return
        device_ids = self._share(device_ids)
        self._filters[subscriber] = device_ids
        by_device = self._by_device
        for device_id in device_ids:
            subscribers = by_device.get(device_id)
            if subscribers is None:
                by_device[device_id] = (subscriber,)
            elif isinstance(subscribers, tuple):
                if len(subscribers) < _TUPLE_MAX:
                    by_device[device_id] = (*subscribers, subscriber)
                else:
                    by_device[device_id] = {*subscribers, subscriber}
            else:
                subscribers.add(subscriber)

    def subscribe_box(self, subscriber: Subscriber, device_ids: frozenset[str] | None, box: BBox) -> None:
        """Set ``subscriber``'s filter to the devices in ``box`` (and among ``device_ids``, unless
        ``None``); the viewport index reaches it, not the device index."""
        if self.viewports.box_of(subscriber) is None:  # type: ignore[arg-type]
            self.unsubscribe(subscriber)
        self._filters[subscriber] = device_ids
        self.viewports.watch(subscriber, box)  # type: ignore[arg-type]  # box subscribers are Watchers; moves any earlier box

    def unsubscribe(self, subscriber: Subscriber) -> None:
        if self.viewports.box_of(subscriber) is not None:  # type: ignore[arg-type]
            self.viewports.unwatch(subscriber)  # type: ignore[arg-type]
            self._filters.pop(subscriber, None)
            return
        if subscriber not in self._filters:
            return
        device_ids = self._filters.pop(subscriber)
        self.subscribed_ids -= self._weight(device_ids)
        if device_ids is None:
            self._everything.discard(subscriber)
            return
        self._unshare(device_ids)
        by_device = self._by_device
        for device_id in device_ids:
            subscribers = by_device[device_id]
            if isinstance(subscribers, tuple):
                rest = tuple(other for other in subscribers if other is not subscriber)
                if rest:
                    by_device[device_id] = rest
                else:
                    del by_device[device_id]
            else:
                subscribers.discard(subscriber)
                if not subscribers:
                    del by_device[device_id]

    def canonical(self, device_ids: frozenset[str] | None) -> frozenset[str] | None:
        """The filter equal to ``device_ids`` that subscribers already share, if any; else itself.

        Whoever holds a filter for long (a connection's handler) holds this one, so that a copy
        per client does not outlive the parse.
        """
        if device_ids is None:
            return None
        entry = self._shared.get(device_ids)
        return device_ids if entry is None else entry[0]

    @staticmethod
    def _weight(device_ids: frozenset[str] | None) -> int:
        return 1 if device_ids is None else len(device_ids)

    def _share(self, device_ids: frozenset[str]) -> frozenset[str]:
        shared, holders = self._shared.get(device_ids, (device_ids, 0))
        self._shared[device_ids] = (shared, holders + 1)
        return shared

    def _unshare(self, device_ids: frozenset[str]) -> None:
        entry = self._shared.get(device_ids)
        if entry is not None:
            shared, holders = entry
            if holders > 1:
                self._shared[device_ids] = (shared, holders - 1)
            else:
                del self._shared[device_ids]

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

    def snapshot_ids(self, device_ids: Iterable[str] | None) -> Sequence[str]:
        """The given devices that have reported (all of them for ``None``), in the order their
        frames are to go out. All of them: one tuple shared by every stream that asks until a
        new device reports (devices are never forgotten, so the count tells)."""
        last = self._last
        if device_ids is not None:
            return [device_id for device_id in device_ids if device_id in last]
        every = self._every_id
        if every is None or len(every) != len(last):
            every = self._every_id = tuple(last)
        return every

    def snapshot_frame(self, device_id: str) -> str | None:
        """The last known frame of ``device_id`` without its cursor, built once per frame for
        every stream that sends it (a snapshot frame says where a device is, not where a
        client's stream stands); None if the device has not reported."""
        delivery = self._last.get(device_id)
        if delivery is None:
            return None
        bare = self._bare.get(device_id)
        if bare is None or bare[0] is not delivery.text:
            bare = self._bare[device_id] = (delivery.text, without_cursor(delivery.text))
        return bare[1]

    def _last_positions(self) -> list[tuple[str, Position]]:
        return [(d, delivery.position) for d, delivery in self._last.items() if delivery.position is not None]

    @property
    def devices_indexed(self) -> int:
        return len(self._by_device)

    @property
    def devices_known(self) -> int:
        return len(self._last)
