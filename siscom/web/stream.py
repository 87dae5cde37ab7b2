"""``GET /api/v1/stream``: validate the request, then hand the socket to a session actor.

Checks run cheapest first: the browser's origin (refused with 403 before the handshake), the
address's handshake rate (429 before the handshake, when limited), a free connection slot (1013), the client's token (1008), then the query and the devices the token
grants (1008). Refusals after the handshake carry an error frame saying why, because a browser
sees nothing of a refused handshake but the close.
"""

from __future__ import annotations

import asyncio
import logging

from quart import Blueprint, Response, websocket

from siscom.gateway import Gateway
from siscom.core.peers import client_address
from siscom.core.protocol import BadRequest, CloseCode, parse_device_ids
from siscom.security.headers import SECURITY_HEADERS
from siscom.security.inbound import InboundLimits
from siscom.security.tokens import SUBPROTOCOL, Forbidden, TokenError, find_token
from siscom.web.control_frames import watch_control_frames
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

    @blueprint.websocket("/api/v1/stream")
    async def stream() -> Response | None:
        peer = client_address(websocket.remote_addr, websocket.headers.get("X-Forwarded-For"), trusted_proxies)
        origin = websocket.headers.get("Origin")
        if not guard.origins.allows(origin):
            gateway.metrics.incr(Metric.ORIGIN_REFUSALS)
            logger.warning("Refusing stream for %s: origin %r not allowed", peer, origin[:100] if origin else origin)
            # Returned before accepting, this becomes the HTTP answer to the handshake.
            return Response("origin not allowed\n", 403, {**SECURITY_HEADERS, "Content-Type": "text/plain"})
        handshakes = guard.handshakes
        if handshakes is not None and not handshakes.allow(peer, asyncio.get_running_loop().time()):
            # Refused before the upgrade: a flood of handshakes costs an HTTP answer each, no more.
            gateway.metrics.incr(Metric.HANDSHAKE_RATE_REFUSALS)
            logger.debug("Refusing stream for %s: too many handshakes", peer)
            headers = {**SECURITY_HEADERS, "Content-Type": "text/plain", "Retry-After": str(handshakes.retry_after())}
            return Response("too many handshakes\n", 429, headers)
        # A browser that offered the token as a subprotocol fails the handshake unless one is chosen.
        subprotocol = SUBPROTOCOL if SUBPROTOCOL in websocket.requested_subprotocols else None
        await websocket.accept(subprotocol=subprotocol)
        refusal = guard.limiter.acquire(peer)
        if refusal is not None:
            gateway.metrics.incr(Metric.CONNECTION_LIMIT_REFUSALS)
            logger.warning("Refusing stream for %s: %s", peer, refusal)
            await websocket.close(CloseCode.TRY_AGAIN_LATER, refusal)
            return None
        try:
            await serve(peer)
        finally:
            guard.limiter.release(peer)
        return None

    async def serve(peer: str) -> None:
        try:
            token = find_token(
                websocket.headers.get("Authorization"), websocket.requested_subprotocols, websocket.args.get("token")
            )
            grant = guard.authenticate(token)
        except TokenError as error:
            await refuse(peer, Metric.AUTH_FAILURES, error, "not authenticated")
            return
        values = websocket.args.getlist("device_ids")
        try:
            device_ids = parse_device_ids(",".join(values) if values else None, max_ids=max_ids)
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

        connection = websocket._get_current_object()
        transport = QuartTransport(connection, peer)
        try:
            session = await gateway.open_session(
                transport,
                device_ids,
                allowed_devices=grant.devices if grant is not None else None,
                expires_at=grant.expires_at if grant is not None else None,
                inbound=InboundLimits(guard.inbound, asyncio.get_running_loop().time()),
            )
        except RuntimeError:
            await websocket.close(CloseCode.TRY_AGAIN_LATER, "server not accepting streams")
            return
        asgi_send = getattr(connection, "asgi_send", None)
        if watch_pings and not watch_control_frames(asgi_send, session.control_frame, lambda: session.listening):
            warn_unwatched()
        try:
            await session.finished.wait()
            # A stalled client's close frame may still wait behind what it has not read.
            await session.close_sent()
        finally:
            # Cancelled by Quart when the client disconnects: the session must stop too.
            if not session.finished.is_set():
                await gateway.end_session(session)

    return blueprint

