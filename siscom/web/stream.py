"""``GET /api/v1/stream``: validate the request, then hand the socket to a session actor.

The checks are those of every stream (:mod:`siscom.web.admission`), answered the WebSocket way:
the browser's origin refused with 403 and the handshake rate with 429, both before the handshake;
no free connection slot: close 1013; the token, the query, the resume point and the devices the
token grants: an error frame, then close 1008. Refusals after the handshake carry an error frame
saying why, because a browser sees nothing of a refused handshake but the close.

The route also watches for the server stopping (Hypercorn's worker context, found through the
first stream's connection) and then drains the gateway: every client gets its 1001 before the
server waits for connections to end, under ``siscom serve`` and plain Hypercorn alike.
"""

from __future__ import annotations

import asyncio
import logging

from quart import Blueprint, Response, websocket

from siscom.core.peers import client_address
from siscom.core.protocol import BadRequest, CloseCode
from siscom.gateway import Gateway
from siscom.metrics import Metric
from siscom.security.headers import SECURITY_HEADERS
from siscom.security.tokens import SUBPROTOCOL
from siscom.sessions.session import Session
from siscom.web.admission import Admission, Refusal, Refused
from siscom.web.attend import attend
from siscom.web.server import (
    DeflatedFrames,
    HypercornConnection,
    connection_of,
    frame_cache,
    negotiate_compression,
    query_args,
    watch_control_frames,
    websocket_transport,
)

logger = logging.getLogger(__name__)


def stream_blueprint(gateway: Gateway) -> Blueprint:
    blueprint = Blueprint("stream", __name__)
    trusted_proxies = gateway.settings.stream_trusted_proxies
    admission = Admission(gateway)
    watch_pings = gateway.settings.stream_watch_control_frames and gateway.guard.inbound.pings_per_second > 0
    warned: list[bool] = []
    #: Each routed frame framed once for every websocket that gets it (writes below ASGI only).
    frames = frame_cache() if gateway.settings.stream_coalesce_writes else None
    #: permessage-deflate: answered by the gateway (shared: each frame compressed once for every
    #: websocket that gets it; off: declined), or by the server itself.
    compression = gateway.settings.stream_websocket_compression
    deflated = DeflatedFrames() if compression == "shared" else None

    def warn_unwatched() -> None:
        """Once per app: the server is not the Hypercorn whose pings can be counted."""
        if not warned:
            warned.append(True)
            logger.warning(
                "Cannot count clients' pings and pongs under this server (see "
                "siscom.web.server.control_frames); set STREAM_WATCH_CONTROL_FRAMES=false to silence this"
            )

    async def refuse(error: BadRequest, reason: str) -> None:
        await websocket.send(error.frame())
        await websocket.close(CloseCode.POLICY_VIOLATION, reason)

    def abandoned(connection: HypercornConnection | None, peer: str) -> bool:
        """True (and the connection closed) when bytes came before the handshake's answer:
        Hypercorn answered 400 and will tell this route nothing more, nor close the connection
        (see siscom.web.server.link)."""
        if connection is None or not connection.abandoned:
            return False
        gateway.metrics.incr(Metric.REJECTED_REQUESTS)
        logger.info("Dropping stream of %s: data before the handshake completed (answered 400)", peer)
        connection.close()
        asyncio.get_running_loop().call_later(gateway.limits.close_linger_seconds, connection.abort)
        return True

    @blueprint.websocket("/api/v1/stream")
    async def stream() -> Response | None:
        peer = client_address(websocket.remote_addr, websocket.headers.get("X-Forwarded-For"), trusted_proxies)
        connection = connection_of(websocket)
        try:
            admission.screen(peer, websocket.headers.get("Origin"))
        except Refused as refused:
            if abandoned(connection, peer):  # no answer of ours could reach it
                return None
            # Returned before accepting, this becomes the HTTP answer to the handshake.
            headers = {**SECURITY_HEADERS, "Content-Type": "text/plain"}
            if refused.kind is Refusal.ORIGIN:
                return Response("origin not allowed\n", 403, headers)
            return Response("too many handshakes\n", 429, {**headers, "Retry-After": str(refused.retry_after)})
        # A browser that offered the token as a subprotocol fails the handshake unless one is chosen.
        subprotocol = SUBPROTOCOL if SUBPROTOCOL in websocket.requested_subprotocols else None
        if compression != "server":
            negotiate_compression(connection, deflated)
        await websocket.accept(subprotocol=subprotocol)
        if abandoned(connection, peer):
            return None
        if connection is not None:
            gateway.drain_when(connection.server_stopping)
        try:
            admission.acquire(peer)
        except Refused as refused:
            await websocket.close(CloseCode.TRY_AGAIN_LATER, refused.error.message)
            return None
        started: list[Session] = []
        try:
            await serve(peer, connection, started)
        finally:
            admission.release_after(peer, started[0] if started else None)
        return None

    async def serve(peer: str, connection: HypercornConnection | None, started: list[Session]) -> None:
        """Serve an admitted stream; ``started`` gets its session, which holds the slot until it
        has finished (a replay still being stopped after the client left)."""
        try:
            admitted = admission.admit(
                peer, websocket.headers, query_args(websocket), subprotocols=websocket.requested_subprotocols
            )
        except Refused as refused:
            await refuse(refused.error, refused.kind.value)
            return
        transport = websocket_transport(websocket, peer, connection, frames)
        try:
            session = await gateway.open_session(
                transport, admitted.device_ids, grant=admitted.grant, options=admitted.options, resume=admitted.resume
            )
        except RuntimeError:
            await websocket.close(CloseCode.TRY_AGAIN_LATER, "server not accepting streams")
            return
        started.append(session)
        # No await until attend's: a disconnect (the route cancelled) always reaches it.
        if watch_pings and not watch_control_frames(websocket, session, connection):
            warn_unwatched()
        await attend(session)

    return blueprint
