"""The session actor: one per WebSocket client.

A session owns the client's outbox and two loops: the sender, which writes whatever the outbox
holds and a keep-alive every ``STREAM_KEEPALIVE_SECONDS``, and the receiver, which applies the
client's subscribe/unsubscribe requests. The router reaches the session only through
:meth:`Session.deliver`, which never waits.

How a session ends, and the close code the client sees:
- the client leaves: nothing to send; the route tells the session supervisor to stop it;
- the service shuts down: 1001 (the session is cancelled by its supervisor, or asked to close);
- the client cannot keep up (unconflatable frames past the bound, or a write stalled past
  ``STREAM_SEND_TIMEOUT_SECONDS``): 1013, counted as a slow-client close;
- the server is overloaded and this session is among those with the largest backlogs: 1013
  "server overloaded" (:mod:`siscom.sessions.shedding`);
- its subscription would take the process past ``STREAM_MAX_SUBSCRIBED_IDS``: an error frame,
  then 1013, counted;
- the client sends something not allowed: an error frame, then 1008;
- the client sends messages, pings or pongs past its allowance (:mod:`siscom.security.inbound`):
  an error frame, then 1008 "too many messages", counted;
- the client asks for devices its token does not grant, or its token expires: an error frame,
  then 1008. Expiry is a timer set once per session, so the frames pay nothing for it.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from dataclasses import dataclass

from supervisors import Actor, MailboxFull

from siscom.core.deliveries import Delivery
from siscom.metrics import Metric, Metrics
from siscom.core.outbox import Outbox
from siscom.core.protocol import (
    PING_FRAME,
    BadRequest,
    CloseCode,
    ack_frame,
    error_frame,
    parse_client_frame,
)
from siscom.core.subscriptions import SubscriptionLimit, SubscriptionTable
from siscom.security.inbound import TOO_MANY_MESSAGES, InboundLimits
from siscom.web.transport import ClientGone, Transport

logger = logging.getLogger(__name__)

#: How long a session waits for its close frame to go out before it ends anyway.
CLOSE_TIMEOUT = 2.0
#: How long a close frame may then still wait behind data a stalled client has not read, with
#: the connection kept open for it, before the connection is given up.
CLOSE_LINGER = 30.0

#: The close reason of a client that cannot keep up (1013, counted as a slow-client close).
TOO_SLOW = "client too slow"

_session_ids = itertools.count(1)


@dataclass(frozen=True, slots=True)
class SessionLimits:
    keepalive_seconds: float
    send_timeout_seconds: float
    max_pending_frames: int
    max_device_ids: int
    snapshot: bool


class Session(Actor):
    """Streams the frames of the subscribed devices to one WebSocket client."""

    def __init__(
        self,
        transport: Transport,
        device_ids: frozenset[str] | None,
        *,
        table: SubscriptionTable,
        limits: SessionLimits,
        metrics: Metrics,
        allowed_devices: frozenset[str] | None = None,
        expires_at: float | None = None,
        inbound: InboundLimits | None = None,
    ) -> None:
        super().__init__(name=f"session-{next(_session_ids)}")
        #: What the client may send (None: no limit).
        self._inbound = inbound
        #: What the client's token grants: the devices it may ever subscribe to (None: any), and
        #: when the stream must end (POSIX seconds; None: never).
        self._allowed_devices = allowed_devices
        self._expires_at = expires_at
        self._transport = transport
        self._initial_ids = device_ids
        self._table = table
        self._limits = limits
        self._metrics = metrics
        self._outbox = Outbox(soft_limit=limits.max_pending_frames, max_alerts=limits.max_pending_frames)
        self._close_code: CloseCode | None = None
        self._close_reason = ""
        self._final_frame: str | None = None
        #: The deadline of the writes in progress, if any; close() moves it to now.
        self._send_deadline: asyncio.Timeout | None = None
        #: Sending the close frame, when it took longer than CLOSE_TIMEOUT (see _send_close).
        self._closing: asyncio.Future[None] | None = None
        #: Set when the session has finished, whichever way it ended.
        self.finished = asyncio.Event()

    def __repr__(self) -> str:
        return f"<Session {self.name} {self._transport.peer}>"

    # Called by the router: must never block or raise.
    def deliver(self, delivery: Delivery) -> None:
        if self._close_code is not None:
            return
        try:
            self._outbox.put_delivery(delivery)
        except MailboxFull:
            self.close(CloseCode.TRY_AGAIN_LATER, TOO_SLOW)

    @property
    def backlog(self) -> int:
        """Frames waiting for the client (what overload shedding ranks sessions by)."""
        return len(self._outbox)

    def close(self, code: CloseCode, reason: str = "", *, final_frame: str | None = None) -> None:
        """Ask the session to send a close frame with ``code`` and end (first request wins).

        ``final_frame`` (an error frame saying why) is sent just before the close frame; whatever
        else was waiting is dropped.
        """
        if self._close_code is None:
            self._close_code, self._close_reason = code, reason
            self._final_frame = final_frame
            self._outbox.clear()
            self._outbox.wake()
            deadline = self._send_deadline
            if deadline is not None and not deadline.expired():
                # A write in progress may be stalled on a client that does not read: stop it now.
                deadline.reschedule(asyncio.get_running_loop().time())

    async def run(self) -> None:
        if self._subscribe(self._initial_ids) and self._limits.snapshot:
            self._queue_snapshot(self._initial_ids)
        self._metrics.stream_opened()
        logger.info("Stream opened for %s, devices: %s", self._transport.peer, _describe(self._initial_ids))
        receiver = asyncio.create_task(self._receive_loop(), name=f"{self.name}.receive")
        receiver.add_done_callback(self._on_receiver_done)
        expiry = None
        if self._expires_at is not None:
            delay = max(0.0, self._expires_at - time.time())
            expiry = asyncio.get_running_loop().call_later(delay, self._token_expired)
        try:
            await self._send_loop()
        except asyncio.CancelledError:
            if not self._transport.gone:
                await self._send_close(CloseCode.GOING_AWAY, "server shutting down")
            raise
        finally:
            if expiry is not None:
                expiry.cancel()
            receiver.cancel()
            await asyncio.wait((receiver,))
            self._table.unsubscribe(self)
            if self._outbox.conflated:  # a client that stalled for good never got to a count
                self._metrics.incr(Metric.CONFLATED, self._outbox.conflated)
                self._outbox.conflated = 0
            self._outbox.clear()
            self._metrics.stream_closed()
            self.finished.set()
            logger.info(
                "Stream closed for %s (%s)",
                self._transport.peer,
                "client left" if self._transport.gone else self._close_code,
            )

    def client_left(self) -> None:
        """The client disconnected: stop without sending anything more."""
        self._transport.gone = True
        if self._closing is not None:
            self._closing.cancel()
        self.close(CloseCode.NORMAL)

    async def close_sent(self) -> None:
        """Wait until the close frame is out, or given up, after the session has finished.

        Whoever owns the connection waits for this before letting it go: a close frame that had
        to wait behind unread data is still on its way when the session ends.
        """
        if self._closing is not None:
            await asyncio.wait((self._closing,))

    def _token_expired(self) -> None:
        if self._close_code is not None:
            return
        self._metrics.incr(Metric.TOKEN_EXPIRIES)
        logger.info("Token of %s expired: closing its stream", self._transport.peer)
        self.close(CloseCode.POLICY_VIOLATION, "token expired", final_frame=error_frame("token expired"))

    def control_frame(self) -> bool:
        """A ping or pong arrived from the client: whether to answer it (False past its allowance)."""
        if self._inbound is None or self._inbound.control_frame(asyncio.get_running_loop().time()):
            return True
        self._too_many_messages()
        return False

    @property
    def listening(self) -> bool:
        """Whether the session still wants the client's messages (not once it is closing)."""
        return self._close_code is None

    def _subscribe(self, device_ids: frozenset[str] | None) -> bool:
        """Subscribe, or close with an error frame and 1013 past the process's bound of ids."""
        try:
            self._table.subscribe(self, device_ids)
        except SubscriptionLimit as limit:
            self._metrics.incr(Metric.SUBSCRIPTION_LIMIT_REFUSALS)
            logger.warning("Closing %s: %s", self._transport.peer, limit)
            reason = "server at its subscription limit"
            self.close(CloseCode.TRY_AGAIN_LATER, reason, final_frame=error_frame(reason))
            return False
        return True

    def _too_many_messages(self) -> None:
        if self._close_code is not None:
            return
        self._metrics.incr(Metric.TOO_MANY_MESSAGES)
        logger.warning("Closing %s: %s", self._transport.peer, TOO_MANY_MESSAGES)
        self.close(CloseCode.POLICY_VIOLATION, TOO_MANY_MESSAGES, final_frame=error_frame(TOO_MANY_MESSAGES))

    def _forbid(self, device_ids: frozenset[str]) -> bool:
        """Close with an error frame and 1008 if ``device_ids`` go beyond the token's grant."""
        if self._allowed_devices is None:
            return False
        outside = device_ids - self._allowed_devices
        if not outside:
            return False
        self._metrics.incr(Metric.FORBIDDEN_REQUESTS)
        logger.info("Closing %s: asked for devices its token does not grant", self._transport.peer)
        frame = error_frame("device ids not allowed by the token", device_ids=sorted(outside)[:20])
        self.close(CloseCode.POLICY_VIOLATION, "device not allowed", final_frame=frame)
        return True

    def _on_receiver_done(self, receiver: asyncio.Task[None]) -> None:
        if receiver.cancelled():
            return
        error = receiver.exception()
        if isinstance(error, ClientGone):
            self.client_left()
        elif error is not None:
            logger.error("Receiving from %s failed", self._transport.peer, exc_info=error)
            self.close(CloseCode.INTERNAL_ERROR, "internal error")

    def _queue_snapshot(self, device_ids: frozenset[str] | None) -> None:
        for device_id, text in self._table.snapshot(device_ids):
            self._outbox.put_position(device_id, text)

    async def _send_loop(self) -> None:
        loop = asyncio.get_running_loop()
        outbox = self._outbox
        send = self._transport.send
        metrics = self._metrics
        interval = self._limits.keepalive_seconds
        next_ping = loop.time() + interval
        while self._close_code is None:
            texts = await outbox.take(max(0.0, next_ping - loop.time()))
            if self._close_code is not None:
                break
            if loop.time() >= next_ping:
                texts.append(PING_FRAME)
                next_ping = loop.time() + interval
            if not texts:
                continue
            try:
                async with asyncio.timeout(self._limits.send_timeout_seconds) as self._send_deadline:
                    for text in texts:
                        await send(text)
            except TimeoutError:
                self.close(CloseCode.TRY_AGAIN_LATER, TOO_SLOW)  # unless closed meanwhile
                break
            except ClientGone:
                break
            finally:
                self._send_deadline = None
            metrics.incr(Metric.FRAMES_SENT, len(texts))
            if outbox.conflated:
                metrics.incr(Metric.CONFLATED, outbox.conflated)
                outbox.conflated = 0
        if self._close_code == CloseCode.TRY_AGAIN_LATER and self._close_reason == TOO_SLOW:
            metrics.incr(Metric.SLOW_CLIENT_CLOSES)
            logger.warning("Closing slow client %s: %s", self._transport.peer, self._close_reason)
        if self._final_frame is not None and not self._transport.gone:
            try:
                async with asyncio.timeout(CLOSE_TIMEOUT):
                    await send(self._final_frame)
            except (TimeoutError, ClientGone):
                pass
        await self._send_close(self._close_code, self._close_reason)

    async def _receive_loop(self) -> None:
        while self._close_code is None:
            data = await self._transport.receive()
            if self._inbound is not None and not self._inbound.message(asyncio.get_running_loop().time()):
                self._too_many_messages()
                return
            try:
                command = parse_client_frame(data, max_ids=self._limits.max_device_ids)
            except BadRequest as error:
                self._reply(error_frame(error.message))
                continue
            if command is None:
                continue
            if command.action == "subscribe" and self._forbid(command.device_ids):
                return
            current = self._table.filter_of(self)
            if command.action == "subscribe":
                added = command.device_ids if current is None else command.device_ids - current
                wanted = None if current is None else current | command.device_ids
            elif current is None:
                self._reply(error_frame("this stream receives every device; subscribe to a list first"))
                continue
            else:
                added, wanted = frozenset(), current - command.device_ids
            if wanted is not None and len(wanted) > self._limits.max_device_ids:
                self._reply(error_frame(f"at most {self._limits.max_device_ids} device ids per stream"))
                continue
            if not self._subscribe(wanted):
                return
            self._reply(ack_frame(command.action, wanted))
            if self._limits.snapshot and added:
                self._queue_snapshot(added)

    def _reply(self, text: str) -> None:
        try:
            self._outbox.put_kept(text)
        except MailboxFull:
            self.close(CloseCode.TRY_AGAIN_LATER, TOO_SLOW)

    async def _send_close(self, code: CloseCode, reason: str) -> None:
        """Send the close frame; if the client does not take it in CLOSE_TIMEOUT, end anyway.

        A client that stopped reading has data waiting in its socket, and the server writes to a
        socket under a lock held for as long as a write waits to drain (Hypercorn's
        ``protocol_send``), perhaps by a write of its own, such as a pong. The close frame then
        waits its turn. The session does not wait with it: it ends, releasing its outbox and its
        subscriptions, and leaves the close frame to go out in the background, where the client
        finds it, after what it had not read, once it reads again. That wait is bounded by
        CLOSE_LINGER; the connection's owner waits for it with :meth:`close_sent`.
        """
        if self._transport.gone:
            return
        closing = self._closing = asyncio.ensure_future(self._transport.close(code, reason))
        closing.add_done_callback(_retrieve_outcome)
        if (await asyncio.wait((closing,), timeout=CLOSE_TIMEOUT))[0]:
            return
        logger.info("Close frame for %s waits behind unread data; ending the session now", self._transport.peer)
        linger = asyncio.get_running_loop().call_later(CLOSE_LINGER, closing.cancel)
        closing.add_done_callback(lambda _: linger.cancel())


def _retrieve_outcome(closing: asyncio.Future[None]) -> None:
    # The client being gone, or the linger over (cancelled), ends a close normally.
    error = None if closing.cancelled() else closing.exception()
    if error is not None and not isinstance(error, ClientGone):
        logger.warning("Sending a close frame failed: %r", error)


def _describe(device_ids: frozenset[str] | None) -> str:
    if device_ids is None:
        return "all"
    if len(device_ids) <= 5:
        return ",".join(sorted(device_ids))
    return f"{len(device_ids)} ids"
