"""The unit a supervisor looks after."""

from __future__ import annotations

from typing import Any

from .mailbox import Mailbox

__all__ = ["Actor"]


class Actor:
    """A supervised unit of work.

    :meth:`run` is its whole life: returning is a normal exit, raising is a crash, and
    cancellation is a shutdown requested by its supervisor. An actor owns its state; others reach
    it only through its :attr:`inbox`. The default :meth:`run` handles one message at a time with
    :meth:`receive`; actors that batch, keep timers or talk to the network override :meth:`run`.
    """

    name: str
    inbox: Mailbox[Any] | None

    def __init__(self, name: str | None = None, inbox: Mailbox[Any] | None = None) -> None:
        self.name = name if name is not None else type(self).__name__
        self.inbox = inbox

    async def run(self) -> None:
        """Hand every message of the inbox to :meth:`receive`, in order, until cancelled."""
        if self.inbox is None:
            raise RuntimeError(f"actor {self.name!r} has no inbox: give it one or override run()")
        while True:
            message = await self.inbox.get()
            await self.receive(message)

    async def receive(self, message: Any) -> None:
        """Handle one message; raising crashes the actor."""
        raise NotImplementedError(f"{type(self).__name__} must override receive() or run()")

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r}>"
