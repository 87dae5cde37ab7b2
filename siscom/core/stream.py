"""The state of one client's stream, without I/O: what it watches, what waits, how it ends.

In the manner of a sans-I/O protocol object, :class:`StreamCore` takes events and says what to
send next; whoever owns the connection (the session actor) does the writing, the waiting and the
timing. Events in:

- :meth:`StreamCore.deliver`: a record routed to this client (the router calls it directly: the
  core is the subscriber in the :class:`~siscom.core.subscriptions.SubscriptionTable`);
- :meth:`StreamCore.receive`: a message from the client (subscribe, unsubscribe, refresh, anything
  else), within the client's allowance of messages (:class:`~siscom.core.access.InboundAllowance`);
- :meth:`StreamCore.control_frame`: a WebSocket ping or pong from the client, within its allowance;
- :meth:`StreamCore.token_expiring`, :meth:`StreamCore.token_expired`, :meth:`StreamCore.close`,
  :meth:`StreamCore.client_gone`.

Events from the owner of the connection return what the owner is to do besides writing
(:class:`Effects`, None when nothing): the stream has begun to close (stop waiting, stop a stalled
write, then send :attr:`StreamCore.closing`'s final frame and close code), or the client asked
for token refreshes (each outcome, and an accepted grant's new expiry that the timers follow).
Effects that arise inside :meth:`StreamCore.take` (messages held during a replay, applied once it
is out) or :meth:`StreamCore.control_frame` wait in :attr:`StreamCore.pending`, collected with
:meth:`StreamCore.effects`.

The router's deliveries have no caller to return effects to, so the core calls out through two
hooks, and only these: the outbox's waker (set while the pump waits for frames, called when one
is queued) and :attr:`StreamCore.alarm`, rung when a delivery closed the stream (a client past
its bound): its owner then collects the effects and stops a write stalled on that client.

Token refresh: the pump asks :meth:`StreamCore.notice_delay` and :meth:`StreamCore.expiry_delay`
when to call :meth:`StreamCore.token_expiring` (which queues the ``token-expiring`` frame) and
:meth:`StreamCore.token_expired`. A client's ``refresh`` with a valid token that still grants the
current subscription replaces the grant (:class:`Refresh` with the new expiry); any other refresh
gets an error frame and changes nothing (:class:`Refresh` without one).

What to send: :meth:`StreamCore.take` (the next frames, with a keep-alive when one is due), then,
once :attr:`StreamCore.closing` is set, its final frame and close code. Times are passed in (any
monotonic clock; POSIX time for the token's), to every event that needs one: the core keeps no
clock of its own.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from siscom.core.access import InboundAllowance, TokenGrant
from siscom.core.deliveries import Delivery
from siscom.core.outbox import Outbox, OutboxFull
from siscom.core.protocol import (
    BadRequest,
    ClientCommand,
    CloseCode,
    RefreshCommand,
    ack_frame,
    error_frame,
    frame_cursor,
    parse_client_frame,
    ping_frame,
    refreshed_frame,
    token_expiring_frame,
    with_cursor,
)
from siscom.core.replayfeed import ReplayFeed
from siscom.core.subscriptions import SubscriptionLimit, SubscriptionTable
from siscom.core.window import RecentWindow

#: Most frames of a replay queued at once (fewer when the bound of waiting alerts is lower).
REPLAY_SLICE_FRAMES = 128
#: Most records of a replay looked at in one take (decoded, if none had been), and about the
#: longest one take spends on them (when the replay has a clock).
REPLAY_SLICE_RECORDS = 1024
REPLAY_SLICE_SECONDS = 0.002


#: What a client may send before its stream opens or while its replay goes out (while the replay,
#: or its turn for one, is waited for): messages within its allowance are kept, at most this many
#: and this many bytes in all (the first is always kept, up to the 64 KiB a message may have), and
#: applied in order once the replay is out; one more closes the stream as too many messages.
HELD_MESSAGES = 16
HELD_BYTES = 128 * 1024
#: Snapshot frames taken at once (one write to the client): about 16 KB of positions.
SNAPSHOT_CHUNK = 64


class Cause(enum.Enum):
    """Why a stream ends; the session logs and counts by it."""

    CLIENT_LEFT = "client left"
    SHUTDOWN = "server shutting down"
    SLOW_CLIENT = "client too slow"
    FORBIDDEN = "device not allowed"
    TOKEN_EXPIRED = "token expired"
    TOO_MANY_MESSAGES = "too many messages"
    SUBSCRIPTION_LIMIT = "server at its subscription limit"
    CLOSED = "closed"  # asked by the server for another reason (see the close code)


@dataclass(frozen=True, slots=True)
class Closing:
    """How the stream ends: the close frame's code and reason, and an error frame before it."""

    code: CloseCode
    reason: str
    cause: Cause
    final_frame: str | None = None
    #: True when the client is gone: nothing more is sent, not even the close frame.
    silent: bool = False


def final_frame(closing: Closing, *, in_band: bool = False) -> str | None:
    """The frame sent just before the stream ends: the closing's error frame, if any.

    ``in_band``: the transport has no close frame to carry a reason (Server-Sent Events), so
    every end but a normal one or a shutdown says why in an error frame (a slow client's, too).
    """
    if closing.final_frame is not None or not in_band:
        return closing.final_frame
    if closing.code in (CloseCode.NORMAL, CloseCode.GOING_AWAY):
        return None
    return error_frame(closing.reason)


@dataclass(frozen=True, slots=True)
class Refresh:
    """The outcome of a client's token refresh: the new grant's expiry (POSIX time), or None when
    it was refused (the grant, and so the timers, stay as they were)."""

    expires_at: float | None

    @property
    def accepted(self) -> bool:
        return self.expires_at is not None


@dataclass(frozen=True, slots=True)
class Effects:
    """What the owner of the connection is to do after an event, besides writing what
    :meth:`StreamCore.take` hands out."""

    #: The stream began to close in this event: stop waiting and any write in progress, then
    #: send this closing's final frame and close frame.
    closing: Closing | None = None
    #: The client's token refreshes, in order: count each; an accepted one moves the token's timers.
    refreshes: tuple[Refresh, ...] = ()


@dataclass(frozen=True, slots=True)
class StreamPolicy:
    """The limits of one stream that the core enforces."""

    keepalive_seconds: float
    max_pending_frames: int
    max_device_ids: int
    snapshot: bool
    #: How long before the token's expiry the client is told (``token-expiring``); 0: never.
    token_notice_seconds: float = 0.0


class StreamCore:
    """One client's subscription, grant, waiting frames and close state."""

    __slots__ = (
        "_table",
        "_policy",
        "_grant",
        "_inbound",
        "_verify",
        "_initial_ids",
        "outbox",
        "closing",
        "alarm",
        "pending",
        "_next_ping",
        "_window",
        "_cursor",
        "_feed",
        "_held",
        "_work",
        "_opened",
        "_is_open",
        "_early",
        "_early_bytes",
        "_snapshot",
        "_snapshot_at",
        "_snapshot_ahead",
        "_snapshot_cursor",
    )

    def __init__(
        self,
        device_ids: frozenset[str] | None,
        *,
        table: SubscriptionTable,
        policy: StreamPolicy,
        grant: TokenGrant | None = None,
        verify: Callable[[str], TokenGrant] | None = None,
        window: RecentWindow | None = None,
        inbound: InboundAllowance | None = None,
    ) -> None:
        """``window`` knows the gateway's dispatch cursor, which pings and snapshots carry."""
        self._table = table
        self._window = window
        #: The last cursor this client was given on a ping (or the one it resumed from).
        self._cursor: str | None = None
        self._policy = policy
        #: What the client's token allows (None: tokens are off, anything goes, forever).
        self._grant = grant
        #: How much the client may send (None: no limit).
        self._inbound = inbound
        #: Checks a refreshed token (raises a BadRequest saying why not); None: tokens are off.
        self._verify = verify
        self._initial_ids = device_ids
        self.outbox = Outbox(soft_limit=policy.max_pending_frames, max_alerts=policy.max_pending_frames)
        #: Set once, by the first close request: how the stream ends.
        self.closing: Closing | None = None
        #: Rung when a delivery (the router's call, which takes no effects back) closed the stream:
        #: its owner collects the effects (:meth:`effects`) and stops a stalled write.
        self.alarm: Callable[[], None] | None = None
        #: Effects not yet handed to the owner (see :meth:`effects`): an owner on a hot path reads
        #: this to skip collecting when there are none.
        self.pending: Effects | None = None
        self._next_ping = 0.0
        #: A replay not all taken yet (see :meth:`open`), and the live deliveries held meanwhile.
        self._feed: ReplayFeed | None = None
        self._held: Outbox | None = None
        #: Work done for this client (frames routed to it and taken or conflated, devices looked
        #: at for its commands), and since when: what overload shedding ranks clients by.
        self._work = 0
        self._opened = 0.0
        #: Whether the stream has opened; what the client sent before (see :meth:`receive`).
        self._is_open = False
        self._early: list[str | bytes] | None = None
        self._early_bytes = 0
        #: The devices whose snapshot frames are still to go out (see _queue_snapshot), and where
        #: in the first list; the frames queued before it, which go first; the cursor its last
        #: frame carries.
        self._snapshot: list[Sequence[str]] | None = None
        self._snapshot_at = 0
        self._snapshot_ahead = 0
        self._snapshot_cursor: str | None = None

    # Events

    def open(
        self,
        now: float,
        *,
        resumed: str | None = None,
        replay: ReplayFeed | list[Delivery] | None = None,
        cursor: str | None = None,
        live: Iterable[Delivery] = (),
    ) -> Effects | None:
        """The stream starts: subscribe, queue the snapshot; the first keep-alive is due at
        ``now`` plus the interval.

        A resumed stream first gets the ``resumed`` frame; then, when it recovered, the
        ``replay`` (deliveries of its devices in order, their texts carrying this client's
        cursor) instead of the snapshot, then ``live`` (deliveries routed while the replay was
        being read, with their shared cursors). ``cursor`` is where the client stands until its
        first replayed frame is out.

        The replay is taken a slice at a time, as the client takes frames (see :meth:`take`):
        it never waits in the outbox as a whole, so its alerts never count against the bound of
        waiting alerts; what is routed meanwhile waits apart, under the slow-client rules.
        """
        self._next_ping = now + self._policy.keepalive_seconds
        self._opened = now
        self._is_open = True
        # Where a new stream starts: its snapshot's last frame says so.
        self._snapshot_cursor = self._window.dispatched if self._window is not None else None
        if resumed is not None:
            self._reply(resumed)
        if self._join():
            if replay is not None:
                self._cursor = cursor
                self._replay(replay if isinstance(replay, ReplayFeed) else ReplayFeed.of(replay), live, now)
            elif self._policy.snapshot:
                self._queue_snapshot(self._initial_view(), now)
        if self._held is None:  # else once the replay is out (see _next_of_replay)
            self._apply_early(now)
        return self.effects()

    def deliver(self, delivery: Delivery, now: float) -> None:
        """A delivery routed to this client at ``now``. Never blocks, never raises (the router's
        hot path); a close it causes rings :attr:`alarm`."""
        if self.closing is not None:
            return
        try:
            (self.outbox if self._held is None else self._held).put_delivery(delivery)
        except OutboxFull:
            self._close(CloseCode.TRY_AGAIN_LATER, Cause.SLOW_CLIENT.value, cause=Cause.SLOW_CLIENT)
            self._ring()

    def warm_snapshot(self, now: float) -> Effects | None:
        """The snapshot arrived after the stream opened (the process warmed up late): queue it."""
        if self.closing is None and self._policy.snapshot:
            self._queue_snapshot(self._current_view(), now)
        return self.effects()

    def _current_view(self) -> Iterable[str] | None:
        """The devices whose snapshot the stream would get if it opened now (None: every device)."""
        return self.device_ids

    def receive(self, data: str | bytes, now: float) -> Effects | None:
        """A message from the client at ``now``: apply a subscription change and queue its answer;
        past the client's allowance of messages, close with 1008 instead. Before the stream opens
        (and while its replay goes out) the message is counted the same, and kept for then (see
        :data:`HELD_MESSAGES`)."""
        if self.closing is not None:
            return None
        if self._inbound is not None and not self._inbound.message(now):
            self._too_many_messages()
            return self.effects()
        if not self._is_open or self._held is not None:
            # Waiting for a replay (or its turn), or the replay is going out: kept, within a small
            # bound, for when it is out, so that no answer overtakes the frames it follows.
            size = len(data)
            if self._early is not None and (len(self._early) >= HELD_MESSAGES or self._early_bytes + size > HELD_BYTES):
                self._too_many_messages()
                return self.effects()
            if self._early is None:
                self._early = []
            self._early.append(data)
            self._early_bytes += size
            return None
        self._handle(data, now)
        return self.effects()

    def _handle(self, data: str | bytes, now: float) -> None:
        """Parse and apply one message of the client (the stream is open)."""
        try:
            command = parse_client_frame(data, max_ids=self._policy.max_device_ids)
        except BadRequest as error:
            self._reply(error_frame(error.message))
            return
        if command is None:
            return
        if isinstance(command, RefreshCommand):
            self._refresh(command.token)
            return
        self._apply(command, now)

    def _apply(self, command: ClientCommand, now: float) -> None:
        """A subscription change the client asked for (a subclass may read more of it)."""
        max_ids = self._policy.max_device_ids
        if command.bbox is not None:
            self._reply(error_frame("this stream has no box: open it with bbox=... to subscribe by box"))
            return
        current = self.device_ids
        if command.action == "subscribe":
            if not self._granted(command.device_ids):
                return
            added = command.device_ids if current is None else command.device_ids - current
            wanted = None if current is None else current | command.device_ids
        elif current is None:
            self._reply(error_frame("this stream receives every device; subscribe to a list first"))
            return
        else:
            added, wanted = frozenset(), current - command.device_ids
        if wanted is not None and len(wanted) > max_ids:
            self._reply(error_frame(f"at most {max_ids} device ids per stream"))
            return
        if not self._subscribe(wanted):
            return
        self._reply(ack_frame(command.action, wanted))
        if self._policy.snapshot and added:
            self._queue_snapshot(added, now)

    def control_frame(self, now: float) -> bool:
        """A WebSocket ping or pong from the client at ``now`` (the server answers pings below the
        application): whether to handle it. Past the client's allowance, close with 1008 and say no
        (the close's effects are then to collect with :meth:`effects`)."""
        if self._inbound is None or self._inbound.control_frame(now):
            return True
        self._too_many_messages()
        return False

    def token_expiring(self, now: float) -> Effects | None:
        """The notice is due (``now`` in POSIX time): tell the client how long its token has left."""
        if self.closing is not None or self._grant is None:
            return None
        self._reply(token_expiring_frame(self._grant.expires_at - now))
        return self.effects()

    def token_expired(self) -> Effects | None:
        return self.close(
            CloseCode.POLICY_VIOLATION,
            Cause.TOKEN_EXPIRED.value,
            final_frame=error_frame("token expired"),
            cause=Cause.TOKEN_EXPIRED,
        )

    def client_gone(self) -> Effects | None:
        """The client disconnected: end without sending anything more."""
        return self.close(CloseCode.NORMAL, Cause.CLIENT_LEFT.value, cause=Cause.CLIENT_LEFT, silent=True)

    def close(
        self,
        code: CloseCode,
        reason: str = "",
        *,
        final_frame: str | None = None,
        cause: Cause = Cause.CLOSED,
        silent: bool = False,
    ) -> Effects | None:
        """Ask to end the stream with ``code`` (the first request wins: its effects say to close;
        a later one's are None, or other effects not yet collected).

        ``final_frame`` (an error frame saying why) goes out just before the close frame; whatever
        else was waiting is dropped.
        """
        self._close(code, reason, final_frame=final_frame, cause=cause, silent=silent)
        return self.effects()

    def _close(
        self,
        code: CloseCode,
        reason: str,
        *,
        final_frame: str | None = None,
        cause: Cause = Cause.CLOSED,
        silent: bool = False,
    ) -> None:
        """Begin to close (see :meth:`close`); the effect waits for the event's end."""
        if self.closing is None:
            if code == CloseCode.GOING_AWAY and cause is Cause.CLOSED:
                cause = Cause.SHUTDOWN
            self.closing = closing = Closing(code, reason, cause, None if silent else final_frame, silent)
            pending = self.pending
            self.pending = Effects(closing, () if pending is None else pending.refreshes)
            self._drop_replay()
            self.outbox.clear()
            self._snapshot = None
            self.outbox.wake()

    def effects(self) -> Effects | None:
        """The effects not yet handed out (None when there are none), once: those of the events
        that return none themselves (:meth:`take`, :meth:`control_frame`, a delivery)."""
        pending, self.pending = self.pending, None
        return pending

    def _ring(self) -> None:
        """A delivery closed the stream: tell the owner, who has no return value to read."""
        if self.alarm is not None:
            self.alarm()

    def end(self) -> int:
        """The stream is over: leave the table, drop what waits; returns the conflations not yet
        taken (see :meth:`take_conflated`)."""
        self._table.unsubscribe(self)
        self._drop_replay()
        self.outbox.clear()
        self._snapshot = None
        return self.take_conflated()

    # What to do next

    def take(self, now: float) -> list[str]:
        """The next frames to write (at most a chunk), with a keep-alive at the end when one is
        due at ``now``; an empty list when there is nothing to write yet.

        During a replay, the next slice of it is queued when the outbox is empty: the replay goes
        as fast as the client takes frames, and one take does a bounded amount of its work."""
        if self._held is not None and not len(self.outbox):
            self._next_of_replay(now)
        if self._snapshot is None:
            texts = self.outbox.take()
        else:
            ahead = min(self._snapshot_ahead, len(self.outbox))
            texts = self.outbox.take(ahead) if ahead else self._snapshot_chunk()
            self._snapshot_ahead = ahead - len(texts) if ahead else 0
        self._work += len(texts)
        if now >= self._next_ping:
            texts.append(ping_frame(self._current_cursor(texts)))
            self._next_ping = now + self._policy.keepalive_seconds
        return texts

    def _current_cursor(self, texts: list[str]) -> str | None:
        """Where this client stands once ``texts`` are out: the dispatch cursor when nothing else
        waits (it has then been given every frame routed), else the last cursor it was given."""
        if (
            not len(self.outbox)
            and self._held is None
            and self._snapshot is None
            and self._window is not None
            and self._window.dispatched is not None
        ):
            self._cursor = self._window.dispatched
            return self._cursor
        for text in reversed(texts):
            cursor = frame_cursor(text)
            if cursor is not None:
                self._cursor = cursor
                break
        return self._cursor

    def wait_time(self, now: float) -> float:
        """How long the writer may wait, from ``now``, for frames before a keep-alive is due
        (0 while frames wait, or a replay or a snapshot is under way)."""
        if len(self.outbox) or self._held is not None or self._snapshot is not None:
            return 0.0
        return max(0.0, self._next_ping - now)

    @property
    def next_ping(self) -> float:
        """When the next keep-alive is due (on the clock the times were given in)."""
        return self._next_ping

    def expiry_delay(self, now: float) -> float | None:
        """Seconds from ``now`` (POSIX time) until the token expires; None if it never does."""
        if self._grant is None:
            return None
        return max(0.0, self._grant.expires_at - now)

    def notice_delay(self, now: float) -> float | None:
        """Seconds from ``now`` (POSIX time) until the ``token-expiring`` frame is due (0: at once,
        for a token that has less left than the notice); None if it never is."""
        notice = self._policy.token_notice_seconds
        if self._grant is None or notice <= 0:
            return None
        return max(0.0, self._grant.expires_at - notice - now)

    def take_conflated(self) -> int:
        """Positions dropped by conflation since the last call."""
        count, self.outbox.conflated = self.outbox.conflated, 0
        self._work += count
        return count

    @property
    def opened(self) -> bool:
        """Whether the stream has opened (its snapshot or replay under way or out)."""
        return self._is_open

    @property
    def backlog(self) -> int:
        """Frames waiting to be written (live ones held behind a replay included; a snapshot still
        to go out aside)."""
        held = self._held
        return len(self.outbox) + (0 if held is None else len(held))

    def cost(self, now: float) -> float:
        """Work done for this client per second since it opened (the first second counts whole):
        frames routed to it (taken, conflated or waiting; a client that does not read costs
        every frame routed to it, not only those it got) and devices its commands made the
        server look at."""
        outbox = self.outbox
        return (self._work + outbox.conflated + len(outbox)) / max(1.0, now - self._opened)

    @property
    def more(self) -> bool:
        """Whether anything waits to be taken: frames, or the rest of a snapshot."""
        return bool(len(self.outbox)) or self._snapshot is not None

    @property
    def initial_device_ids(self) -> frozenset[str] | None:
        """The devices asked for at connect (None: every device)."""
        return self._initial_ids

    @property
    def device_ids(self) -> frozenset[str] | None:
        """The current device filter (None: every device); the one asked for at the start until
        it is subscribed (a refused first subscription never is)."""
        try:
            return self._table.filter_of(self)
        except KeyError:
            return self._initial_ids

    # Helpers (a subclass may change how a stream joins, replays and first sees)

    def _join(self) -> bool:
        """Enter the table as the client asked at connect; False when refused (then closing)."""
        return self._subscribe(self._initial_ids)

    def _replay(self, replay: ReplayFeed, live: Iterable[Delivery], now: float) -> None:
        """Start taking ``replay`` (see :meth:`take`); live deliveries wait apart until it is out."""
        self._feed = replay
        bound = self._policy.max_pending_frames
        held = self._held = Outbox(soft_limit=bound, max_alerts=bound, apart=True)
        try:
            for delivery in live:
                held.put_delivery(delivery)
        except OutboxFull:
            self._close(CloseCode.TRY_AGAIN_LATER, Cause.SLOW_CLIENT.value, cause=Cause.SLOW_CLIENT)

    def _next_of_replay(self, now: float) -> None:
        """Queue the next slice of the replay; once it is all out, the live deliveries held."""
        feed, outbox = self._feed, self.outbox
        if feed is not None:
            # Half the bound at most: the replay's alerts and the client's replies fit together.
            size = max(1, min(REPLAY_SLICE_FRAMES, self._policy.max_pending_frames // 2))
            for delivery in feed.pull(size, REPLAY_SLICE_RECORDS, REPLAY_SLICE_SECONDS):
                outbox.put_delivery(delivery)
            if not feed.finished:
                return
            self._feed = None
            if len(outbox):
                return
        held, self._held = self._held, None
        if held is not None:
            outbox.absorb(held)
        self._apply_early(now)

    def _apply_early(self, now: float) -> None:
        """Apply, in order, what the client sent before it could be answered."""
        early, self._early, self._early_bytes = self._early, None, 0
        for data in early or ():
            if self.closing is not None:
                break
            self._handle(data, now)

    def _drop_replay(self) -> None:
        if self._feed is not None:
            self._feed.close()
        self._feed = self._held = None

    def _initial_view(self) -> Iterable[str] | None:
        """The devices whose last position a new stream starts with (None: every device)."""
        return self._initial_ids

    def _subscribe(self, device_ids: frozenset[str] | None) -> bool:
        """Subscribe, or close with an error frame and 1013 past the process's bound of ids (the
        earlier filter stays until the end)."""
        try:
            self._table.subscribe(self, device_ids)
        except SubscriptionLimit:
            self.refuse_subscription()
            return False
        return True

    def refuse_subscription(self) -> None:
        """Close as past the process's bound of subscribed ids (an error frame, then 1013): what
        a replay does when it cannot subscribe, as :meth:`open` does."""
        reason = Cause.SUBSCRIPTION_LIMIT.value
        self._close(CloseCode.TRY_AGAIN_LATER, reason, final_frame=error_frame(reason), cause=Cause.SUBSCRIPTION_LIMIT)

    def _granted(self, device_ids: frozenset[str]) -> bool:
        """Whether the client's grant allows ``device_ids``; if not, close as forbidden (the
        grant's error frame, then 1008)."""
        if self._grant is not None:
            try:
                self._grant.check(device_ids)
            except BadRequest as error:
                self._close(
                    CloseCode.POLICY_VIOLATION, Cause.FORBIDDEN.value, final_frame=error.frame(), cause=Cause.FORBIDDEN
                )
                return False
        return True

    def _too_many_messages(self) -> None:
        reason = Cause.TOO_MANY_MESSAGES.value
        self._close(CloseCode.POLICY_VIOLATION, reason, final_frame=error_frame(reason), cause=Cause.TOO_MANY_MESSAGES)

    def _reply(self, text: str) -> None:
        try:
            self.outbox.put_kept(text)
        except OutboxFull:
            self._close(CloseCode.TRY_AGAIN_LATER, Cause.SLOW_CLIENT.value, cause=Cause.SLOW_CLIENT)

    def _refresh(self, token: str) -> None:
        """Adopt the grant of ``token`` if it is valid and still grants the current subscription."""
        try:
            if self._verify is None or self._grant is None:
                raise BadRequest("this stream needs no token")
            grant = self._verify(token)
            current = self.device_ids
            if current is None:
                if grant.devices is not None:
                    raise BadRequest("the token does not grant every device, which this stream receives")
            else:
                grant.check(current)
        except BadRequest as error:
            self._reply(error_frame(f"token refresh refused: {error.message}", **error.detail))
            self._refreshed(Refresh(None))
            return
        self._grant = grant
        self._reply(refreshed_frame(grant.expires_at))
        self._refreshed(Refresh(grant.expires_at))

    def _refreshed(self, refresh: Refresh) -> None:
        """Note a refresh's outcome among the effects (several may come in one event: the
        messages held during a replay, applied once it is out)."""
        pending = self.pending
        self.pending = (
            Effects(refreshes=(refresh,))
            if pending is None
            else Effects(pending.closing, (*pending.refreshes, refresh))
        )

    def _queue_snapshot(self, device_ids: Iterable[str] | None, now: float) -> None:
        """Send the last known frame of ``device_ids`` (all for None) after what waits now (a
        subclass may hold some of them for a rate slot from ``now``).

        Nothing is copied for this client: it keeps its place in a list of device ids (the
        table's, shared while no new device reports) and takes each device's frame as it goes, a
        chunk at a time, once the client has taken what was queued before (:meth:`take`). The
        frames are the table's, built once per frame without a cursor: a snapshot frame says
        where a device is, not where this client's stream stands. The last frame of the snapshot
        a stream opens with carries the cursor of the opening (one copy per client), as every
        snapshot frame did before; frames routed meanwhile wait behind it. Each frame is the
        device's newest when taken, so a position routed while the snapshot waits is not
        overtaken by an older one.
        """
        ids = self._table.snapshot_ids(device_ids)
        if not ids:
            return
        if self._snapshot is None:
            self._snapshot, self._snapshot_at = [ids], 0
            self._snapshot_ahead = len(self.outbox)
        else:
            self._snapshot.append(ids)
        self.outbox.wake()

    def _snapshot_chunk(self) -> list[str]:
        """The next frames of the snapshot (see :meth:`_queue_snapshot`)."""
        parts = self._snapshot
        assert parts is not None
        frame = self._table.snapshot_frame
        texts: list[str] = []
        while parts and len(texts) < SNAPSHOT_CHUNK:
            ids = parts[0]
            at = self._snapshot_at
            for device_id in ids[at : at + SNAPSHOT_CHUNK - len(texts)]:
                at += 1
                text = frame(device_id)
                if text is not None:
                    texts.append(text)
            if at >= len(ids):
                parts.pop(0)
                at = 0
            self._snapshot_at = at
        if not parts:
            self._snapshot = None
            cursor, self._snapshot_cursor = self._snapshot_cursor, None
            if cursor is not None and texts:
                texts[-1] = with_cursor(texts[-1], cursor)
        return texts
