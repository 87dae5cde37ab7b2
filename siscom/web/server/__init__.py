"""The one home of what reaches below the public APIs of Hypercorn, Quart, h11, wsproto and werkzeug.

The routes and the app use only the names below; the modules of this package are where a
dependency upgrade can break something, and each is pinned by a contract test under
``tests/contracts/`` that names the dependency and its version when it changes:

- :mod:`~siscom.web.server.link`: the Hypercorn connection behind a websocket or a streaming
  response (drop it, see a handshake Hypercorn abandoned, see the server stopping, stop reading,
  keep reading behind an event stream to see its client leave);
- :mod:`~siscom.web.server.coalesce`: websocket frames written below ASGI, several in one write;
- :mod:`~siscom.web.server.deflate`: permessage-deflate agreed by the gateway, each frame
  compressed once for all its recipients;
- :mod:`~siscom.web.server.frames`: the data frames those two build themselves;
- :mod:`~siscom.web.server.control_frames`: the pings and pongs Hypercorn answers itself, counted;
- :mod:`~siscom.web.server.ws_transport` and :mod:`~siscom.web.server.sse_transport`: Quart's
  websocket and HTTP handling adapted to streaming, and the sessions' transports over them;
- :mod:`~siscom.web.server.inbox`: the lighter queue under Quart's websocket and, while write
  coalescing is on, under every stream Hypercorn serves (``link.lighter_app_queues``);
- :mod:`~siscom.web.server.query`: a request's query, read without caching it on the request.

Nothing outside this package imports its modules, or those dependencies' internals
(``tests/contracts/test_layers.py``).
"""

from __future__ import annotations

from typing import Any, Protocol

from quart import Quart

from siscom.core.encodings import EncodingCache
from siscom.core.sse import EventCache
from siscom.web.server import control_frames
from siscom.web.server.coalesce import frame_cache
from siscom.web.server.deflate import DeflatedFrames, negotiate
from siscom.web.server.link import (
    HypercornConnection,
    PipelineGuard,
    lighter_app_queues,
    refuse_non_ascii_handshakes,
)
from siscom.web.server.query import query_args
from siscom.web.server.sse_transport import SseTransport, StreamHTTPConnection
from siscom.web.server.ws_transport import QuartTransport, StreamWebsocket, StreamWebsocketConnection

__all__ = [
    "DeflatedFrames",
    "HypercornConnection",
    "PipelineGuard",
    "QuartTransport",
    "SseTransport",
    "Watcher",
    "connection_of",
    "event_stream_transport",
    "frame_cache",
    "install",
    "negotiate_compression",
    "query_args",
    "watch_control_frames",
    "websocket_transport",
]


def install(app: Quart, *, internals: bool = True) -> None:
    """Make ``app`` handle websockets and HTTP requests the streaming way (the classes above);
    ``internals``: also lighten Hypercorn's queue per stream (off with write coalescing)."""
    # A handshake header Hypercorn cannot decode gets 400, not a traceback and no answer.
    refuse_non_ascii_handshakes()
    if internals:
        lighter_app_queues()
    # Streams write many frames per client: the cheapest send path Quart offers (ws_transport).
    app.websocket_class = StreamWebsocket
    app.asgi_websocket_class = StreamWebsocketConnection
    # Server-Sent Events: the route writes its streaming response itself (sse_transport).
    app.asgi_http_class = StreamHTTPConnection


def connection_of(message: Any) -> HypercornConnection | None:
    """The Hypercorn connection behind Quart's current ``websocket`` or ``request``, or None
    (another server, HTTP/2, an app not set up by :func:`install`)."""
    return HypercornConnection.of(getattr(message, "asgi_send", None))


def negotiate_compression(connection: HypercornConnection | None, frames: DeflatedFrames | None) -> bool:
    """Before the accept: the gateway answers the websocket's permessage-deflate offer, compressing
    into ``frames`` (None: declined); False when the server's own handshake answers it (see
    :mod:`siscom.web.server.deflate`)."""
    return negotiate(connection, frames)


def websocket_transport(
    websocket: Any, peer: str, connection: HypercornConnection | None, frames: EncodingCache | None
) -> QuartTransport:
    """The session's transport over Quart's current (accepted) ``websocket``."""
    return QuartTransport(websocket._get_current_object(), peer, connection, frames=frames)


def event_stream_transport(
    request: Any, peer: str, connection: HypercornConnection | None, events: EventCache
) -> SseTransport:
    """The session's transport over the response to Quart's current ``request``; from here on
    the route answers the request itself (Quart sends nothing more for it)."""
    transport = SseTransport(request.asgi_send, peer, connection, events)
    request.streamed = True
    return transport


class Watcher(Protocol):
    """What the control-frame watch asks of a session (see :func:`watch_control_frames`)."""

    def control_frame(self) -> bool:
        """A ping or a pong came: True while the client is within its allowance."""
        ...

    @property
    def listening(self) -> bool:
        """False once the session no longer reads what the client sends."""
        ...


def watch_control_frames(websocket: Any, session: Watcher, link: HypercornConnection | None) -> bool:
    """Count, through ``session``, the pings and pongs the client of Quart's current
    ``websocket`` sends (see :mod:`siscom.web.server.control_frames`); False when this server's
    cannot be counted."""
    return control_frames.watch_control_frames(
        websocket.asgi_send, session.control_frame, lambda: session.listening, link
    )
