"""The client side of a Server-Sent Events stream over HTTP/1.1, sans I/O.

Just enough for the benchmark's load clients: the request, the check of the response head, the
chunked transfer coding (HTTP/1.1 servers stream a body of unknown length in chunks) and the
``data:`` lines of the event stream. The server sends each event's data as one line (a frame's
JSON text), so a line is handed over as soon as it is complete, without waiting for the blank
line that ends the event; ``id:``, ``retry:`` and comment lines are skipped. An event whose data
spans several lines would come out as several payloads: not what this server sends.
"""

from __future__ import annotations

__all__ = ["EventStreamDecoder", "StreamRefused", "request"]

#: Largest HTTP response head, and chunk-size line, accepted.
MAX_HEAD = 16 * 1024
MAX_SIZE_LINE = 1024


class StreamRefused(ConnectionError):
    """The server did not answer with an event stream (or broke the HTTP framing)."""


def request(host: str, port: int, path: str, last_event_id: str | None = None) -> bytes:
    """The GET that opens a stream, with the headers ``EventSource`` sends."""
    resume = f"Last-Event-ID: {last_event_id}\r\n" if last_event_id else ""
    return (
        f"GET {path} HTTP/1.1\r\n"
        f"Host: {host}:{port}\r\n"
        "Accept: text/event-stream\r\n"
        "Cache-Control: no-cache\r\n"
        f"{resume}\r\n"
    ).encode()


class EventStreamDecoder:
    """Bytes of one response in, as they arrive; the ``data:`` payloads of complete lines out."""

    __slots__ = ("_raw", "_body", "_opened", "_chunked", "_left", "ended")

    def __init__(self) -> None:
        self._raw = bytearray()  # received, not yet taken out of the HTTP framing
        self._body = bytearray()  # event-stream text, not yet split into lines
        self._opened = False
        self._chunked = False
        #: Data bytes left in the current chunk; minus the bytes of its CRLF still to skip; 0
        #: when a chunk-size line comes next.
        self._left = 0
        #: True once the server ended the body (the last chunk).
        self.ended = False

    @property
    def opened(self) -> bool:
        """True once the head said 200 and ``text/event-stream``."""
        return self._opened

    def feed(self, data: bytes) -> list[bytes]:
        """Take ``data``; return the payload of each ``data:`` line it completed, in order.

        Raises :class:`StreamRefused` for any answer but a 200 event stream, or broken chunks.
        """
        raw = self._raw
        raw += data
        if not self._opened and not self._read_head():
            return []
        if self._chunked:
            self._dechunk()
        else:
            self._body += raw
            raw.clear()
        return self._lines()

    def _read_head(self) -> bool:
        raw = self._raw
        end = raw.find(b"\r\n\r\n")
        if end < 0:
            if len(raw) > MAX_HEAD:
                raise StreamRefused("response head too large")
            return False
        lines = bytes(raw[:end]).decode("latin-1").split("\r\n")
        del raw[: end + 4]
        headers = {name.strip().lower(): value.strip().lower() for name, _, value in (l.partition(":") for l in lines[1:])}
        if lines[0].split(" ", 2)[1:2] != ["200"]:
            raise StreamRefused(lines[0])
        if not headers.get("content-type", "").startswith("text/event-stream"):
            raise StreamRefused(f"{lines[0]}, but Content-Type {headers.get('content-type')!r}")
        self._chunked = "chunked" in headers.get("transfer-encoding", "")
        self._opened = True
        return True

    def _dechunk(self) -> None:
        raw, body = self._raw, self._body
        at = 0
        while at < len(raw) and not self.ended:
            if self._left > 0:
                take = min(self._left, len(raw) - at)
                body += raw[at : at + take]
                at += take
                self._left -= take
                if self._left == 0:  # the chunk's data is in: its CRLF follows
                    self._left = -2
                continue
            if self._left < 0:  # skipping the CRLF after a chunk's data
                skip = min(-self._left, len(raw) - at)
                at += skip
                self._left += skip
                continue
            end = raw.find(b"\r\n", at)
            if end < 0:
                if len(raw) - at > MAX_SIZE_LINE:
                    raise StreamRefused("chunk-size line too long")
                break
            try:
                size = int(bytes(raw[at:end]).split(b";", 1)[0], 16)
            except ValueError:
                raise StreamRefused(f"bad chunk-size line {bytes(raw[at:end])[:40]!r}") from None
            at = end + 2
            if size == 0:
                self.ended = True
            else:
                self._left = size
        del raw[:at]

    def _lines(self) -> list[bytes]:
        body = self._body
        end = body.rfind(b"\n")
        if end < 0:
            return []
        complete = bytes(body[:end])
        del body[: end + 1]
        payloads = []
        for line in complete.split(b"\n"):
            if line.startswith(b"data:"):
                if line.endswith(b"\r"):
                    line = line[:-1]
                payloads.append(line[6:] if line[5:6] == b" " else line[5:])
        return payloads
