"""``GET /api/v1/stream`` with ``Accept: text/event-stream``: the stream as Server-Sent Events.

The same path upgrades WebSocket requests (:mod:`siscom.web.stream`): Quart matches HTTP and
websocket rules apart (werkzeug's ``Rule(websocket=...)``), so both routes live on one path. The
checks are those of every stream (:mod:`siscom.web.admission`), answered in HTTP: 400 with
``{"error": ...}`` for a bad query, cursor or time (``EventSource`` stops instead of retrying),
401 and 403 for tokens as for the stats endpoint, 403 for a refused ``Origin``, 429 over the
handshake rate, 503 with ``Retry-After`` over the connection limits or while shutting down. A GET
that asks for neither a WebSocket nor an event stream gets 406 saying how to ask.

``Last-Event-ID`` (what ``EventSource`` sends when it reconnects) resumes like ``?cursor=``, and
wins over the query's ``cursor`` and ``since``: it is always the newer.

Browsers send ``Origin`` on every cross-origin ``EventSource`` request; allowed origins get the
CORS headers back (the origin itself, credentials allowed, ``Vary: Origin``). A preflight comes
only when the browser's reconnect carries a ``Last-Event-ID`` that is not CORS-safelisted (over
128 bytes, as cursors of many partitions are): ``OPTIONS`` answers it.
"""

from __future__ import annotations

import logging
import math
from typing import Any

import orjson
from quart import Blueprint, Response, request

from siscom.core.peers import client_address
from siscom.core.protocol import CloseCode
from siscom.core.sse import CONTENT_TYPE, EventCache, accepts_event_stream
from siscom.gateway import Gateway
from siscom.security.headers import SECURITY_HEADERS
from siscom.sessions.session import Session
from siscom.web.admission import Admission, Admitted, Refusal, Refused
from siscom.web.attend import attend
from siscom.web.server import HypercornConnection, PipelineGuard, connection_of, event_stream_transport, query_args

logger = logging.getLogger(__name__)

__all__ = ["sse_blueprint"]

#: What every answer of this route carries, besides the security headers.
_VARY = {"Vary": "Origin", "Cache-Control": "no-store"}
#: The head of an event stream: nothing may cache or buffer it (nginx reads X-Accel-Buffering).
_STREAM_HEADERS = {"Content-Type": CONTENT_TYPE, "Cache-Control": "no-store", "X-Accel-Buffering": "no"}
_STATUS = {
    Refusal.ORIGIN: 403,
    Refusal.HANDSHAKE_RATE: 429,
    Refusal.CONNECTION_LIMIT: 503,
    Refusal.UNAUTHENTICATED: 401,
    Refusal.BAD_REQUEST: 400,
    Refusal.FORBIDDEN: 403,
}
_CHALLENGE = {"WWW-Authenticate": 'Bearer error="invalid_token"'}
#: How long a browser may keep a preflight's answer.
_PREFLIGHT_MAX_AGE_SECONDS = 600


def cors_headers(origin: str | None) -> dict[str, str]:
    """What an allowed cross-origin request needs back (nothing without an ``Origin``)."""
    if origin is None:
        return {}
    return {"Access-Control-Allow-Origin": origin, "Access-Control-Allow-Credentials": "true"}


def sse_blueprint(gateway: Gateway) -> Blueprint:
    blueprint = Blueprint("sse", __name__)
    settings = gateway.settings
    trusted_proxies = settings.stream_trusted_proxies
    retry_ms = settings.stream_sse_retry_milliseconds
    admission = Admission(gateway, retry_after=max(1, math.ceil(retry_ms / 1000)))
    #: Each frame's event, encoded once for every SSE client of this process.
    events = EventCache()
    #: The head of every stream, but for the CORS headers of its origin.
    stream_head = _encoded({**SECURITY_HEADERS, **_STREAM_HEADERS, "Vary": "Origin"})

    def answer(status: int, body: dict[str, Any], origin: str | None, **headers: str) -> Response:
        headers = {**SECURITY_HEADERS, **_VARY, **cors_headers(origin), **headers}
        return Response(_json(body), status, headers, content_type="application/json")

    def refusal(refused: Refused, origin: str | None) -> Response:
        status = _STATUS[refused.kind]
        extra = {} if refused.retry_after is None else {"Retry-After": str(refused.retry_after)}
        if refused.kind is Refusal.UNAUTHENTICATED:
            extra.update(_CHALLENGE)
        # A refused origin gets no CORS headers: the page that sent it learns nothing.
        shown = None if refused.kind is Refusal.ORIGIN else origin
        return answer(status, {"error": refused.error.message, **refused.error.detail}, shown, **extra)

    @blueprint.route("/api/v1/stream", methods=["GET", "OPTIONS"], provide_automatic_options=False)
    async def events_stream() -> Response:
        origin = request.headers.get("Origin")
        if request.method == "OPTIONS":
            return preflight(origin)
        if not accepts_event_stream(request.headers.get("Accept")):
            return answer(
                406,
                {
                    "error": "this path streams over WebSocket (an upgrade request) or Server-Sent Events "
                    "(Accept: text/event-stream)"
                },
                origin if gateway.guard.origins.allows(origin) else None,
            )
        peer = client_address(request.remote_addr, request.headers.get("X-Forwarded-For"), trusted_proxies)
        try:
            admission.screen(peer, origin)
        except Refused as refused:
            return refusal(refused, origin)
        try:
            admission.acquire(peer)
        except Refused as refused:
            return refusal(refused, origin)
        started: list[Session] = []
        try:
            return await serve(peer, origin, started)
        finally:
            admission.release_after(peer, started[0] if started else None)

    def preflight(origin: str | None) -> Response:
        """A browser asking whether it may send ``Last-Event-ID`` (or ``Authorization``) across origins."""
        if origin is None:
            return Response("", 204, {**SECURITY_HEADERS, "Allow": "GET, OPTIONS"})
        if not gateway.guard.origins.allows(origin):
            return answer(403, {"error": Refusal.ORIGIN.value}, None)
        headers = {
            **SECURITY_HEADERS,
            **_VARY,
            **cors_headers(origin),
            "Access-Control-Allow-Methods": "GET",
            "Access-Control-Allow-Headers": "Last-Event-ID, Authorization",
            "Access-Control-Max-Age": str(_PREFLIGHT_MAX_AGE_SECONDS),
        }
        return Response("", 204, headers)

    async def serve(peer: str, origin: str | None, started: list[Session]) -> Response:
        """Serve an admitted stream; ``started`` gets its session, which holds the slot until it
        has finished (a replay still being stopped after the client left)."""
        try:
            admitted = admission.admit(
                peer, request.headers, query_args(request), last_event_id=request.headers.get("Last-Event-ID")
            )
        except Refused as refused:
            return refusal(refused, origin)
        if gateway.draining:
            return refusal(admission.unavailable(), origin)
        if request.method == "HEAD":
            return Response("", 200, {**SECURITY_HEADERS, **_STREAM_HEADERS, **_VARY, **cors_headers(origin)})
        connection = connection_of(request)
        guard = None
        if connection is not None:
            gateway.drain_when(connection.server_stopping)
            # Whatever the client sends behind its request is ignored, and its leaving seen.
            guard = PipelineGuard.install(connection)
        try:
            return await stream(peer, origin, admitted, connection, started)
        finally:
            if guard is not None:
                guard.stop()
                if guard.dropped and connection is not None:
                    connection.close()  # requests were sent behind the stream: none is answered

    async def stream(
        peer: str,
        origin: str | None,
        admitted: Admitted,
        connection: HypercornConnection | None,
        started: list[Session],
    ) -> Response:
        # From here on, the route answers the request itself.
        transport = event_stream_transport(request, peer, connection, events)
        head = stream_head + _encoded(cors_headers(origin))
        await transport.open(head, retry_ms, coalesce=settings.stream_coalesce_writes)
        try:
            session = await gateway.open_session(
                transport, admitted.device_ids, grant=admitted.grant, options=admitted.options, resume=admitted.resume
            )
        except RuntimeError:
            # Shutting down since the head went out: the stream ends at once, and the browser
            # reconnects (elsewhere) after its retry delay.
            await transport.close(CloseCode.GOING_AWAY, "server not accepting streams")
            return Response("")
        started.append(session)
        await attend(session, on_leave=transport.client_left)
        return Response("")

    return blueprint


def _encoded(headers: dict[str, str]) -> list[tuple[bytes, bytes]]:
    return [(name.lower().encode(), value.encode()) for name, value in headers.items()]


def _json(body: dict[str, Any]) -> str:
    return orjson.dumps(body).decode() + "\n"
