"""Whether a stream may open, the same for WebSocket and Server-Sent Events.

The checks run cheapest first: the browser's origin, the address's handshake rate, a free
connection slot, the client's token, the query (device ids, map options), where it resumes from,
and the devices the token grants. Each refusal is counted and logged here, once, whatever the
transport; the route answers it in its own form (see :class:`Refusal`):

=================== ============================== ==========================================
refusal             WebSocket                      Server-Sent Events
=================== ============================== ==========================================
``ORIGIN``          403 before the handshake       403
``HANDSHAKE_RATE``  429 before the handshake       429 with ``Retry-After``
``CONNECTION_LIMIT`` close 1013                    503 with ``Retry-After``
``UNAUTHENTICATED`` error frame, close 1008        401 with ``WWW-Authenticate``
``BAD_REQUEST``     error frame, close 1008        400
``FORBIDDEN``       error frame, close 1008        403
=================== ============================== ==========================================
"""

from __future__ import annotations

import asyncio
import enum
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from werkzeug.datastructures import Headers, MultiDict

from siscom.core.mapoptions import MapOptions, parse_map_options
from siscom.core.protocol import BadRequest, parse_device_ids
from siscom.core.resume import ResumeRequest, parse_resume
from siscom.gateway import Gateway
from siscom.metrics import Metric
from siscom.security.tokens import Forbidden, Grant, TokenError, find_token
from siscom.sessions.session import Session

logger = logging.getLogger(__name__)

__all__ = ["Admission", "Admitted", "Refusal", "Refused"]


class Refusal(enum.Enum):
    ORIGIN = "origin not allowed"
    HANDSHAKE_RATE = "too many handshakes"
    CONNECTION_LIMIT = "connection limit"
    UNAUTHENTICATED = "not authenticated"
    BAD_REQUEST = "bad request"
    FORBIDDEN = "device not allowed"


class Refused(Exception):
    """A stream refused: ``kind`` says which check, ``error`` what to tell the client."""

    def __init__(self, kind: Refusal, error: BadRequest, *, retry_after: int | None = None) -> None:
        super().__init__(error.message)
        self.kind = kind
        self.error = error
        #: Seconds after which trying again may succeed (handshake rate, connection limit).
        self.retry_after = retry_after


@dataclass(frozen=True, slots=True)
class Admitted:
    """What an admitted stream receives."""

    device_ids: frozenset[str] | None
    grant: Grant | None
    options: MapOptions
    resume: ResumeRequest | None


class Admission:
    """The checks of one gateway's streams; the routes call them in this order."""

    def __init__(self, gateway: Gateway, *, retry_after: int = 1) -> None:
        """``retry_after``: what a refusal over the connection limits suggests (seconds)."""
        self._gateway = gateway
        self._guard = gateway.guard
        self._metrics = gateway.metrics
        self._retry_after = retry_after
        #: Slots given back when their sessions finish (see release_after).
        self._releasing: set[asyncio.Task[None]] = set()

    def screen(self, peer: str, origin: str | None) -> None:
        """The origin and the handshake rate: raises :class:`Refused` (nothing to release)."""
        if not self._guard.origins.allows(origin):
            self._metrics.incr(Metric.ORIGIN_REFUSALS)
            logger.warning("Refusing stream for %s: origin %r not allowed", peer, origin[:100] if origin else origin)
            raise Refused(Refusal.ORIGIN, BadRequest(Refusal.ORIGIN.value))
        handshakes = self._guard.handshakes
        if handshakes is not None and not handshakes.allow(peer, asyncio.get_running_loop().time()):
            # Refused before anything else: a flood of handshakes costs an HTTP answer each, no more.
            self._metrics.incr(Metric.HANDSHAKE_RATE_REFUSALS)
            logger.debug("Refusing stream for %s: too many handshakes", peer)
            raise Refused(
                Refusal.HANDSHAKE_RATE, BadRequest(Refusal.HANDSHAKE_RATE.value), retry_after=handshakes.retry_after()
            )

    def acquire(self, peer: str) -> None:
        """Take a connection slot (give it back with :meth:`release`), or raise :class:`Refused`."""
        refusal = self._guard.limiter.acquire(peer)
        if refusal is not None:
            self._metrics.incr(Metric.CONNECTION_LIMIT_REFUSALS)
            logger.warning("Refusing stream for %s: %s", peer, refusal)
            raise Refused(Refusal.CONNECTION_LIMIT, BadRequest(refusal), retry_after=self._retry_after)

    def release(self, peer: str) -> None:
        self._guard.limiter.release(peer)

    def release_after(self, peer: str, session: Session | None) -> None:
        """Give the slot back once ``session`` (None: none started) has finished: at once, or,
        when the route ends first (the client left while its replay is being stopped), then. A
        slot is held for as long as its stream costs anything."""
        if session is None or session.finished.is_set():
            self.release(peer)
            return
        task = asyncio.ensure_future(self._release_when_finished(peer, session))
        self._releasing.add(task)
        task.add_done_callback(self._releasing.discard)

    async def _release_when_finished(self, peer: str, session: Session) -> None:
        try:
            await session.finished.wait()
        finally:
            self.release(peer)

    def unavailable(self) -> Refused:
        """The refusal of a stream the gateway no longer takes (it is shutting down)."""
        return Refused(
            Refusal.CONNECTION_LIMIT, BadRequest("server not accepting streams"), retry_after=self._retry_after
        )

    def admit(
        self,
        peer: str,
        headers: Headers | Mapping[str, str],
        args: MultiDict[str, str],
        *,
        subprotocols: Sequence[str] = (),
        last_event_id: str | None = None,
    ) -> Admitted:
        """The token, the query, the resume point and the grant; raises :class:`Refused`.

        ``headers`` and ``args``: the request's (``Authorization``; ``device_ids``, ``token``,
        ``bbox``, ``max_hz``, ``fields``, ``cursor``, ``since``). ``last_event_id`` (Server-Sent
        Events' reconnect) is a cursor that wins over the query's ``cursor`` and ``since``: the
        browser sends it on every reconnect to the URL it first opened, so it is always the newer.
        """
        device_ids = args.getlist("device_ids")
        gateway = self._gateway
        settings = gateway.settings
        try:
            token = find_token(headers.get("Authorization"), subprotocols, args.get("token"))
            grant = self._guard.authenticate(token)
        except TokenError as error:
            raise self._refused(peer, Refusal.UNAUTHENTICATED, Metric.AUTH_FAILURES, error) from None
        try:
            ids = parse_device_ids(",".join(device_ids) if device_ids else None, max_ids=settings.stream_max_device_ids)
            options = parse_map_options(
                args.get("bbox"),
                args.get("max_hz"),
                args.get("fields"),
                max_fields=settings.stream_max_fields,
                highest_hz=settings.stream_max_hz,
            )
            cursor: str | None
            since: str | None
            if last_event_id:
                cursor, since = last_event_id, None
            else:
                cursor, since = args.get("cursor"), args.get("since")
            resume = parse_resume(
                cursor,
                since,
                topics_crc=gateway.positions.crc,
                now_ms=int(time.time() * 1000),
                max_seconds=settings.stream_replay_max_seconds,
            )
        except BadRequest as error:
            raise self._refused(peer, Refusal.BAD_REQUEST, Metric.REJECTED_REQUESTS, error) from None
        ids = gateway.subscriptions.canonical(ids)
        if grant is not None:
            try:
                ids = grant.narrow(ids)
            except Forbidden as error:
                raise self._refused(peer, Refusal.FORBIDDEN, Metric.FORBIDDEN_REQUESTS, error) from None
        return Admitted(ids, grant, options, resume)

    def _refused(self, peer: str, kind: Refusal, counter: Metric, error: BadRequest) -> Refused:
        self._metrics.incr(counter)
        logger.info("Refusing stream for %s: %s", peer, error.message)
        return Refused(kind, error)
