"""Server data frames built here rather than by wsproto (RFC 6455 section 5.2: unmasked, final),
for the writes below ASGI (:mod:`~siscom.web.server.coalesce`, :mod:`~siscom.web.server.deflate`)."""

from __future__ import annotations

#: The first byte of a final text frame; with RSV1 set, of a compressed one (RFC 7692 section 6).
TEXT_FIN = 0x81
TEXT_FIN_RSV1 = 0xC1


def data_frame(payload: bytes, first: int = TEXT_FIN) -> bytes:
    """One unmasked frame carrying ``payload``, whose first byte (FIN, RSV bits, opcode) is
    ``first``, with the shortest of the three length encodings that holds it."""
    size = len(payload)
    if size < 126:
        return bytes((first, size)) + payload
    if size < 65536:
        return bytes((first, 126)) + size.to_bytes(2, "big") + payload
    return bytes((first, 127)) + size.to_bytes(8, "big") + payload
