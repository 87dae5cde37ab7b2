"""The session actor: the asynchronous pump around one client's :class:`~siscom.core.stream.StreamCore`.

The core decides (what the client watches, what waits, when a keep-alive is due, how the stream
ends); the session does the I/O: it writes what the core hands out under a deadline
(``STREAM_SEND_TIMEOUT_SECONDS``), waits for frames or the next keep-alive, feeds the client's
messages to the core, arms the token's timers (the ``token-expiring`` notice and the expiry; a
refresh the core accepts moves both), and sends the close. The router reaches the
core directly (it is the subscriber), and :meth:`StreamCore.deliver` never waits.

When the transport can write without awaiting (``transport.direct``: write coalescing, see
siscom/web/server/coalesce.py), a frame queued while the pump waits does not wake it: the gateway's
:class:`~siscom.sessions.flusher.Flusher` writes, in the next event-loop turn, everything waiting
for each client it was queued for, in one write per client. The pump takes over only when the
socket would block, and writes through the transport's ``send`` under the deadline.

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
import functools
import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from siscom.core.protocol import CloseCode
from siscom.core.resume import ResumeRequest
from siscom.core.stream import Cause, StreamCore, StreamPolicy, final_frame
from siscom.metrics import Metric, Metrics
from siscom.sessions.flusher import Flusher
from siscom.sessions.latch import Latch
from siscom.sessions.transport import ClientGone, Transport
from supervisors import Actor

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from siscom.sessions.recovery import BudgetedReplayer
    from siscom.sessions.replay import Replayer

logger = logging.getLogger(__name__)

#: Deadlines closer than this (seconds) are the same deadline, computed twice.
_SAME_DEADLINE = 0.001

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
        core.on_close = self._interrupt
        core.on_refresh = self._refreshed
        #: The token's timers: the notice (token-expiring) and the expiry (close 1008).
        self._notice: asyncio.TimerHandle | None = None
        self._expiry: asyncio.TimerHandle | None = None
        #: The deadline of the writes in progress, if any; a close moves it to now.
        self._send_deadline: asyncio.Timeout | None = None
        #: Waiting for frames or the next keep-alive; and the timer that ends that wait. The
        #: deadline is the same for many waits in a row, so one timer serves them all.
        self._waiter: asyncio.Future[None] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._wake_callback = self._wake
        #: Writing without waking this task (see _flush), when the transport offers it: a queued
        #: frame schedules this session's flush in the next write round.
        self._direct = transport.direct
        self._flusher = flusher or Flusher(metrics)
        self._queued_callback = functools.partial(self._flusher.schedule, self._flush)
        self._loop: asyncio.AbstractEventLoop | None = None
        #: Sending the close frame, when it took longer than the close timeout (see _send_close).
        self._closing: asyncio.Future[None] | None = None
        #: Drops the connection once the linger after the end is over.
        self._drop_timer: asyncio.TimerHandle | None = None
        #: The task running :meth:`listen`, while it runs; whether the end has stopped it.
        self._listener: asyncio.Task[object] | None = None
        self._listener_stopped = False
        #: Set when the session has finished, whichever way it ended.
        self.finished = Latch()

    def __repr__(self) -> str:
        return f"<Session {self.name} {self._transport.peer}>"

    # Requests from outside (the gateway, the route)

    def close(self, code: CloseCode, reason: str = "", *, final_frame: str | None = None) -> None:
        """Ask the session to send ``final_frame`` if any, then a close frame with ``code``, and end
        (the first request wins)."""
        self.core.close(code, reason, final_frame=final_frame)

    def client_left(self) -> None:
        """The client disconnected: stop without sending anything more."""
        self.core.client_gone()
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
        return self.core.control_frame(asyncio.get_running_loop().time())

    def warmed(self) -> None:
        """The process has just warmed up: a stream open before that gets the snapshot now."""
        if self.core.opened:
            self.core.warm_snapshot()

    @property
    def listening(self) -> bool:
        """Whether the session still wants what the client sends (not once it is closing)."""
        return self.core.closing is None

    # The pump

    async def run(self) -> None:
        loop = self._loop = asyncio.get_running_loop()
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
                    core.open(loop.time())
                else:
                    await self._replay(*self._resume)
                logger.info("Stream opened for %s, devices: %s", self._transport.peer, _describe(core.device_ids))
                self._arm_token_timers()
                await self._send_loop()
            await self._say_goodbye()
        except asyncio.CancelledError:
            core.close(CloseCode.GOING_AWAY, Cause.SHUTDOWN.value)
            await self._say_goodbye()
            raise
        finally:
            self._cancel_token_timers()
            if self._timer is not None:
                self._timer.cancel()
            self._stop_listener()
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

    def _arm_token_timers(self, *, refreshed: bool = False) -> None:
        """Schedule the notice and the expiry of the current grant (none without a token).

        After a refresh to a token already inside the notice time, no notice is scheduled: the
        client has just answered one, and a new notice at once would have it refresh in a loop.
        """
        self._cancel_token_timers()
        loop = asyncio.get_running_loop()
        now = time.time()  # a token's exp is POSIX time; the delays go on the loop's clock
        delay = self.core.expiry_delay(now)
        if delay is not None:
            self._expiry = loop.call_later(delay, self.core.token_expired)
        notice = self.core.notice_delay(now)
        if notice is not None and not (refreshed and notice <= 0):
            self._notice = loop.call_later(notice, self._token_notice)

    def _cancel_token_timers(self) -> None:
        for timer in (self._notice, self._expiry):
            if timer is not None:
                timer.cancel()
        self._notice = self._expiry = None

    def _token_notice(self) -> None:
        self._notice = None
        self.core.token_expiring(time.time())

    def _refreshed(self, accepted: bool) -> None:
        """The client sent a new token: count it; when accepted, the timers follow the new expiry.

        Logged at DEBUG only: a refresh is a client's routine action, repeated by every client as
        often as its tokens expire; the counters say how many (and the client got its answer)."""
        if accepted:
            self._metrics.incr(Metric.TOKEN_REFRESHES)
            self._arm_token_timers(refreshed=True)
            logger.debug("Token refreshed for %s", self._transport.peer)
        else:
            self._metrics.incr(Metric.TOKEN_REFRESH_REFUSALS)
            logger.debug("Token refresh refused for %s", self._transport.peer)

    def _end(self) -> None:
        """The one place where every session ends."""
        if self.core.closing is None:  # the pump failed: the supervisor logs why
            self.core.close(CloseCode.INTERNAL_ERROR, "internal error")
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
        while core.closing is None:
            texts = core.take(loop.time())
            if not texts:
                await self._wait(core.wait_time(loop.time()))
                continue
            try:
                async with asyncio.timeout(send_timeout) as self._send_deadline:
                    await send_many(texts)
            except TimeoutError:
                core.close(CloseCode.TRY_AGAIN_LATER, Cause.SLOW_CLIENT.value, cause=Cause.SLOW_CLIENT)
                break
            except ClientGone:
                core.client_gone()
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

    async def _wait(self, delay: float) -> None:
        """Wait until a frame is queued, the stream is closed, or ``delay`` seconds pass."""
        loop = asyncio.get_running_loop()
        self._arm_timer(loop.time() + delay)
        self._waiter = loop.create_future()
        self.core.outbox.waker = self._wake_callback if self._direct is None else self._queued_callback
        try:
            await self._waiter
        finally:
            self._waiter = None
            self.core.outbox.waker = None

    def _arm_timer(self, deadline: float) -> None:
        """End the pump's wait at ``deadline`` (the timer already set is kept if it is the same)."""
        timer = self._timer
        if timer is None or abs(timer.when() - deadline) > _SAME_DEADLINE:
            if timer is not None:
                timer.cancel()
            assert self._loop is not None
            self._timer = self._loop.call_at(deadline, self._time_is_up)

    def _flush(self, now: float) -> int:
        """Write what waits straight to the socket, in one write, while the pump waits and the
        socket takes the bytes now; otherwise wake the pump, which writes through the plain path
        and waits for the client under the send deadline (so a slow client only holds its own
        task, never the turn that routes for everyone). Returns the frames written (the flusher
        counts them)."""
        waiter, core, direct = self._waiter, self.core, self._direct
        if waiter is None or waiter.done() or core.closing is not None or direct is None:
            return 0  # the pump is busy writing, or the stream is ending: it takes what waits
        if not direct.ready():
            self._wake()
            return 0
        outbox = core.outbox
        texts = core.take(now)
        while core.more:  # everything (a snapshot's rest too), not a chunk: it all leaves in this one write
            texts += core.take(now)
        if texts:
            try:
                direct.write(texts)
            except (OSError, RuntimeError):  # the connection is going (e.g. after write_eof)
                core.client_gone()
                return 0
            if outbox.conflated:
                self._metrics.incr(Metric.CONFLATED, core.take_conflated())
        outbox.waker = self._queued_callback
        # What the core says to wait for may have changed (a frame held for a rate slot, the
        # keep-alive just written): the pump's wait ends then, as if it had recomputed it.
        self._arm_timer(now + core.wait_time(now))
        return len(texts)

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _time_is_up(self) -> None:
        """The pump's wait is over (a keep-alive or a held frame is due). With direct writes, what
        is due is written from this timer callback, as a routed frame is, so that a keep-alive
        costs no task wake-up and no pass through ASGI; the pump is woken only when the socket
        would block (see _flush)."""
        self._timer = None
        if self._direct is not None:
            self._flusher.flush_now(self._flush)
        else:
            self._wake()

    def _interrupt(self) -> None:
        """The core is closing: stop waiting, and stop a write that may be stalled on a client that
        does not read."""
        if self._gating is not None:
            self._gating.cancel()
        self._wake()
        if self._replaying is not None:
            self._replaying.cancel()
        deadline = self._send_deadline
        if deadline is not None and not deadline.expired():
            deadline.reschedule(asyncio.get_running_loop().time())

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

    async def listen(self) -> None:
        """Feed what the client sends to the core, from the start (the core holds what comes
        before the stream opens) until the session ends or the client leaves; return then.

        It runs in the task that serves the connection (the route's, which would otherwise only
        wait for the end; see siscom/web/attend.py), so that a session costs one task of its own,
        not two. A client that leaves (:class:`ClientGone`) ends the session quietly; a failure
        here ends it with 1011. Cancelling the caller's task (the client left) goes through.
        """
        if self._listener is not None:
            raise RuntimeError(f"{self.name} already has a listener")
        task = asyncio.current_task()
        assert task is not None
        self._listener = task
        core = self.core
        try:
            # Read from the first byte, also while a replay is waited for: the core counts what
            # comes against the client's allowance and keeps it, bounded, for the opening.
            receive = self._transport.receive
            clock = asyncio.get_running_loop().time
            while core.closing is None:  # past the client's allowance the core closes: reading stops
                core.receive(await receive(), clock())
        except ClientGone:
            self.client_left()
        except asyncio.CancelledError:
            # The session's end stops the listener with a cancellation of its own (see
            # _stop_listener), taken back here: the caller's task goes on. Any other goes through.
            if not self._listener_stopped or task.uncancel() > 0:
                raise
        except Exception as error:
            logger.error("Receiving from %s failed", self._transport.peer, exc_info=error)
            core.close(CloseCode.INTERNAL_ERROR, "internal error")
        finally:
            self._listener = None

    def _stop_listener(self) -> None:
        """The session ends: stop reading (the listener is waiting, in another task, for the
        client)."""
        listener = self._listener
        if listener is not None and not self._listener_stopped:
            self._listener_stopped = True
            listener.cancel()

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
