"""Arbitrary Unicode in every query parameter and header the stream routes read, against the
served app: the answer is the stream or the usual refusal, never a 500 or a traceback.

Digits are the trap: ``"²".isdigit()`` is true and ``int("²")`` raises; ``float("١٢")`` is 12.
Where digits are meant, only ASCII ones count. Raw sockets, because client libraries refuse to
send some of what is sent here (non-ASCII header bytes, for one).
"""

from __future__ import annotations

import json
import socket
import time
import uuid
from collections.abc import Callable, Iterator
from urllib.parse import quote

import jwt
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from support import ServerProcess

from bench import eventstream, rfc6455

SECRET = "odd-input-secret-" + uuid.uuid4().hex
DASHBOARD = "https://fleet.example.com"
QUERY_PARAMETERS = ("device_ids", "token", "bbox", "max_hz", "fields", "cursor", "since")
SSE_HEADERS = ("Authorization", "Last-Event-ID", "Accept", "Origin", "X-Forwarded-For")
WS_HEADERS = ("Authorization", "Origin", "X-Forwarded-For", "Sec-WebSocket-Protocol")

#: Anything, and text built of the characters that look like digits or numbers in some script,
#: with the punctuation numbers, times and boxes are written with.
odd_text = st.one_of(
    st.text(max_size=40),
    st.text(
        alphabet=st.one_of(st.characters(categories=["Nd", "No", "Nl"]), st.sampled_from("0123456789,.:-+eETZ ")),
        max_size=30,
    ),
)
#: A header value can hold no line break or other control character on the wire.
header_text = odd_text.map(lambda text: "".join(c for c in text if c.isprintable() or c == " "))

CHECKED = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def mint() -> str:
    return jwt.encode({"exp": int(time.time()) + 3600, "devices": "*"}, SECRET, algorithm="HS256")


@pytest.fixture(scope="module")
def server(module_server_factory: Callable[..., ServerProcess]) -> Iterator[ServerProcess]:
    """Tokens required, one origin allowed, the loopback a trusted proxy: every header read."""
    server = module_server_factory(
        "odd-input",
        STREAM_JWT_SECRET=SECRET,
        STREAM_ALLOWED_ORIGINS=DASHBOARD,
        STREAM_TRUSTED_PROXIES="127.0.0.1",
        LOG_LEVEL="DEBUG",
    )
    yield server
    log = server.log_path.read_text(errors="replace")
    assert "Traceback" not in log, log[log.index("Traceback") - 2000 :][:6000]


def exchange(
    server: ServerProcess,
    data: bytes,
    enough: Callable[[bytearray], bool],
    then: Callable[[bytearray], bytes] | None = None,
) -> bytes:
    """Send ``data`` on a new connection; what came back once ``enough`` says so, or the server
    closed, or 5 s passed. ``then(received)``, called once after each receipt until it answers
    bytes, says what to send next."""
    received = bytearray()
    with socket.create_connection((server.host, server.port), timeout=5) as sock:
        sock.sendall(data)
        deadline = time.monotonic() + 5
        while not enough(received) and time.monotonic() < deadline:
            try:
                chunk = sock.recv(65536)
            except TimeoutError:
                break
            if not chunk:
                break
            received += chunk
            if then is not None and (more := then(received)):
                sock.sendall(more)
                then = None
    return bytes(received)


def sse_answer(server: ServerProcess, target: str, headers: dict[str, str]) -> tuple[int, dict]:
    """The status and (for a refusal) the JSON body of an event-stream request."""
    lines = [f"GET {target} HTTP/1.1", f"Host: {server.host}:{server.port}"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    data = ("\r\n".join(lines) + "\r\n\r\n").encode()

    def enough(received: bytearray) -> bool:
        head = eventstream.take_head(bytearray(received))
        if head is None:
            return False
        if head.status == 200:
            return True
        return len(received) - len(head.raw) >= int(head.headers.get("content-length", "0"))

    received = bytearray(exchange(server, data, enough))
    head = eventstream.take_head(received)
    assert head is not None, f"no answer to {data!r}"
    if head.status == 200:
        assert head.headers["content-type"] == "text/event-stream"
        return 200, {}
    assert head.headers["content-type"] == "application/json", (head.raw, bytes(received))
    return head.status, json.loads(bytes(received[: int(head.headers["content-length"])]))


def check_sse(server: ServerProcess, target: str, headers: dict[str, str]) -> None:
    status, body = sse_answer(server, target, {"Accept": "text/event-stream", "Origin": DASHBOARD, **headers})
    assert status in (200, 400, 401, 403, 406), (status, body)
    if status != 200:
        assert isinstance(body["error"], str) and body["error"], body


def check_websocket(server: ServerProcess, target: str, headers: dict[str, str]) -> None:
    """The handshake is refused before it completes (403 for an origin), or it completes and the
    stream either stays open (it acknowledges a subscribe sent right after the handshake) or
    sends one error frame and closes 1008."""
    handshake = rfc6455.ClientHandshake(server.host, server.port, target)
    extra = "".join(f"{name}: {value}\r\n" for name, value in {"Origin": DASHBOARD, **headers}.items())
    probe = rfc6455.masked_frame(json.dumps({"action": "subscribe", "device_ids": ["probe"]}).encode())
    data = handshake.request[:-2] + extra.encode() + b"\r\n"

    def then(received: bytearray) -> bytes:
        """The probe, once the handshake is answered 101 (bytes sent before that void it)."""
        return probe if received.startswith(b"HTTP/1.1 101") and b"\r\n\r\n" in received else b""

    def enough(received: bytearray) -> bool:
        buffer = bytearray(received)
        head = rfc6455.take_head(buffer)
        if head is None:
            return False
        if not head.startswith(b"HTTP/1.1 101"):
            length = eventstream.take_head(bytearray(received)).headers.get("content-length", "0")
            return len(buffer) >= int(length)
        return any(
            first & 0x0F == rfc6455.OP_CLOSE or (first & 0x0F == rfc6455.OP_TEXT and b'"ack"' in payload)
            for first, payload in rfc6455.split_frames(buffer)
        )

    buffer = bytearray(exchange(server, data, enough, then))
    head = rfc6455.take_head(buffer)
    assert head is not None, f"no answer to {data!r}"
    if not head.startswith(b"HTTP/1.1 101"):
        status = head.split(b" ", 2)[1]
        if status == b"400":  # a handshake header that is not ASCII: Hypercorn's answer
            assert not headers.get("Sec-WebSocket-Protocol", "").isascii(), head
            return
        assert status == b"403" and b"origin" in buffer, (head, bytes(buffer))
        return
    frames = rfc6455.split_frames(buffer)
    assert frames, "neither an acknowledgement nor a refusal"
    first, text = frames[0]
    assert first & 0x0F == rfc6455.OP_TEXT, frames
    if json.loads(text)["event"] == "ack":  # admitted
        return
    assert json.loads(text)["event"] == "error" and json.loads(text)["data"]["message"], frames
    close, payload = frames[-1]
    assert close & 0x0F == rfc6455.OP_CLOSE and rfc6455.close_code(payload) == 1008, frames


def target(parameter: str, value: str) -> str:
    """The stream's path with ``parameter=value`` (percent-encoded as UTF-8), and a valid token
    unless the token is what is tried."""
    query = f"{parameter}={quote(value, safe='')}"
    if parameter != "token":
        query += f"&token={mint()}"
    return "/api/v1/stream?" + query


DIGITS = ("²", "①", "١٢٣", "1٢", "0,0,1,١", "٠.5", "1e٣", "2026-12-01T18:00:00Z²", "12\u00a0")


def with_digit_examples(test):
    for value in DIGITS:
        test = example(value=value)(test)
    return test


@pytest.mark.parametrize("parameter", QUERY_PARAMETERS)
def test_an_event_stream_answers_any_query_value_with_the_stream_or_a_json_refusal(server, parameter):
    @CHECKED
    @given(value=odd_text)
    @with_digit_examples
    def check(value: str) -> None:
        check_sse(server, target(parameter, value), {})

    check()


@pytest.mark.parametrize("parameter", QUERY_PARAMETERS)
def test_a_websocket_answers_any_query_value_with_the_stream_or_an_error_frame_and_1008(server, parameter):
    @CHECKED
    @given(value=odd_text)
    @with_digit_examples
    def check(value: str) -> None:
        check_websocket(server, target(parameter, value), {})

    check()


@pytest.mark.parametrize("header", SSE_HEADERS)
def test_an_event_stream_answers_any_header_value_with_the_stream_or_a_json_refusal(server, header):
    @CHECKED
    @given(value=header_text)
    @with_digit_examples
    def check(value: str) -> None:
        path = "/api/v1/stream" if header == "Authorization" else f"/api/v1/stream?token={mint()}"
        headers = {header: value}
        if header == "Authorization":
            headers[header] = "Bearer " + value
        check_sse(server, path, headers)

    check()


@pytest.mark.parametrize("header", WS_HEADERS)
def test_a_websocket_answers_any_header_value_with_the_stream_or_an_error_frame_and_1008(server, header):
    @CHECKED
    @given(value=header_text)
    @with_digit_examples
    def check(value: str) -> None:
        path = (
            "/api/v1/stream"
            if header in ("Authorization", "Sec-WebSocket-Protocol")
            else f"/api/v1/stream?token={mint()}"
        )
        headers = {header: value}
        if header == "Authorization":
            headers[header] = "Bearer " + value
        check_websocket(server, path, headers)

    check()


def test_digits_of_other_scripts_are_refused_where_digits_are_meant(server):
    """They parse in Python (``int("١٢")`` is 12): refused all the same, named in the error."""
    for parameter, value, named in (
        ("since", "١٧٠٠٠٠٠٠٠٠٠٠٠", "since"),
        ("since", "²", "since"),
        ("max_hz", "٥", "max_hz"),
        ("bbox", "0,0,1,١", "bbox"),
    ):
        status, body = sse_answer(
            server, target(parameter, value), {"Accept": "text/event-stream", "Origin": DASHBOARD}
        )
        assert status == 400 and named in body["error"], (parameter, value, body)
