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
- the client sends something not allowed: an error frame, then 1008.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from dataclasses import dataclass

from supervisors import Actor, MailboxFull

from siscom.frames import Frame
from siscom.metrics import Metrics
from siscom.outbox import Outbox
from siscom.protocol import (
    PING_FRAME,
    BadRequest,
    CloseCode,
    ack_frame,
    error_frame,
    parse_client_frame,
)
from siscom.subscriptions import SubscriptionTable
from siscom.transport import ClientGone, Transport

logger = logging.getLogger(__name__)

#: How long a closing handshake may take before the session gives up on the client.
CLOSE_TIMEOUT = 2.0

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
    ) -> None:
        super().__init__(name=f"session-{next(_session_ids)}")
        self._transport = transport
        self._initial_ids = device_ids
        self._table = table
        self._limits = limits
        self._metrics = metrics
        self._outbox = Outbox(soft_limit=limits.max_pending_frames, max_alerts=limits.max_pending_frames)
        self._close_code: CloseCode | None = None
        self._close_reason = ""
        #: Set when the session has finished, whichever way it ended.
        self.finished = asyncio.Event()

    def __repr__(self) -> str:
        return f"<Session {self.name} {self._transport.peer}>"

    # Called by the router: must never block or raise.
    def deliver(self, frame: Frame) -> None:
        if self._close_code is not None:
            return
        try:
            self._outbox.put_frame(frame)
        except MailboxFull:
            self.close(CloseCode.TRY_AGAIN_LATER, "client too slow")

    def close(self, code: CloseCode, reason: str = "") -> None:
        """Ask the session to send a close frame with ``code`` and end (first request wins)."""
        if self._close_code is None:
            self._close_code, self._close_reason = code, reason
            self._outbox.clear()
            self._outbox.wake()

    async def run(self) -> None:
        self._table.subscribe(self, self._initial_ids)
        if self._limits.snapshot:
            self._queue_snapshot(self._initial_ids)
        self._metrics.incr("connections_opened")
        logger.info("Stream opened for %s, devices: %s", self._transport.peer, _describe(self._initial_ids))
        receiver = asyncio.create_task(self._receive_loop(), name=f"{self.name}.receive")
        receiver.add_done_callback(self._on_receiver_done)
        try:
            await self._send_loop()
        except asyncio.CancelledError:
            if not self._transport.gone:
                await self._send_close(CloseCode.GOING_AWAY, "server shutting down")
            raise
        finally:
            receiver.cancel()
            await asyncio.wait((receiver,))
            self._table.unsubscribe(self)
            self._outbox.clear()
            self._metrics.incr("connections_closed")
            self.finished.set()
            logger.info(
                "Stream closed for %s (%s)",
                self._transport.peer,
                "client left" if self._transport.gone else self._close_code,
            )

    def client_left(self) -> None:
        """The client disconnected: stop without sending anything more."""
        self._transport.gone = True
        self.close(CloseCode.NORMAL)

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
                async with asyncio.timeout(self._limits.send_timeout_seconds):
                    for text in texts:
                        await send(text)
            except TimeoutError:
                self.close(CloseCode.TRY_AGAIN_LATER, "client too slow")
                break
            except ClientGone:
                break
            metrics.incr("frames_sent", len(texts))
            if outbox.conflated:
                metrics.incr("conflated", outbox.conflated)
                outbox.conflated = 0
        if self._close_code == CloseCode.TRY_AGAIN_LATER:
            metrics.incr("slow_client_closes")
            logger.warning("Closing slow client %s: %s", self._transport.peer, self._close_reason)
        await self._send_close(self._close_code, self._close_reason)

    async def _receive_loop(self) -> None:
        while self._close_code is None:
            data = await self._transport.receive()
            try:
                command = parse_client_frame(data, max_ids=self._limits.max_device_ids)
            except BadRequest as error:
                self._reply(error_frame(error.message))
                continue
            if command is None:
                continue
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
            self._table.subscribe(self, wanted)
            self._reply(ack_frame(command.action, wanted))
            if self._limits.snapshot and added:
                self._queue_snapshot(added)

    def _reply(self, text: str) -> None:
        try:
            self._outbox.put_kept(text)
        except MailboxFull:
            self.close(CloseCode.TRY_AGAIN_LATER, "client too slow")

    async def _send_close(self, code: CloseCode, reason: str) -> None:
        if self._transport.gone:
            return
        try:
            async with asyncio.timeout(CLOSE_TIMEOUT):
                await self._transport.close(code, reason)
        except (TimeoutError, ClientGone):
            pass


def _describe(device_ids: frozenset[str] | None) -> str:
    if device_ids is None:
        return "all"
    if len(device_ids) <= 5:
        return ",".join(sorted(device_ids))
    return f"{len(device_ids)} ids"
