"""The wire encodings of recent frames, shared by every client that receives the same frame.

The decoder builds each frame's text once and the router hands the same ``str`` to every
recipient; what goes on the wire is that text encoded for the transport (a WebSocket text frame,
a Server-Sent Events event). Encoding it once per frame instead of once per recipient is what
:class:`EncodingCache` is for.
"""

from __future__ import annotations

import builtins
from collections import OrderedDict
from collections.abc import Callable

#: What a cache holds by default: a few seconds of a busy topic's frames.
DEFAULT_MAX_BYTES = 4 * 1024 * 1024


class EncodingCache:
    """``encode(text)`` of recent texts, oldest dropped first once they exceed ``max_bytes``.

    Keyed by the frame's text (a string hashes once; a lookup of the same object compares by
    identity). A text no longer held is encoded again: the cache saves work, never changes bytes.
    An ordered dict, not a dict: dropping a dict's oldest key means finding it first, past the
    holes the keys dropped before it left (the scan made a full cache cost 30 us per new frame).
    """

    __slots__ = ("_encode", "_encoded", "_bytes", "_max_bytes", "hits", "misses")

    def __init__(self, encode: Callable[[str], bytes], max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        self._encode = encode
        self._encoded: OrderedDict[str, bytes] = OrderedDict()
        self._bytes = 0
        self._max_bytes = max_bytes
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._encoded)

    @property
    def bytes(self) -> int:
        """Bytes of the encodings held."""
        return self._bytes

    # builtins.bytes below: in the class body, ``bytes`` is the property above.
    def encoded(self, text: str) -> builtins.bytes:
        """The encoding of ``text`` (made now unless one is held)."""
        data = self._encoded.get(text)
        if data is not None:
            self.hits += 1
            return data
        self.misses += 1
        data = self._encode(text)
        if len(data) > self._max_bytes:
            return data  # never held: it would push out everything else
        held = self._encoded
        self._bytes += len(data)
        while self._bytes > self._max_bytes:
            self._bytes -= len(held.popitem(last=False)[1])
        held[text] = data
        return data

    def joined(self, texts: list[str]) -> builtins.bytes:
        """The encodings of ``texts``, in order, as one piece (one write)."""
        if len(texts) == 1:
            return self.encoded(texts[0])
        encoded = self.encoded
        return b"".join([encoded(text) for text in texts])
