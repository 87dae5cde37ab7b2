"""The route's part in a session's life, the same for a WebSocket and an event stream.

Once its session has started, the task Quart runs the route in has nothing else to do until the
stream ends, so it reads what the client sends (:meth:`Session.listen`) instead of the session
running a task of its own for that: one task fewer per connection. Then it waits for the end and
for the close to go out, so that the route returns only once the stream is over. Quart cancels
the route when the client disconnects: the session then ends, if it has not already, without
sending anything more.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from siscom.sessions.session import Session

__all__ = ["attend"]


async def attend(session: Session, *, on_leave: Callable[[], None] | None = None) -> None:
    """Serve ``session`` from the route's task until it is over; ``on_leave`` is called first
    when the client disconnects (the transport learning it, where it cannot by itself).

    Call it right after the session started, with no await in between: a disconnect (the route
    cancelled) then always reaches the handler below, which ends the session.
    """
    try:
        await session.listen()
        await session.finished.wait()
        # A stalled client's close frame (or end of body) may still wait behind what it has not read.
        await session.close_sent()
    except asyncio.CancelledError:
        if on_leave is not None:
            on_leave()
        session.client_left()
        raise
