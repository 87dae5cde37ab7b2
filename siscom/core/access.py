"""What the stream core needs to know of a client's token and allowances, as protocols.

The core decides what a token lets a client subscribe to and when a client sends too much, but
verifying tokens and counting messages belong to :mod:`siscom.security`
(:class:`~siscom.security.tokens.Grant`, :class:`~siscom.security.inbound.InboundLimits`). Naming
only these shapes keeps the core below the security package: security builds on the core, never
the other way round.
"""

from __future__ import annotations

from typing import Protocol

__all__ = ["InboundAllowance", "TokenGrant"]


class TokenGrant(Protocol):
    """What a verified token allows, and until when."""

    @property
    def devices(self) -> frozenset[str] | None:
        """Device ids the holder may receive; ``None`` for every device."""
        ...

    @property
    def expires_at(self) -> float:
        """When the token stops being valid, in POSIX seconds."""
        ...

    def check(self, device_ids: frozenset[str]) -> None:
        """Raise a :class:`~siscom.core.protocol.BadRequest` unless every id is granted."""
        ...


class InboundAllowance(Protocol):
    """How much one client may still send; the caller passes the time."""

    def message(self, now: float) -> bool:
        """A message arrived: True while within the allowance."""
        ...

    def control_frame(self, now: float) -> bool:
        """A ping or a pong arrived: True while within the allowance."""
        ...
