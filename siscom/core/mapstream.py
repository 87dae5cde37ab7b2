"""The stream core of a map client: a box with enter and leave, a rate per device, a field set.

:class:`MapStreamCore` is a :class:`~siscom.core.stream.StreamCore` for streams opened with
``bbox``, ``max_hz`` or ``fields`` (plain streams keep the plain core, so the router's path to
them costs what it did). What it adds, all without I/O:

- ``bbox``: the core watches a box in the table's :class:`~siscom.core.viewport.ViewportIndex`
  instead of subscribing by device. It knows which devices it has in view; a device that moves out
  gets one ``leave`` frame; one that comes in arrives with its position frame. Moving the box
  (``{"action":"subscribe","bbox":[...]}``) answers with the ack, the last position of each device
  now in view that was not, and a ``leave`` frame for each that no longer is.
- ``max_hz``: positions pass a :class:`~siscom.core.throttle.Throttle`; the ones that wait are
  released by :meth:`take` when their slot frees, and :meth:`wait_time` wakes the pump for them.
  Rate slots are on the clock of the times the events pass in (a delivery's ``now`` is the
  router's, on the same monotonic clock as the pump's).
- ``fields``: positions are reduced by the shared :class:`~siscom.core.fields.Projection`.

Alerts are sent whole and never wait for a slot.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

from siscom.core.access import InboundAllowance, TokenGrant
from siscom.core.deliveries import Delivery
from siscom.core.geo import BBox
from siscom.core.mapoptions import MapOptions
from siscom.core.protocol import (
    ClientCommand,
    ack_frame,
    error_frame,
    leave_frame,
    with_cursor,
)
from siscom.core.replayfeed import ReplayFeed
from siscom.core.stream import StreamCore, StreamPolicy
from siscom.core.subscriptions import SubscriptionTable
from siscom.core.throttle import Throttle

if TYPE_CHECKING:
    from siscom.core.window import RecentWindow

__all__ = ["MapStreamCore"]


class MapStreamCore(StreamCore):
    __slots__ = ("_box", "_ids", "_projection", "_throttle", "_plain")

    def __init__(
        self,
        device_ids: frozenset[str] | None,
        *,
        table: SubscriptionTable,
        policy: StreamPolicy,
        options: MapOptions,
        grant: TokenGrant | None = None,
        inbound: InboundAllowance | None = None,
        verify: Callable[[str], TokenGrant] | None = None,
        window: RecentWindow | None = None,
    ) -> None:
        super().__init__(
            device_ids, table=table, policy=policy, grant=grant, inbound=inbound, verify=verify, window=window
        )
        self._box: BBox | None = options.bbox
        #: What the client sees is the devices whose newest position (as the viewport index has
        #: it) is in the box, and among these ids: worked out from the index when needed, never
        #: kept here (a world box would keep every device, for every such client).
        self._ids = device_ids
        self._projection = None if options.fields is None else table.projections.get(options.fields)
        self._throttle = None if options.max_hz is None else Throttle(options.max_hz)
        #: Positions go to the outbox as they are (no fields, no rate).
        self._plain = self._projection is None and self._throttle is None

    @property
    def box(self) -> BBox | None:
        return self._box

    # Events

    def deliver(self, delivery: Delivery, now: float) -> None:
        if self.closing is not None:
            return
        if delivery.alert:
            self._routed_reply(delivery.text)
        else:
            self._position(delivery.device_id, delivery.text, now)

    def deliver_in_view(self, delivery: Delivery, now: float) -> None:
        """From the viewport index: a record of a device whose newest position is in the box
        (for an alert: was, when the alert came)."""
        ids = self._ids
        if (ids is not None and delivery.device_id not in ids) or self.closing is not None:
            return
        if delivery.alert:
            self._routed_reply(delivery.text)
        elif self._plain:  # the common case, inline: nothing to reduce or to hold
            self.outbox.put_position(delivery.device_id, delivery.text)
        else:
            self._position(delivery.device_id, delivery.text, now)

    def leave_view(self, device_id: str) -> None:
        """From the viewport index: a device whose newest position was in the box moved out."""
        ids = self._ids
        if self.closing is None and (ids is None or device_id in ids):
            self._leave(device_id)
            if self.closing is not None:
                self._ring()

    def _routed_reply(self, text: str) -> None:
        """Queue an alert the router hands over; a close it causes (past the bound) rings the alarm."""
        self._reply(text)
        if self.closing is not None:
            self._ring()

    def _apply(self, command: ClientCommand, now: float) -> None:
        if self._box is None:
            super()._apply(command, now)
            return
        max_ids = self._policy.max_device_ids
        current = wanted = self._ids
        if command.device_ids or command.bbox is None:
            if command.action == "subscribe":
                if not self._granted(command.device_ids):
                    return
                wanted = None if current is None else current | command.device_ids
            elif current is None:
                self._reply(error_frame("this stream receives every device in its box; subscribe to a list first"))
                return
            else:
                wanted = current - command.device_ids
        if wanted is not None and len(wanted) > max_ids:
            self._reply(error_frame(f"at most {max_ids} device ids per stream"))
            return
        old_box, box = self._box, command.bbox or self._box
        viewports = self._table.viewports
        examined = viewports.examined
        if wanted is current:  # a pan: only the devices that cross the box's edges are looked at
            entered = self._among(viewports.devices_entering(old_box, box), wanted)
            left = self._among(viewports.devices_entering(box, old_box), wanted)
        else:
            before = set(self._in_view(old_box, current))
            now_visible = set(self._in_view(box, wanted))
            entered, left = list(now_visible - before), list(before - now_visible)
        entered.sort()
        left.sort()
        self._work += viewports.examined - examined
        self._box, self._ids = box, wanted
        self._table.subscribe_box(self, wanted, box)
        self._reply(ack_frame(command.action, wanted, box))
        self._queue_snapshot(entered, now)
        for device_id in left:
            self._leave(device_id)

    # What to do next

    def take(self, now: float) -> list[str]:
        throttle = self._throttle
        if throttle is not None and self.closing is None:
            released = throttle.release(now)
            # Frames routed after a held position went out before it: released, it carries the
            # dispatch cursor (every frame routed to this client is queued before it), not its
            # record's older one, or a client cut off just after it would get those again.
            dispatched = self._window.dispatched if self._window is not None and released else None
            for device_id, text in released:
                self.outbox.put_position(device_id, text if dispatched is None else with_cursor(text, dispatched))
        return super().take(now)

    def wait_time(self, now: float) -> float:
        wait = super().wait_time(now)
        if self._throttle is not None:
            due = self._throttle.next_due()
            if due is not None:
                wait = min(wait, max(0.0, due - now))
        return wait

    def end(self) -> int:
        if self._throttle is not None:
            self._throttle.clear()
        return super().end()

    # Helpers

    def _join(self) -> bool:
        if self._box is None:
            return super()._join()
        self._table.subscribe_box(self, self._ids, self._box)
        return True

    def _initial_view(self) -> Iterable[str] | None:
        return super()._initial_view() if self._box is None else sorted(self._in_view(self._box, self._ids))

    def _current_view(self) -> Iterable[str] | None:
        # Leaves come from geometry (nothing records what a box client saw): the view now, whole.
        return self._initial_view()

    def _replay(self, replay: ReplayFeed, live: Iterable[Delivery], now: float) -> None:
        """What a map would have seen of ``replay`` (this client's records after its cursor, in
        log order) and of ``live`` (routed while it was read), the newest of it first-hand:

        - every alert, in place (with a box: when its device was in the box, by the last position
          replayed before it, else by where the device is now);
        - of each device's positions only its newest, in its place in the log, through the box,
          the fields and the rate like a live one; a device whose newest position is out of the
          box gets a ``leave`` frame instead, when the client may have shown it: the stream names
          its devices (a bounded list), or the device was in the box earlier in the replay. (A
          stream of every device gets no leave for a device seen in the box only before its
          cursor: the alternative is a leave for every device that moved anywhere meanwhile.)

        Frames keep their record's cursor and go out in log order, so a client cut off mid-replay
        that resumes from the last frame it got still gets every alert once and each device's
        newest position.
        """
        # Taken whole: a map's replay is its alerts and one frame per device, known at the end.
        self._replay_deliveries([*replay.rest(), *live], now)

    def _replay_deliveries(self, replay: list[Delivery], now: float) -> None:
        box = self._box
        named = self._ids is not None
        was_inside: set[str] = set()
        # A position record without a position is in no box: a box stream never gets it.
        newest = {
            delivery.device_id: number
            for number, delivery in enumerate(replay)
            if not delivery.alert and (box is None or delivery.position is not None)
        }
        where: dict[str, tuple[float, float] | None] = {}
        for number, delivery in enumerate(replay):
            device_id = delivery.device_id
            if delivery.alert:
                if box is None:
                    self._reply(delivery.text)
                    continue
                position = where[device_id] if device_id in where else self._table.viewports.position_of(device_id)
                if position is not None and box.contains(*position):
                    self._reply(delivery.text)
                continue
            if box is None:
                if newest.get(device_id) == number:
                    self._position(device_id, delivery.text, now)
                continue
            position = delivery.position
            if position is None:
                continue
            where[device_id] = position
            inside = box.contains(*position)
            if newest[device_id] != number:
                if inside:
                    was_inside.add(device_id)
            elif inside:
                self._position(device_id, delivery.text, now)
            elif named or device_id in was_inside:
                self._leave(device_id)

    def _position(self, device_id: str, text: str, now: float) -> None:
        if self._projection is not None:
            text = self._projection.reduce(device_id, text)
        throttle = self._throttle
        if throttle is not None:
            waiting = len(throttle)
            if not throttle.offer(device_id, text, now):
                if len(throttle) != waiting:
                    self.outbox.wake()  # a new slot to wait for: the pump recomputes its wait
                return
        self.outbox.put_position(device_id, text)

    def _leave(self, device_id: str) -> None:
        if self._throttle is not None:
            self._throttle.drop(device_id)
        self.outbox.drop_position(device_id)
        self._reply(leave_frame(device_id))

    def _queue_snapshot(self, device_ids: Iterable[str] | None, now: float) -> None:
        for device_id, text in self._table.snapshot(device_ids):
            self._position(device_id, text, now)

    def _in_view(self, box: BBox, ids: frozenset[str] | None) -> list[str]:
        return self._among(self._table.viewports.devices_in(box), ids)

    @staticmethod
    def _among(devices: list[str], ids: frozenset[str] | None) -> list[str]:
        return devices if ids is None else [device for device in devices if device in ids]
