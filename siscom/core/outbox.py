"""A session's mailbox: first in, first out while the client keeps up; conflating once it doesn't.

A client that reads as fast as frames arrive gets every frame in order. A client that falls more
than ``soft_limit`` frames behind gets the newest position of each device instead of a backlog (a
map should show where a vehicle *is*, not replay where it was): from then on, until it has caught
up, a new position of a device that is still waiting replaces the waiting one in its place in
line, and frames go out in chunks of at most ``chunk``, so that what waits keeps being refreshed
while earlier chunks are written. Each device therefore reaches a slow client once per pass over
the devices, with the newest data there is, and how old that data is stays bounded by how often
devices report, not by how far behind the client is. Alerts and control frames are never
conflated and keep their order; more than ``max_alerts`` of them waiting make the outbox refuse
more (:class:`OutboxFull`), and the session closes that client with 1013. Memory is
bounded by the devices the client watches plus the alerts it has not read.

The bound is for lag, not for a burst: alerts that arrive together (one batch of the log, all in
one event-loop turn) while the client had caught up (its writer was waiting for frames) may go
past it, up to :data:`BURST` times the bound, because the client has not had its turn to read
them yet. Once the writer has had that turn and left frames waiting, or while it is stuck on a
client that does not read, the bound holds as it is. An outbox that holds live frames apart while
a replay goes out (``apart``) is in a burst until it is taken: the client has not had its turn
for any of them.

A position that takes a waiting one's place in line keeps that one's cursor (the ``id`` of the
frame it replaces): frames then go out with cursors in dispatch order, and a client cut off
while behind resumes from a cursor that no waiting frame is older than. Without that, a newer
position ahead of a waiting alert would carry a cursor past it, and the alert would be lost.
The kept cursor is noted beside the slot and written into the frame only when it is taken: a
client that does not read costs a dictionary update per position routed to it, not a new
string (that rewrite, once per conflation, was most of an overloaded server's time).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable

from siscom.core.deliveries import Delivery
from siscom.core.protocol import frame_cursor, with_cursor

#: Key of frames that are never conflated (alerts, pings, errors, acks) while the client keeps up.
_KEEP = None

#: How far past ``max_alerts`` a burst may go that arrives while the client has caught up.
BURST = 8

#: Most frames handed out by one take: a session writes at most this many before it lets the
#: others run.
CHUNK = 8


class OutboxFull(Exception):
    """Too many frames that must never be dropped are waiting: the client is not reading."""


class Outbox:
    """The frames waiting for one client. Pure: whoever writes them waits on :attr:`waker`."""

    __slots__ = (
        "_queue",
        "_latest",
        "_soft_limit",
        "_chunk",
        "_max_alerts",
        "_alerts",
        "_burst",
        "_apart",
        "_cursors",
        "waker",
        "conflated",
    )

    def __init__(self, soft_limit: int, max_alerts: int, chunk: int = CHUNK, *, apart: bool = False) -> None:
        #: Frames in arrival order while the client keeps up: (device id or _KEEP, text).
        #: A list, not a deque: an empty deque keeps a 624-byte block, an empty list nothing, and
        #: most clients' outboxes are empty most of the time. Taken whole or a chunk at a time.
        self._queue: list[tuple[str | None, str]] = []
        #: While the client is behind: device id (or a unique key per kept frame) -> newest text.
        self._latest: OrderedDict[object, str] | None = None
        #: While behind: the cursor a slot keeps (its first frame's), for slots a newer position
        #: took; written into the frame when it is taken.
        self._cursors: dict[object, str] = {}
        self._soft_limit = soft_limit
        self._chunk = chunk
        self._max_alerts = max_alerts
        self._alerts = 0
        #: True while every frame waiting came since the client had caught up (see the module
        #: docstring): the alerts among them may go past the bound, up to BURST times it.
        self._burst = apart
        #: Frames held apart while a replay goes out: a burst until taken (see the module docstring).
        self._apart = apart
        #: Called once, then forgotten, when a frame is queued: set by a writer about to wait.
        self.waker: Callable[[], None] | None = None
        #: Positions dropped because a newer one of the same device replaced them.
        self.conflated = 0

    def __len__(self) -> int:
        return len(self._queue) + (len(self._latest) if self._latest is not None else 0)

    @property
    def behind(self) -> bool:
        """True while the client is too far behind to get every frame."""
        return self._latest is not None

    def put_delivery(self, delivery: Delivery) -> None:
        if delivery.alert:
            self.put_kept(delivery.text)
        else:
            self.put_position(delivery.device_id, delivery.text)

    def put_position(self, device_id: str, text: str) -> None:
        latest = self._latest
        if latest is not None:
            waiting = latest.get(device_id)
            if waiting is not None:
                self.conflated += 1
                if device_id not in self._cursors:  # the hot path of a client that does not read
                    self._keep_cursor(device_id, waiting)
            latest[device_id] = text  # a waiting device keeps its place in line
        else:
            queue = self._queue
            if not queue:
                self._burst = self.waker is not None or self._apart
            queue.append((device_id, text))
            if len(queue) > self._soft_limit:
                self._fall_behind()
        if self.waker is not None:
            self.wake()

    def put_kept(self, text: str) -> None:
        """Queue a frame that must never be dropped; refuses once too many are waiting (past the
        bound only within a burst: see the module docstring)."""
        alerts = self._alerts
        if alerts >= self._max_alerts and (not self._burst or alerts >= self._max_alerts * BURST):
            raise OutboxFull(f"{alerts} unconflatable frames waiting")
        self._alerts = alerts + 1
        if self._latest is not None:
            self._latest[object()] = text
        else:
            if not self._queue:
                self._burst = self.waker is not None or self._apart
            self._queue.append((_KEEP, text))
        if self.waker is not None:
            self.wake()

    def drop_position(self, device_id: str) -> None:
        """Forget the position of ``device_id`` waiting while the client is behind, so that a frame
        queued next (a leave) is not overtaken by a newer position taking the old one's place."""
        latest = self._latest
        if latest is not None and latest.pop(device_id, None) is not None:
            self._cursors.pop(device_id, None)
            self.conflated += 1

    def take(self, limit: int | None = None) -> list[str]:
        """Take up to a chunk (and at most ``limit``) of the waiting frames, oldest first (an
        empty list when none wait)."""
        latest = self._latest
        chunk = self._chunk if limit is None else min(self._chunk, limit)
        if latest is None:
            queue = self._queue
            if len(queue) <= chunk:
                texts = [text for _, text in queue]
                queue.clear()
                self._alerts = 0
                return texts
            taken = queue[:chunk]
            del queue[:chunk]
            self._burst = False  # the client had its turn and left frames waiting
            texts = []
            for key, text in taken:
                if key is _KEEP:
                    self._alerts -= 1
                texts.append(text)
            return texts
        texts = []
        cursors = self._cursors
        for _ in range(min(chunk, len(latest))):
            slot, text = latest.popitem(last=False)
            if type(slot) is not str:
                self._alerts -= 1
            elif cursors:
                cursor = cursors.pop(slot, None)
                if cursor is not None:
                    text = with_cursor(text, cursor)
            texts.append(text)
        if not latest:
            self._latest = None  # caught up: first in, first out again
        else:
            self._burst = False
        return texts

    def clear(self) -> None:
        self._queue.clear()
        self._latest = None
        self._cursors.clear()
        self._alerts = 0
        self._burst = False

    def absorb(self, other: Outbox) -> None:
        """Take over everything waiting in ``other`` (which is left empty), in its order and state
        (behind or not); this outbox must be empty. A stream that held its live frames apart
        while it replayed the past queues them with this, once the replay is out."""
        if len(self):
            raise ValueError("absorb needs an empty outbox")
        self._queue, other._queue = other._queue, self._queue
        self._latest, other._latest = other._latest, None
        self._cursors, other._cursors = other._cursors, {}
        self._alerts, other._alerts = other._alerts, 0
        self._burst, other._burst = False, False
        self.conflated += other.conflated
        other.conflated = 0
        if len(self) and self.waker is not None:
            self.wake()

    def wake(self) -> None:
        """Call the waiting writer's :attr:`waker`, if any, once."""
        waker = self.waker
        if waker is not None:
            self.waker = None
            waker()

    def _fall_behind(self) -> None:
        """Fold the queue into newest-per-device order: each device where it first waited."""
        latest: OrderedDict[object, str] = OrderedDict()
        for key, text in self._queue:
            if key is _KEEP:
                latest[object()] = text
            else:
                waiting = latest.get(key)
                if waiting is not None:
                    self.conflated += 1
                    self._keep_cursor(key, waiting)
                latest[key] = text
        self._queue.clear()
        self._latest = latest

    def _keep_cursor(self, slot: object, waiting: str) -> None:
        """Note the cursor ``slot`` keeps when a newer position takes the place of ``waiting``
        (see the module docstring): the first frame's, so only the first replacement reads it.
        The newer frame's data says more than the cursor: a client resuming from that cursor gets
        this position again."""
        if slot not in self._cursors:
            cursor = frame_cursor(waiting)
            if cursor is not None:
                self._cursors[slot] = cursor
