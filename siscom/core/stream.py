"""The state of one client's stream, without I/O: what it watches, what waits, how it ends.

In the manner of a sans-I/O protocol object, :class:`StreamCore` takes events and says what to
send next; whoever owns the connection (the session actor) does the writing, the waiting and the
timing. Events in:

- :meth:`StreamCore.deliver`: a record routed to this client (the router calls it directly: the
  core is the subscriber in the :class:`~siscom.core.subscriptions.SubscriptionTable`);
- :meth:`StreamCore.receive`: a message from the client (subscribe, unsubscribe, anything else),
  within the client's allowance of messages (:class:`~siscom.security.inbound.InboundLimits`);
- :meth:`StreamCore.control_frame`: a WebSocket ping or pong from the client, within its allowance;
- :meth:`StreamCore.token_expired`, :meth:`StreamCore.close`, :meth:`StreamCore.client_gone`.

What to send: :meth:`StreamCore.take` (the next frames, with a keep-alive when one is due), then,
once :attr:`StreamCore.closing` is set, its final frame and close code. Times are passed in (any
monotonic clock); the core keeps none of its own.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from collections.abc import Callable
from typing import TYPE_CHECKING

from supervisors import MailboxFull

from siscom.core.deliveries import Delivery
from siscom.core.outbox import Outbox
from siscom.core.protocol import PING_FRAME, BadRequest, CloseCode, ack_frame, error_frame, parse_client_frame
from siscom.core.subscriptions import SubscriptionLimit, SubscriptionTable

if TYPE_CHECKING:
    from siscom.security.inbound import InboundLimits
    from siscom.security.tokens import Grant


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


@dataclass(frozen=True, slots=True)
class StreamPolicy:
    """The limits of one stream that the core enforces."""

    keepalive_seconds: float
    max_pending_frames: int
    max_device_ids: int
    snapshot: bool


class StreamCore:
    """One client's subscription, grant, waiting frames and close state."""

    __slots__ = (
        "_table", "_policy", "_grant", "_inbound", "_initial_ids", "outbox", "closing", "on_close", "_next_ping"
    )

    def __init__(
        self,
        device_ids: frozenset[str] | None,
        *,
        table: SubscriptionTable,
        policy: StreamPolicy,
        grant: Grant | None = None,
        inbound: InboundLimits | None = None,
    ) -> None:
        self._table = table
        self._policy = policy
        #: What the client's token allows (None: tokens are off, anything goes, forever).
        self._grant = grant
        #: How much the client may send (None: no limit).
        self._inbound = inbound
        self._initial_ids = device_ids
        self.outbox = Outbox(soft_limit=policy.max_pending_frames, max_alerts=policy.max_pending_frames)
        #: Set once, by the first close request: how the stream ends.
        self.closing: Closing | None = None
        #: Called once when :attr:`closing` is set (the pump stops a stalled write with it).
        self.on_close: Callable[[], None] | None = None
        self._next_ping = 0.0

    # Events

    def open(self, now: float) -> None:
        """The stream starts: subscribe, queue the snapshot; the first keep-alive is due at
        ``now`` plus the interval."""
        self._next_ping = now + self._policy.keepalive_seconds
        if self._subscribe(self._initial_ids) and self._policy.snapshot:
            self._queue_snapshot(self._initial_ids)

    def deliver(self, delivery: Delivery) -> None:
        """A delivery routed to this client. Never blocks, never raises (the router's hot path)."""
        if self.closing is not None:
            return
        try:
            self.outbox.put_delivery(delivery)
        except MailboxFull:
            self.close(CloseCode.TRY_AGAIN_LATER, Cause.SLOW_CLIENT.value, cause=Cause.SLOW_CLIENT)

    def receive(self, data: str | bytes, now: float) -> None:
        """A message from the client at ``now``: apply a subscription change and queue its answer;
        past the client's allowance of messages, close with 1008 instead."""
        if self.closing is not None:
            return
        if self._inbound is not None and not self._inbound.message(now):
            self._too_many_messages()
            return
        max_ids = self._policy.max_device_ids
        try:
            command = parse_client_frame(data, max_ids=max_ids)
        except BadRequest as error:
            self._reply(error_frame(error.message))
            return
        if command is None:
            return
        if command.bbox is not None:
            self._reply(error_frame("this stream has no box: open it with bbox=... to subscribe by box"))
            return
        current = self.device_ids
        if command.action == "subscribe":
            if self._grant is not None:
                try:
                    self._grant.check(command.device_ids)
                except BadRequest as error:  # Forbidden: the grant says no
                    self.close(CloseCode.POLICY_VIOLATION, Cause.FORBIDDEN.value, final_frame=error.frame(),
                               cause=Cause.FORBIDDEN)
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
            self._queue_snapshot(added)

    def control_frame(self, now: float) -> bool:
        """A WebSocket ping or pong from the client at ``now`` (the server answers pings below the
        application): whether to handle it. Past the client's allowance, close with 1008 and say no."""
        if self._inbound is None or self._inbound.control_frame(now):
            return True
        self._too_many_messages()
        return False

    def token_expired(self) -> None:
        self.close(CloseCode.POLICY_VIOLATION, Cause.TOKEN_EXPIRED.value, final_frame=error_frame("token expired"),
                   cause=Cause.TOKEN_EXPIRED)

    def client_gone(self) -> None:
        """The client disconnected: end without sending anything more."""
        self.close(CloseCode.NORMAL, Cause.CLIENT_LEFT.value, cause=Cause.CLIENT_LEFT, silent=True)

    def close(
        self,
        code: CloseCode,
        reason: str = "",
        *,
        final_frame: str | None = None,
        cause: Cause = Cause.CLOSED,
        silent: bool = False,
    ) -> bool:
        """Ask to end the stream with ``code`` (the first request wins; True if this one did).

        ``final_frame`` (an error frame saying why) goes out just before the close frame; whatever
        else was waiting is dropped.
        """
        if self.closing is not None:
            return False
        if code == CloseCode.GOING_AWAY and cause is Cause.CLOSED:
            cause = Cause.SHUTDOWN
        self.closing = Closing(code, reason, cause, None if silent else final_frame, silent)
        self.outbox.clear()
        self.outbox.wake()
        if self.on_close is not None:
            self.on_close()
        return True

    def end(self) -> int:
        """The stream is over: leave the table, drop what waits; returns the conflations not yet
        taken (see :meth:`take_conflated`)."""
        self._table.unsubscribe(self)
        self.outbox.clear()
        return self.take_conflated()

    # What to do next

    def take(self, now: float) -> list[str]:
        """The next frames to write (at most a chunk), with a keep-alive at the end when one is
        due at ``now``; an empty list when there is nothing to write yet."""
        texts = self.outbox.take()
        if now >= self._next_ping:
            texts.append(PING_FRAME)
            self._next_ping = now + self._policy.keepalive_seconds
        return texts

    def wait_time(self, now: float) -> float:
        """How long the writer may wait, from ``now``, for frames before a keep-alive is due
        (0 while frames wait)."""
        if len(self.outbox):
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

    def take_conflated(self) -> int:
        """Positions dropped by conflation since the last call."""
        count, self.outbox.conflated = self.outbox.conflated, 0
        return count

    @property
    def backlog(self) -> int:
        """Frames waiting to be written."""
        return len(self.outbox)

    @property
    def device_ids(self) -> frozenset[str] | None:
        """The current device filter (None: every device); the one asked for at the start until
        it is subscribed (a refused first subscription never is)."""
        try:
            return self._table.filter_of(self)
        except KeyError:
            return self._initial_ids

    # Helpers

    def _subscribe(self, device_ids: frozenset[str] | None) -> bool:
        """Subscribe, or close with an error frame and 1013 past the process's bound of ids (the
        earlier filter stays until the end)."""
        try:
            self._table.subscribe(self, device_ids)
        except SubscriptionLimit:
            reason = Cause.SUBSCRIPTION_LIMIT.value
            self.close(CloseCode.TRY_AGAIN_LATER, reason, final_frame=error_frame(reason), cause=Cause.SUBSCRIPTION_LIMIT)
            return False
        return True

    def _too_many_messages(self) -> None:
        reason = Cause.TOO_MANY_MESSAGES.value
        self.close(CloseCode.POLICY_VIOLATION, reason, final_frame=error_frame(reason), cause=Cause.TOO_MANY_MESSAGES)

    def _reply(self, text: str) -> None:
        try:
            self.outbox.put_kept(text)
        except MailboxFull:
            self.close(CloseCode.TRY_AGAIN_LATER, Cause.SLOW_CLIENT.value, cause=Cause.SLOW_CLIENT)

    def _queue_snapshot(self, device_ids: frozenset[str] | None) -> None:
        for device_id, text in self._table.snapshot(device_ids):
            self.outbox.put_position(device_id, text)
