"""The session actor: the asynchronous pump around one client's :class:`~siscom.core.stream.StreamCore`.

The core decides (what the client watches, what waits, when a keep-alive is due, how the stream
ends) and returns what to do besides writing (:class:`~siscom.core.stream.Effects`); the session
does the I/O. Its parts, one module and one context each:

- the pump (this module): the session's own task. It opens the stream, writes what the core hands
  out under a deadline (``STREAM_SEND_TIMEOUT_SECONDS``), waits for frames or the next
  keep-alive, and sends the close;
- the direct-write path (:mod:`siscom.sessions.direct`): event-loop callbacks (the write round,
  the keep-alive timer) that write while the pump waits;
- the token's timers (:mod:`siscom.sessions.token_timers`): timer callbacks, the
  ``token-expiring`` notice and the expiry (a refresh the core accepts moves both);
- the listener (:mod:`siscom.sessions.listener`): the route's task, feeding the client's
  messages to the core.

Each hands the core's effects to :meth:`Session._apply`: a close stops the pump's wait and a
write stalled on the client, a refresh moves the token's timers. The router reaches the core
directly (it is the subscriber), and :meth:`StreamCore.deliver` never waits; a delivery that
closes the stream rings the core's alarm, which the session answers the same way.

How a session ends, and the close code the client sees (see :class:`~siscom.core.stream.Cause`):
- the client leaves: nothing to send;
- the service shuts down: 1001 (the session is asked to close, or cancelled by its supervisor);
- the client cannot keep up (unconflatable frames past the bound, or a write stalled past
  ``STREAM_SEND_TIMEOUT_SECONDS``): 1013, counted as a slow-client close;
- the server is overloaded and this session is among the costliest with a backlog: 1013
  "server overloaded" (:mod:`siscom.sessions.shedding`, which counts it);
- its subscription would take the process past ``STREAM_MAX_SUBSCRIBED_IDS``: an error frame,
  then 1013, counted;
- the client sends messages, pings or pongs past its allowance (:mod:`siscom.security.inbound`):
  an error frame, then 1008 "too many messages", counted;
- the client asks for devices its token does not grant, or its token expires: an error frame,
  then 1008, counted.

Over a transport without close frames (Server-Sent Events: ``transport.in_band_close``) the code
and reason have no place on the wire: every end but a normal one or a shutdown sends an error
frame with the reason first, when the core has none of its own (see
:func:`~siscom.core.stream.final_frame`).

Every end goes through one place, the end of :meth:`Session.run`: the session leaves the
subscription table, is counted closed, and sets :attr:`Session.finished`. Its connection is then
closed within ``STREAM_CLOSE_LINGER_SECONDS``, whether or not the client reads.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

from siscom.core.protocol import CloseCode
from siscom.core.resume import ResumeRequest
from siscom.core.stream import Cause, Effects, StreamCore, StreamPolicy, final_frame
from siscom.metrics import Metric, Metrics
from siscom.sessions.direct import DirectPath
from siscom.sessions.flusher import Flusher
from siscom.sessions.latch import Latch
from siscom.sessions.listener import Listener
from siscom.sessions.token_timers import TokenTimers
from siscom.sessions.transport import ClientGone, Transport
from supervisors import Actor

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from siscom.sessions.recovery import BudgetedReplayer
    from siscom.sessions.replay import Replayer

logger = logging.getLogger(__name__)

#: What each way of ending is counted as.
_COUNTED = {
    Cause.SLOW_CLIENT: Metric.SLOW_CLIENT_CLOSES,
    Cause.FORBIDDEN: Metric.FORBIDDEN_REQUESTS,
    Cause.TOKEN_EXPIRED: Metric.TOKEN_EXPIRIES,
    Cause.TOO_MANY_MESSAGES: Metric.TOO_MANY_MESSAGES,
    Cause.SUBSCRIPTION_LIMIT: Metric.SUBSCRIPTION_LIMIT_REFUSALS,
}

#: Limits a client ran into, logged as warnings (as slow clients are).
_WARNED = frozenset({Cause.TOO_MANY_MESSAGES, Cause.SUBSCRIPTION_LIMIT})


@dataclass(frozen=True, slots=True)
class SessionLimits:
    keepalive_seconds: float
    send_timeout_seconds: float
    max_pending_frames: int
    max_device_ids: int
    snapshot: bool
    #: How long a session waits for its error and close frames to go out before it ends anyway.
    close_timeout_seconds: float = 2.0
    #: Longest a connection stays open after its session ended (the close frame waiting behind
    #: unread data, or the client not answering it); then it is dropped.
    close_linger_seconds: float = 5.0
    #: How long before its token's expiry a client is sent ``token-expiring``; 0: never.
    token_notice_seconds: float = 0.0

    @property
    def policy(self) -> StreamPolicy:
        return StreamPolicy(
            self.keepalive_seconds,
            self.max_pending_frames,
            self.max_device_ids,
            self.snapshot,
            self.token_notice_seconds,
        )


class Session(Actor):
    """Streams the frames of the subscribed devices to one client (a WebSocket, or an SSE response)."""

    def __init__(
        self,
        transport: Transport,
        core: StreamCore,
        *,
        name: str,
        limits: SessionLimits,
        metrics: Metrics,
        resume: tuple[Replayer | BudgetedReplayer, ResumeRequest] | None = None,
        flusher: Flusher | None = None,
        gate: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        """``resume``: the stream opens with a replay (a cursor or ``since`` was given);
        ``gate``: waited for before the stream opens (the process warming up);
        ``flusher``: the round of direct writes this session joins (the gateway's; None: one of
        its own)."""
        super().__init__(name=name)
        self._resume = resume
        self._gate = gate
        #: The wait at the gate, while it lasts.
        self._gating: asyncio.Future[None] | None = None
        #: The replay that opens the stream, while it runs (a close cancels it).
        self._replaying: asyncio.Future[None] | None = None
        self.core = core
        self._transport = transport
        self._limits = limits
        self._metrics = metrics
        core.alarm = self._alarmed
        #: The token's timers: the notice (token-expiring) and the expiry (close 1008).
        self._tokens = TokenTimers(core, metrics, transport.peer, self._apply)
        #: The deadline of the writes in progress, if any; a close moves it to now.
        self._send_deadline: asyncio.Timeout | None = None
        #: Where the pump waits, and what writes meanwhile when the transport allows it.
        self._writes = DirectPath(core, transport.direct, flusher or Flusher(metrics), metrics, self._apply)
        #: Sending the close frame, when it took longer than the close timeout (see _send_close).
        self._closing: asyncio.Future[None] | None = None
        #: Drops the connection once the linger after the end is over.
        self._drop_timer: asyncio.TimerHandle | None = None
        self._listener = Listener(core, transport, name, self._apply, self.client_left)
        #: Set when the session has finished, whichever way it ended.
        self.finished = Latch()

    def __repr__(self) -> str:
        return f"<Session {self.name} {self._transport.peer}>"

    # Requests from outside (the gateway, the route)

    def close(self, code: CloseCode, reason: str = "", *, final_frame: str | None = None) -> None:
        """Ask the session to send ``final_frame`` if any, then a close frame with ``code``, and end
        (the first request wins)."""
        self._apply(self.core.close(code, reason, final_frame=final_frame))

    def client_left(self) -> None:
        """The client disconnected: stop without sending anything more."""
        self._apply(self.core.client_gone())
        if self._closing is not None:
            self._closing.cancel()
        if self._drop_timer is not None and self.finished.is_set():
            self._drop_timer.cancel()  # the connection is closed already

    async def close_sent(self) -> None:
        """Wait until the close frame is out, or given up, after the session has finished.

        A close frame that had to wait behind unread data is still on its way when the session
        ends; it is given up, and the connection dropped, ``close_linger_seconds`` after the end.
        """
        if self._closing is not None:
            await asyncio.wait((self._closing,))

    @property
    def backlog(self) -> int:
        """Frames waiting to be written to this client (overload shedding closes none with none)."""
        return self.core.backlog

    @property
    def cost(self) -> float:
        """Work done for this client per second (what overload shedding ranks sessions by)."""
        return self.core.cost(asyncio.get_running_loop().time())

    def control_frame(self) -> bool:
        """A ping or pong arrived from the client (the server answers it below the application):
        whether to handle it; False once the client is past its allowance (the stream then closes)."""
        if self.core.control_frame(asyncio.get_running_loop().time()):
            return True
        self._apply(self.core.effects())
        return False

    def warmed(self) -> None:
        """The process has just warmed up: a stream open before that gets the snapshot now."""
        if self.core.opened:
            self._apply(self.core.warm_snapshot(asyncio.get_running_loop().time()))

    @property
    def listening(self) -> bool:
        """Whether the session still wants what the client sends (not once it is closing)."""
        return self.core.closing is None

    async def listen(self) -> None:
        """Feed what the client sends to the core until the session ends or the client leaves
        (see :class:`~siscom.sessions.listener.Listener`); it runs in the caller's task."""
        await self._listener.listen()

    # What the core returns

    def _apply(self, effects: Effects | None) -> None:
        """Do what the core said to, besides writing: whoever handed it the event calls this."""
        if effects is None:
            return
        if effects.closing is not None:
            self._interrupt()
        for refresh in effects.refreshes:
            self._tokens.refreshed(refresh)

    def _alarmed(self) -> None:
        """A delivery closed the stream (the router's call returns nothing): collect its effects."""
        self._apply(self.core.effects())

    def _interrupt(self) -> None:
        """The core is closing: stop waiting, and stop a write that may be stalled on a client that
        does not read."""
        if self._gating is not None:
            self._gating.cancel()
        self._writes.wake()
        if self._replaying is not None:
            self._replaying.cancel()
        deadline = self._send_deadline
        if deadline is not None and not deadline.expired():
            deadline.reschedule(asyncio.get_running_loop().time())

    # The pump

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        core = self.core
        self._metrics.stream_opened()
        try:
            if self._gate is not None and core.closing is None:
                # Waiting for the process to warm up; a close (shutdown, client gone) ends the wait.
                self._gating = asyncio.ensure_future(self._gate())
                await asyncio.wait((self._gating,))
                self._gating = None
            if core.closing is None:  # else closed while waiting: straight to the goodbye
                if self._resume is None:
                    self._apply(core.open(loop.time()))
                else:
                    await self._replay(*self._resume)
                    self._apply(core.effects())  # the replayer opened the core: what it said
                logger.info("Stream opened for %s, devices: %s", self._transport.peer, _describe(core.device_ids))
                self._tokens.arm()
                await self._send_loop()
            await self._say_goodbye()
        except asyncio.CancelledError:
            self._apply(core.close(CloseCode.GOING_AWAY, Cause.SHUTDOWN.value))
            await self._say_goodbye()
            raise
        finally:
            self._tokens.cancel()
            self._writes.stop()
            self._listener.stop()
            self._end()

    async def _replay(self, replayer: Replayer | BudgetedReplayer, request: ResumeRequest) -> None:
        """Open the stream through ``replayer``, in a task of its own that a close of the stream
        (the client leaving, a shutdown, a limit) cancels: a replay ends with its stream, and gives
        back its turn (siscom/sessions/recovery.py) and its place in the log's reads."""
        loop = asyncio.get_running_loop()
        replaying = self._replaying = asyncio.ensure_future(replayer.open(self.core, request, loop.time))
        try:
            await replaying
        except asyncio.CancelledError:
            task = asyncio.current_task()
            # Cancelled by the close (go on to the end), or this task itself is (go through).
            if not replaying.cancelled() or (task is not None and task.cancelling()):
                raise
        finally:
            self._replaying = None

    def _end(self) -> None:
        """The one place where every session ends."""
        if self.core.closing is None:  # the pump failed: the supervisor logs why
            self._apply(self.core.close(CloseCode.INTERNAL_ERROR, "internal error"))
        closing = self.core.closing
        assert closing is not None
        conflated = self.core.end()  # a client that stalled for good never got to a count
        if conflated:
            self._metrics.incr(Metric.CONFLATED, conflated)
        counter = _COUNTED.get(closing.cause)
        if counter is not None:
            self._metrics.incr(counter)
        self._metrics.stream_closed()
        self.finished.set()
        if not closing.silent:
            self._drop_timer = asyncio.get_running_loop().call_later(self._limits.close_linger_seconds, self._drop)
        if closing.cause is Cause.SLOW_CLIENT:
            logger.warning("Closing slow client %s: %s", self._transport.peer, closing.reason)
        elif closing.cause in _WARNED:
            logger.warning("Closing %s: %s", self._transport.peer, closing.reason)
        else:
            logger.info("Stream closed for %s (%s)", self._transport.peer, closing.cause.value)

    async def _send_loop(self) -> None:
        loop = asyncio.get_running_loop()
        core = self.core
        outbox = core.outbox
        send_many = self._transport.send_many
        metrics = self._metrics
        send_timeout = self._limits.send_timeout_seconds
        wait = self._writes.wait
        while core.closing is None:
            texts = core.take(loop.time())
            if core.pending is not None:
                self._apply(core.effects())
            if not texts:
                await wait(core.wait_time(loop.time()))
                continue
            try:
                async with asyncio.timeout(send_timeout) as self._send_deadline:
                    await send_many(texts)
            except TimeoutError:
                self._apply(core.close(CloseCode.TRY_AGAIN_LATER, Cause.SLOW_CLIENT.value, cause=Cause.SLOW_CLIENT))
                break
            except ClientGone:
                self._apply(core.client_gone())
                break
            finally:
                self._send_deadline = None
            metrics.incr(Metric.FRAMES_SENT, len(texts))
            if outbox.conflated:
                metrics.incr(Metric.CONFLATED, core.take_conflated())
            if core.more:
                # More waits: let the others run first (the pipeline and the other sessions), so
                # that no session holds the loop for long and what it takes next is the newest.
                await asyncio.sleep(0)

    async def _say_goodbye(self) -> None:
        """Send the final error frame, if any, then the close frame (unless the client is gone)."""
        closing = self.core.closing
        assert closing is not None
        if closing.silent or self._closing is not None:
            return
        final = final_frame(closing, in_band=self._transport.in_band_close)
        if final is not None:
            try:
                async with asyncio.timeout(self._limits.close_timeout_seconds):
                    await self._transport.send(final)
            except (TimeoutError, ClientGone):
                pass
        await self._send_close(closing.code, closing.reason)

    async def _send_close(self, code: CloseCode, reason: str) -> None:
        """Send the close frame; if the client does not take it in the close timeout, end anyway.

        A client that stopped reading has data waiting in its socket, and the server writes to a
        socket under a lock held for as long as a write waits to drain (Hypercorn's
        ``protocol_send``), perhaps by a write of its own, such as a pong. The close frame then
        waits its turn. The session does not wait with it: it ends, releasing its outbox and its
        subscriptions, and leaves the close frame to go out in the background, where the client
        finds it, after what it had not read, once it reads again; until the linger is over.
        """
        closing = self._closing = asyncio.ensure_future(self._transport.close(code, reason))
        closing.add_done_callback(_retrieve_outcome)
        if (await asyncio.wait((closing,), timeout=self._limits.close_timeout_seconds))[0]:
            return
        logger.info("Close frame for %s waits behind unread data; ending the session now", self._transport.peer)

    def _drop(self) -> None:
        """The linger is over: give up the close frame if still waiting, and drop the connection."""
        if self._closing is not None and not self._closing.done():
            self._closing.cancel()
            logger.info(
                "Close frame for %s still not read after the linger: dropping the connection", self._transport.peer
            )
        try:
            self._transport.abort()
        except Exception:  # never let a timer callback raise into the loop
            logger.warning("Dropping the connection of %s failed", self._transport.peer, exc_info=True)


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
