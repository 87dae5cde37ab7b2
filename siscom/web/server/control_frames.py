"""Counting the WebSocket pings and pongs a client sends, which the application never sees.

Why this reaches below ASGI: Hypercorn (0.18, ``hypercorn/protocol/ws_stream.py``,
``WSStream._handle_events``) answers a client's ping with a pong itself and drops its pongs; ASGI
has no message for either. A client sending thousands of pings a second therefore costs the
server a parse and a write each, with nothing in the application able to notice. The only place
to count them is the wsproto connection Hypercorn reads them from.

How: the ASGI ``send`` callable Hypercorn hands a WebSocket application is the bound method
``WSStream.app_send``, so its ``__self__`` is the stream; after the accept, ``stream.connection``
is the wsproto ``Connection`` whose ``events()`` Hypercorn iterates for every chunk read. This
module shadows that one method on that one connection with a generator that reports each ping
and pong. Once the client is past its allowance, or its session no longer listens (it is closing,
whatever the reason), the connection goes deaf: ``receive_data`` is replaced too, so whatever the
client still sends is dropped unparsed, with no pong written back, and the socket is no longer
read (through :class:`~siscom.web.server.link.HypercornConnection`, which reaches it).
Parsing a flood frame by frame is what costs (a few microseconds per ping in wsproto); a pong per
ping at least slowed the sender down, dropping pings without parsing less costs even less.

``tests/contracts/test_hypercorn_control_frames.py`` pins all of this against the installed Hypercorn
and fails loudly when it changes; ``STREAM_WATCH_CONTROL_FRAMES=false`` turns it off.
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from typing import Any

from wsproto.connection import Connection
from wsproto.events import Event, Ping, Pong

from siscom.web.server.link import HypercornConnection

__all__ = ["watch_control_frames"]


def watch_control_frames(
    asgi_send: Any,
    allow: Callable[[], bool],
    listening: Callable[[], bool],
    link: HypercornConnection | None = None,
) -> bool:
    """Call ``allow()`` for each ping or pong the client sends on the connection under ``asgi_send``.

    While ``allow()`` returns True the frame is handled as before (a ping is answered). When it
    returns False, or ``listening()`` does, the connection goes deaf (see the module's text), and
    ``link``, the same connection's, if any, stops reading its socket.
    Returns False, changing nothing, when the server is not the Hypercorn this was written
    against (or the WebSocket is not accepted yet); True, changing nothing, when the connection
    is already closed.
    """
    stream = getattr(asgi_send, "__self__", None)
    if getattr(stream, "closed", False) is True:  # the client left before the accept went out
        return True
    connection = getattr(stream, "connection", None)
    if not isinstance(connection, Connection) or "events" in vars(connection):
        return False
    events = connection.events

    def watched() -> Generator[Event, None, None]:
        if connection.receive_data is _discard:  # deaf: what wsproto still holds is dropped too
            _pause_reading(link)
            return
        for event in events():
            if (isinstance(event, Ping | Pong) and not allow()) or not listening():
                connection.receive_data = _discard  # type: ignore[method-assign]
                _pause_reading(link)
                return
            yield event

    connection.events = watched  # type: ignore[method-assign]  # this connection only
    return True


def _discard(data: bytes | None) -> None:
    """What a deaf connection does with the bytes it reads."""


def _pause_reading(link: HypercornConnection | None) -> None:
    """Stop reading the socket of a deaf connection, where there is a link to it. Called again for
    any data that still arrives (asyncio's stream reader may resume a transport it had paused
    itself). Without a link, a deaf connection still reads and drops what comes."""
    if link is not None:
        link.pause_reading()
