"""Actors and supervisors for asyncio, in the manner of Erlang/OTP.

An :class:`Actor` is a coroutine with a name and, usually, a :class:`Mailbox`; its ``run()`` is its
whole life. A :class:`Supervisor` is an actor whose work is other actors: it starts them from
:class:`ChildSpec` data (an id, a factory, a :class:`Restart` type, a shutdown time), notices when
one ends, and restarts it, and perhaps its siblings as its :class:`Strategy` says, after a short
tenacity backoff. More than ``intensity`` restarts within ``period`` seconds mean restarting does
not help: the supervisor stops its children and fails with :class:`RestartIntensityExceeded`, which
its own supervisor treats like any crash. Supervisors nest, so a failure climbs the tree until a
level that can repair it.
"""

from .actor import Actor
from .mailbox import Mailbox, MailboxFull
from .spec import ChildInfo, ChildSpec, Restart, RestartIntensityExceeded, Strategy
from .supervisor import Supervisor

__all__ = [
    "Actor",
    "ChildInfo",
    "ChildSpec",
    "Mailbox",
    "MailboxFull",
    "Restart",
    "RestartIntensityExceeded",
    "Strategy",
    "Supervisor",
]
