"""``GET /api/v1/stream``: validate the request, then hand the socket to a session actor."""

from __future__ import annotations

import logging

from quart import Blueprint, websocket

from siscom.gateway import Gateway
from siscom.peers import client_address
from siscom.protocol import BadRequest, CloseCode, error_frame, parse_device_ids
from siscom.transport import QuartTransport

logger = logging.getLogger(__name__)


def stream_blueprint(gateway: Gateway) -> Blueprint:
    blueprint = Blueprint("stream", __name__)
    max_ids = gateway.settings.stream_max_device_ids
    trusted_proxies = gateway.settings.stream_trusted_proxies

    @blueprint.websocket("/api/v1/stream")
    async def stream() -> None:
        peer = client_address(websocket.remote_addr, websocket.headers.get("X-Forwarded-For"), trusted_proxies)
        values = websocket.args.getlist("device_ids")
        try:
            device_ids = parse_device_ids(",".join(values) if values else None, max_ids=max_ids)
        except BadRequest as error:
            gateway.metrics.incr("rejected_requests")
            logger.info("Refusing stream for %s: %s", peer, error.message)
            await websocket.accept()
            await websocket.send(error_frame(error.message))
            await websocket.close(CloseCode.POLICY_VIOLATION, "bad request")
            return

        await websocket.accept()
        transport = QuartTransport(websocket._get_current_object(), peer)
        try:
            session = await gateway.open_session(transport, device_ids)
        except RuntimeError:
            await websocket.close(CloseCode.TRY_AGAIN_LATER, "server not accepting streams")
            return
        try:
            await session.finished.wait()
        finally:
            # Cancelled by Quart when the client disconnects: the session must stop too.
            if not session.finished.is_set():
                await gateway.end_session(session)

    return blueprint
