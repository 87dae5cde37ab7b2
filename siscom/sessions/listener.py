"""What a client sends, fed to its session's core, in the task that serves the connection.

Context: the route's task (the one that would otherwise only wait for the session's end; see
siscom/web/attend.py), so that a session costs one task of its own, not two. The pump's task
stops it, by cancelling that task with a cancellation of its own that :meth:`Listener.listen`
takes back.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from siscom.core.protocol import CloseCode
from siscom.core.stream import Effects, StreamCore
from siscom.sessions.transport import ClientGone, Transport

logger = logging.getLogger(__name__)


class Listener:
    """Reads one client's messages into its core until the session ends or the client leaves."""

    __slots__ = ("_core", "_transport", "_name", "_on_effects", "_client_left", "_task", "_stopped")

    def __init__(
        self,
        core: StreamCore,
        transport: Transport,
        name: str,
        on_effects: Callable[[Effects | None], None],
        client_left: Callable[[], None],
    ) -> None:
        """``on_effects``: the session's handling of what the core returns (a close, a refresh);
        ``client_left``: what the session does when the client is found gone."""
        self._core = core
        self._transport = transport
        self._name = name
        self._on_effects = on_effects
        self._client_left = client_left
        #: The task running :meth:`listen`, while it runs; whether the end has stopped it.
        self._task: asyncio.Task[object] | None = None
        self._stopped = False

    async def listen(self) -> None:
        """Feed what the client sends to the core, from the start (the core holds what comes
        before the stream opens) until the session ends or the client leaves; return then.

        A client that leaves (:class:`ClientGone`) ends the session quietly; a failure here ends
        it with 1011. Cancelling the caller's task (the client left) goes through.
        """
        if self._task is not None:
            raise RuntimeError(f"{self._name} already has a listener")
        task = asyncio.current_task()
        assert task is not None
        self._task = task
        core = self._core
        on_effects = self._on_effects
        try:
            # Read from the first byte, also while a replay is waited for: the core counts what
            # comes against the client's allowance and keeps it, bounded, for the opening.
            receive = self._transport.receive
            clock = asyncio.get_running_loop().time
            while core.closing is None:  # past the client's allowance the core closes: reading stops
                effects = core.receive(await receive(), clock())
                if effects is not None:
                    on_effects(effects)
        except ClientGone:
            self._client_left()
        except asyncio.CancelledError:
            # The session's end stops the listener with a cancellation of its own (see stop),
            # taken back here: the caller's task goes on. Any other goes through.
            if not self._stopped or task.uncancel() > 0:
                raise
        except Exception as error:
            logger.error("Receiving from %s failed", self._transport.peer, exc_info=error)
            on_effects(core.close(CloseCode.INTERNAL_ERROR, "internal error"))
        finally:
            self._task = None

    def stop(self) -> None:
        """The session ends: stop reading (the listener is waiting, in another task, for the
        client)."""
        task = self._task
        if task is not None and not self._stopped:
            self._stopped = True
            task.cancel()
