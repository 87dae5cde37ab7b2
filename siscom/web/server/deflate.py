"""permessage-deflate (RFC 7692) agreed by the gateway, so that a frame is compressed once for all
the clients that get it.

Hypercorn 0.18 agrees compression with wsproto's ``PerMessageDeflate`` as offered (``ws_stream.py``:
``Handshake.accept``), keeping a zlib context per connection: every frame is compressed once per
client, and a fresh deflate context costs more than the rest of a delivery. Here the gateway
answers the offer itself and compresses each message on its own, with no history of earlier
messages, so the compressed bytes depend on the message alone and one copy serves every client
(:class:`DeflatedFrames`, as :func:`~siscom.web.server.coalesce.frame_cache` does uncompressed).

The answer to an offer (RFC 7692 section 7): the first ``permessage-deflate`` offer whose
parameters are all known, single and valid is accepted; the others are declined. Why no history
is always allowed: without ``server_no_context_takeover`` in the agreement the server *may* use
its earlier messages' history (section 7.1.1.1; section 7.2.3.2 shows a message encoded with
and without it), it never has to, and a client decodes a message compressed alone whatever
history it keeps. So ``server_no_context_takeover`` is answered only when it was offered:
section 7.1.1.1 lets a server add it unasked, but a client that does not support it then fails
the connection (section 7: an answer it cannot accept; RFC errata 4982 reports exactly that),
and nothing would be gained, the bytes being the same.

- ``server_max_window_bits=N`` is answered with N and messages are compressed within 2^N bytes;
  N = 8 is declined (zlib compresses with at least 2^9, section 7.1.2.1 allows 8 to 15).
- ``client_no_context_takeover`` is echoed; ``client_max_window_bits`` is not answered (a window
  up to 2^15 is then the client's, section 7.1.2.2), so what the client sends is inflated with
  2^15 bytes of history, by wsproto's ``PerMessageDeflate`` as Hypercorn would.

Each message is compressed with the smallest window that holds it (zlib matches only back to
2^bits - 262 bytes) and a small hash table: a fresh zlib context of 2^15 bytes and memory level
8, which is what wsproto uses, costs about 60 us to set up, far more than the rest of a delivery;
sized to a frame of a few hundred bytes it costs under 10 us and compresses as well.

The agreement replaces Hypercorn's for one websocket (:func:`negotiate`, before the accept): a
wrapper around that handshake's ``accept`` that lets Hypercorn answer without extensions, adds
the gateway's ``Sec-WebSocket-Extensions`` header and gives the websocket a wsproto connection
carrying :class:`SharedDeflate`. ``tests/contracts/test_deflate_contract.py`` fails, naming the
versions, when that stops working; ``STREAM_WEBSOCKET_COMPRESSION=server`` leaves the handshake
to Hypercorn, ``off`` declines every offer.
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from wsproto.extensions import PerMessageDeflate
from wsproto.frame_protocol import Opcode, RsvBits

from siscom.core.encodings import EncodingCache
from siscom.web.server.frames import TEXT_FIN_RSV1, data_frame
from siscom.web.server.link import HypercornConnection

NAME = "permessage-deflate"
#: zlib's smallest deflate window (RFC 7692 allows 8, zlib raises it to 9).
MIN_WINDOW_BITS = 9
MAX_WINDOW_BITS = 15
#: zlib finds matches only this far short of the window's end (zlib's MIN_LOOKAHEAD).
_LOOKAHEAD = 262
#: Memory level of the per-message context: its hash table, 2^(level + 7) entries.
_MEMORY_LEVEL = 4
#: The empty stored block a sync flush ends with, which RFC 7692 section 7.2.1 strips.
_TAIL = b"\x00\x00\xff\xff"
#: RFC 7692 section 7.1.2.1: a decimal 8 to 15, no leading zero (maybe quoted, RFC 6455 9.1).
_BITS = re.compile(r'"?(8|9|1[0-5])"?')
_OFFER_PARAMETERS = frozenset(
    ("server_no_context_takeover", "client_no_context_takeover", "server_max_window_bits", "client_max_window_bits")
)


def deflated(payload: bytes, max_window_bits: int = MAX_WINDOW_BITS) -> bytes:
    """``payload`` compressed as one message on its own (RFC 7692 section 7.2.1), within a window
    of at most 2^``max_window_bits`` bytes."""
    bits = min(max(MIN_WINDOW_BITS, (len(payload) + _LOOKAHEAD).bit_length()), max_window_bits)
    context = zlib.compressobj(zlib.Z_DEFAULT_COMPRESSION, zlib.DEFLATED, -bits, _MEMORY_LEVEL)
    data = context.compress(payload) + context.flush(zlib.Z_SYNC_FLUSH)
    return data[:-4] if data.endswith(_TAIL) else data


def deflated_text_frame(payload: bytes, max_window_bits: int = MAX_WINDOW_BITS) -> bytes:
    """One unmasked, final, compressed text frame carrying ``payload`` (RFC 6455 5.2, RFC 7692 6)."""
    return data_frame(deflated(payload, max_window_bits), TEXT_FIN_RSV1)


class DeflatedFrames:
    """The compressed text frames of recent frames, one cache per server window agreed (nearly
    every client agrees the default, 2^15), shared by the websockets of one app."""

    __slots__ = ("_caches",)

    def __init__(self) -> None:
        self._caches: dict[int, EncodingCache] = {}

    def cache(self, max_window_bits: int) -> EncodingCache:
        """The cache of frames compressed within 2^``max_window_bits`` bytes."""
        cache = self._caches.get(max_window_bits)
        if cache is None:
            cache = self._caches[max_window_bits] = EncodingCache(
                lambda text: deflated_text_frame(text.encode(), max_window_bits)
            )
        return cache


@dataclass(frozen=True, slots=True)
class Agreement:
    """What was agreed: the response's header value, and what it binds each side to."""

    header: bytes
    server_max_window_bits: int
    client_no_context_takeover: bool


def _parameters(offer: str) -> dict[str, str | None] | None:
    """The parameters of one ``permessage-deflate`` offer, or None when the offer must be declined
    (RFC 7692 section 7: a parameter unknown, repeated or with an invalid value)."""
    name, *items = (item.strip() for item in offer.split(";"))
    if name.lower() != NAME:
        return None
    parameters: dict[str, str | None] = {}
    for item in items:
        key, equals, value = (part.strip() for part in item.partition("="))
        key = key.lower()
        if key not in _OFFER_PARAMETERS or key in parameters:
            return None
        if key.endswith("_no_context_takeover"):
            if equals:
                return None
            parameters[key] = None
        elif not equals:
            if key == "server_max_window_bits":  # section 7.1.2.1: a value is required
                return None
            parameters[key] = None
        elif (bits := _BITS.fullmatch(value)) is None:
            return None
        else:
            parameters[key] = bits.group(1)
    return parameters


def agree(offers: Sequence[str]) -> Agreement | None:
    """The gateway's answer to the client's ``Sec-WebSocket-Extensions`` offers (each item of the
    comma-separated header), or None to decline compression."""
    for offer in offers:
        parameters = _parameters(offer)
        if parameters is None:
            continue
        answer = [NAME]
        bits = MAX_WINDOW_BITS
        asked = parameters.get("server_max_window_bits")
        if asked is not None:
            bits = int(asked)
            if bits < MIN_WINDOW_BITS:
                continue
            answer.append(f"server_max_window_bits={bits}")
        if "server_no_context_takeover" in parameters:
            answer.append("server_no_context_takeover")
        client_fresh = "client_no_context_takeover" in parameters
        if client_fresh:
            answer.append("client_no_context_takeover")
        return Agreement("; ".join(answer).encode("ascii"), bits, client_fresh)
    return None


class SharedDeflate(PerMessageDeflate):
    """wsproto's permessage-deflate for one websocket, as agreed by :func:`agree`: what the client
    sends is inflated as wsproto does; what the server sends is compressed one message at a time
    (:func:`deflated`), whether wsproto frames it (Hypercorn's own sends: pongs and closes are not
    compressed, data frames the app sends through ASGI are) or the writer below ASGI takes the
    whole frame from :attr:`frames`."""

    def __init__(self, agreement: Agreement, frames: DeflatedFrames) -> None:
        super().__init__(
            client_no_context_takeover=agreement.client_no_context_takeover,
            server_no_context_takeover=True,
            server_max_window_bits=agreement.server_max_window_bits,
        )
        #: Whole frames compressed within the agreed window, shared with every websocket of the app.
        self.frames = frames.cache(agreement.server_max_window_bits)
        # wsproto 1.3: an extension takes part once finalized with the agreed parameters (the
        # client's side of its API; the server's, accept(), would parse the offer again).
        self.finalize(agreement.header.decode("ascii"))

    def frame_outbound(self, proto: Any, opcode: Opcode, rsv: RsvBits, data: bytes, fin: bool) -> tuple[RsvBits, bytes]:
        if fin and opcode in (Opcode.TEXT, Opcode.BINARY):  # a whole message in one frame
            return RsvBits(True, rsv[1], rsv[2]), deflated(data, self.server_max_window_bits)
        return super().frame_outbound(proto, opcode, rsv, data, fin)


def negotiate(connection: HypercornConnection | None, frames: DeflatedFrames | None) -> bool:
    """Have the gateway, not Hypercorn, answer the compression offer of the websocket behind
    ``connection`` when the application accepts it: :func:`agree`'s answer with ``frames``, or
    none when ``frames`` is None (compression declined). Call before the accept; False when the
    server is not the Hypercorn this knows (the handshake is then the server's own)."""
    stream = connection.stream if connection is not None else None
    handshake = getattr(stream, "handshake", None)
    original = getattr(handshake, "accept", None)
    if handshake is None or original is None or getattr(handshake, "accepted", True):
        return False
    if not isinstance(getattr(handshake, "extensions", None), list | type(None)):
        return False

    def accept(subprotocol: str | None, additional_headers: Any) -> tuple[int, list[tuple[bytes, bytes]], Any]:
        from wsproto import ConnectionType
        from wsproto.connection import Connection

        del handshake.accept  # the class's again: no cycle left through this closure
        offers = handshake.extensions
        handshake.extensions = None  # Hypercorn agrees no extension of its own
        status, headers, websocket = original(subprotocol, additional_headers)
        agreement = agree(offers) if offers and frames is not None else None
        if agreement is None or frames is None:
            return status, headers, websocket
        headers.append((b"sec-websocket-extensions", agreement.header))
        return status, headers, Connection(ConnectionType.SERVER, [SharedDeflate(agreement, frames)])

    handshake.accept = accept
    return True
