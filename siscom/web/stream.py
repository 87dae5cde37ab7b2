"""``GET /api/v1/stream``: validate the request, then hand the socket to a session actor.

Checks run cheapest first: the browser's origin (refused with 403 before the handshake), the
address's handshake rate (429 before the handshake, when limited), a free connection slot (1013),
the client's token (1008), then the query and the devices the token grants (1008). Refusals after the handshake carry an error frame saying why, because a browser
sees nothing of a refused handshake but the close.

The route also watches for the server stopping (Hypercorn's worker context, found through the
first stream's connection) and then drains the gateway: every client gets its 1001 before the
server waits for connections to end, under ``siscom serve`` and plain Hypercorn alike.
"""

from __future__ import annotations

import asyncio
import logging
import time

from quart import Blueprint, Response, websocket

from siscom.gateway import Gateway
from siscom.core.mapoptions import parse_map_options
from siscom.core.peers import client_address
from siscom.core.protocol import BadRequest, CloseCode, parse_device_ids
from siscom.core.resume import parse_resume
from siscom.security.headers import SECURITY_HEADERS
from siscom.security.tokens import SUBPROTOCOL, Forbidden, TokenError, find_token
from siscom.web.control_frames import watch_control_frames
from siscom.web.hypercorn_link import HypercornConnection
from siscom.web.transport import QuartTransport
from siscom.metrics import Metric

logger = logging.getLogger(__name__)


def stream_blueprint(gateway: Gateway) -> Blueprint:
    blueprint = Blueprint("stream", __name__)
    max_ids = gateway.settings.stream_max_device_ids
    trusted_proxies = gateway.settings.stream_trusted_proxies
    guard = gateway.guard
    watch_pings = gateway.settings.stream_watch_control_frames and guard.inbound.pings_per_second > 0
    warned: list[bool] = []

    def warn_unwatched() -> None:
        """Once per app: the server is not the Hypercorn whose pings can be counted."""
        if not warned:
            warned.append(True)
            logger.warning(
                "Cannot count clients' pings and pongs under this server (see siscom.web.control_frames); "
                "set STREAM_WATCH_CONTROL_FRAMES=false to silence this"
            )

    async def refuse(peer: str, counter: Metric, error: BadRequest, reason: str) -> None:
        gateway.metrics.incr(counter)
        logger.info("Refusing stream for %s: %s", peer, error.message)
        await websocket.send(error.frame())
        await websocket.close(CloseCode.POLICY_VIOLATION, reason)

    def abandoned(connection: HypercornConnection | None, peer: str) -> bool:
        """True (and the connection closed) when bytes came before the handshake's answer:
        Hypercorn answered 400 and will tell this route nothing more, nor close the connection
        (see hypercorn_link)."""
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
        connection = HypercornConnection.of(websocket.asgi_send)
        origin = websocket.headers.get("Origin")
        if not guard.origins.allows(origin):
            gateway.metrics.incr(Metric.ORIGIN_REFUSALS)
            logger.warning("Refusing stream for %s: origin %r not allowed", peer, origin[:100] if origin else origin)
            if abandoned(connection, peer):  # no answer of ours could reach it
                return None
            # Returned before accepting, this becomes the HTTP answer to the handshake.
            return Response("origin not allowed\n", 403, {**SECURITY_HEADERS, "Content-Type": "text/plain"})
        handshakes = guard.handshakes
        if handshakes is not None and not handshakes.allow(peer, asyncio.get_running_loop().time()):
            # Refused before the upgrade: a flood of handshakes costs an HTTP answer each, no more.
            gateway.metrics.incr(Metric.HANDSHAKE_RATE_REFUSALS)
            logger.debug("Refusing stream for %s: too many handshakes", peer)
            if abandoned(connection, peer):
                return None
            headers = {**SECURITY_HEADERS, "Content-Type": "text/plain", "Retry-After": str(handshakes.retry_after())}
            return Response("too many handshakes\n", 429, headers)
        # A browser that offered the token as a subprotocol fails the handshake unless one is chosen.
        subprotocol = SUBPROTOCOL if SUBPROTOCOL in websocket.requested_subprotocols else None
        await websocket.accept(subprotocol=subprotocol)
        if abandoned(connection, peer):
            return None
        if connection is not None:
            gateway.drain_when(connection.server_stopping)
        refusal = guard.limiter.acquire(peer)
        if refusal is not None:
            gateway.metrics.incr(Metric.CONNECTION_LIMIT_REFUSALS)
            logger.warning("Refusing stream for %s: %s", peer, refusal)
            await websocket.close(CloseCode.TRY_AGAIN_LATER, refusal)
            return None
        try:
            await serve(peer, connection)
        finally:
            guard.limiter.release(peer)
        return None

    async def serve(peer: str, connection: HypercornConnection | None) -> None:
        try:
            token = find_token(
                websocket.headers.get("Authorization"), websocket.requested_subprotocols, websocket.args.get("token")
            )
            grant = guard.authenticate(token)
        except TokenError as error:
            await refuse(peer, Metric.AUTH_FAILURES, error, "not authenticated")
            return
        values = websocket.args.getlist("device_ids")
        args = websocket.args
        try:
            device_ids = parse_device_ids(",".join(values) if values else None, max_ids=max_ids)
            options = parse_map_options(
                args.get("bbox"), args.get("max_hz"), args.get("fields"),
                max_fields=gateway.settings.stream_max_fields, highest_hz=gateway.settings.stream_max_hz,
            )
        except BadRequest as error:
            await refuse(peer, Metric.REJECTED_REQUESTS, error, "bad request")
            return
        try:
            resume = parse_resume(
                websocket.args.get("cursor"),
                websocket.args.get("since"),
                topics_crc=gateway.positions.crc,
                now_ms=int(time.time() * 1000),
                max_seconds=gateway.settings.stream_replay_max_seconds,
            )
        except BadRequest as error:
            await refuse(peer, Metric.REJECTED_REQUESTS, error, "bad request")
            return
        # This frame lives as long as the connection: keep no copy of what others already share.
        del values
        device_ids = gateway.subscriptions.canonical(device_ids)
        if grant is not None:
            try:
                device_ids = grant.narrow(device_ids)
            except Forbidden as error:
                await refuse(peer, Metric.FORBIDDEN_REQUESTS, error, "device not allowed")
                return

        transport = QuartTransport(
            websocket._get_current_object(), peer, connection, coalesce=gateway.settings.stream_coalesce_writes
        )
        try:
            session = await gateway.open_session(transport, device_ids, grant=grant, options=options, resume=resume)
        except RuntimeError:
            await websocket.close(CloseCode.TRY_AGAIN_LATER, "server not accepting streams")
            return
        # No await between the start of the session and this try: a disconnect (the route
        # cancelled) always reaches the handler below, which ends the session.
        try:
            if watch_pings and not watch_control_frames(
                websocket.asgi_send, session.control_frame, lambda: session.listening, connection
            ):
                warn_unwatched()
            await session.finished.wait()
            # A stalled client's close frame may still wait behind what it has not read.
            await session.close_sent()
        except asyncio.CancelledError:
            # Quart cancels the route when the client disconnects: its session ends (if not
            # already), and there is no connection left to drop.
            session.client_left()
            raise

    return blueprint

