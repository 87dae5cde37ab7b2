"""Faults the chaos tests inject into the gateway: actors that crash on purpose.

Nothing in the product imports this module. In-process tests install a fault with pytest's
``monkeypatch.setattr``; a server process gets one by being started as
``python -m chaos.faulty_server`` with ``SISCOM_CHAOS_FAULT`` naming it (see that module). Each
fault raises :class:`InjectedFault`, so a test can tell it from a real crash in the log.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import siscom.pipeline.decoder as decoder_module
from siscom.pipeline.consumer import Consumer
from siscom.pipeline.router import Router
from siscom.core.deliveries import Delivery

#: A record whose value contains this crashes the decoder (with the "decoder-poison" fault).
DECODER_POISON = "POISON-DECODER"
#: A record whose value contains this crashes the router (with the "router-poison" fault).
ROUTER_POISON = "POISON-ROUTER"

Patch = Callable[[Any, str, Any], None]


class InjectedFault(RuntimeError):
    """A crash a test asked for."""


def decoder_poison(patch: Patch) -> None:
    """The decoder crashes on each batch holding a record with DECODER_POISON in its value."""
    decode = decoder_module.decode_value

    def decode_value(value: bytes | None, *, max_bytes: int):
        if value and DECODER_POISON.encode() in value:
            raise InjectedFault("the decoder met a poison record")
        return decode(value, max_bytes=max_bytes)

    patch(decoder_module, "decode_value", decode_value)


def router_poison(patch: Patch) -> None:
    """The router crashes on each batch holding a frame with ROUTER_POISON in its text."""
    receive = Router.receive

    async def poisoned_receive(self: Router, frames: list[Delivery]) -> None:
        if any(ROUTER_POISON in frame.text for frame in frames):
            raise InjectedFault("the router met a poison frame")
        await receive(self, frames)

    patch(Router, "receive", poisoned_receive)


def consumer_crash(patch: Patch) -> None:
    """The consumer crashes as soon as it starts, every time: restarting cannot help."""

    async def run(self: Consumer) -> None:
        raise InjectedFault("the consumer crashes as it starts")

    patch(Consumer, "run", run)


FAULTS: dict[str, Callable[[Patch], None]] = {
    "decoder-poison": decoder_poison,
    "router-poison": router_poison,
    "consumer-crash": consumer_crash,
}


def install(name: str, patch: Patch = setattr) -> None:
    """Install the fault called ``name`` (a key of FAULTS)."""
    try:
        fault = FAULTS[name]
    except KeyError:
        raise ValueError(f"unknown fault {name!r}; known: {', '.join(FAULTS)}") from None
    fault(patch)
