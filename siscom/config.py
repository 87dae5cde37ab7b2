"""Settings, read once at start-up from environment variables and an optional ``.env`` file.

Operators configure the service only through its environment, so a wrong value has to be caught
before anything starts, with a message that fits on one log line: which variable, what it held,
what is allowed. Every setting is declared once, as a field of :class:`Settings`; the field's
metadata carries its parser and its documentation, and both :meth:`Settings.from_env` and
:func:`describe_variables` (which feeds docs/configuration.md and ``.env.example``) read them from there.

Rules shared by every variable:

- The variable name is the field name in upper case: ``kafka_topic`` is read from ``KAFKA_TOPIC``.
- An empty or blank value means the same as an unset variable, so the default applies; for the
  optional settings the default is "none" (``STATSD_HOST=`` leaves metrics off).
- Surrounding blanks are ignored, except in ``KAFKA_USERNAME`` and ``KAFKA_PASSWORD``.
- Unknown variables are ignored.
- Secrets are never echoed back: an error about ``KAFKA_PASSWORD`` or ``STREAM_JWT_SECRET``
  shows ``'***'``.

:meth:`Settings.from_env` is the validating entry point; building :class:`Settings` directly or
through :meth:`Settings.replace` (as tests do) trusts the caller.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import math
import os
import re
import ssl
import urllib.parse
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from dotenv import dotenv_values

from siscom.core.peers import IPNetwork
from siscom.security.keys import MIN_SECRET_CHARS, load_public_key, read_public_key_text
from siscom.security.origins import ANY_ORIGIN, normalize_origin

__all__ = ["MAP_TILES_OFF", "ConfigError", "Settings", "describe_variables"]

_MASK = "***"
_SHOWN_CHARS = 100  # longer values are cut in messages so a log line stays readable
_INT32_MAX = 2**31 - 1  # Kafka's wire format carries the fetch sizes as int32


class ConfigError(Exception):
    """A variable holds a value the service cannot run with.

    ``str(error)`` is a single line, ``VARIABLE='value' is not valid: what is allowed``, meant to be
    printed as-is by the command line before it exits.
    """

    variable: str
    value: str
    allowed: str

    def __init__(self, variable: str, value: str, allowed: str, *, secret: bool = False) -> None:
        if secret and value:
            value = _MASK
        self.variable = variable
        self.value = value
        self.allowed = allowed
        shown = value if len(value) <= _SHOWN_CHARS else value[:_SHOWN_CHARS] + "..."
        # repr() escapes newlines and other control characters, which keeps the message one line.
        super().__init__(f"{variable}={shown!r} is not valid: {' '.join(allowed.split())}")


class _Invalid(ValueError):
    """Raised by a parser; :meth:`Settings.from_env` turns it into a :class:`ConfigError`."""


@dataclass(frozen=True, slots=True)
class _Spec:
    """How one variable is read and documented."""

    parse: Callable[[str], Any]
    allowed: str  # what a valid value looks like; shown in errors
    meaning: str  # what the setting does; shown in generated documentation
    secret: bool = False
    keep_blanks: bool = False


def _setting(
    default: Any,
    parse: Callable[[str], Any],
    allowed: str,
    meaning: str,
    *,
    secret: bool = False,
    keep_blanks: bool = False,
) -> Any:
    spec = _Spec(parse, allowed, meaning, secret=secret, keep_blanks=keep_blanks)
    return field(default=default, repr=not secret, metadata={"spec": spec})


# -- parsers: each takes the raw text and returns the value or raises _Invalid ---------------------

_DIGITS = re.compile(r"-?[0-9]{1,30}")
_DECIMAL = re.compile(r"(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]{1,4})?")
_HOST_NAME = re.compile(r"[A-Za-z0-9_-]+(?:\.[A-Za-z0-9_-]+)*\.?")
_TOPIC = re.compile(r"[A-Za-z0-9._-]{1,249}")
_CLIENT_ID = re.compile(r"[A-Za-z0-9._-]{1,200}")
_METRIC_PREFIX = re.compile(r"[A-Za-z0-9_-]+(?:\.[A-Za-z0-9_-]+)*")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
# Host names as a Content-Security-Policy source may spell them (no '_'), or IPv4 addresses.
_CSP_HOST = re.compile(r"[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*")
_TILE_PLACEHOLDERS = ("{z}", "{x}", "{y}")
# Characters that have no business in a tile URL and would need quoting in HTML or a header.
_URL_UNSAFE = re.compile(r"[\x00-\x20\x7f\"'<>\\^`|]")
MAP_TILES_OFF = "off"
"""The value of ``STREAM_MAP_TILE_URL`` that keeps the demo page offline (no tiles)."""
_TRUE = frozenset({"true", "1", "yes", "on"})
_FALSE = frozenset({"false", "0", "no", "off"})


def _one_of(*options: str) -> Callable[[str], str]:
    """Case-insensitive choice; the value is stored in the spelling given here."""
    canonical = {option.lower(): option for option in options}

    def parse(text: str) -> str:
        try:
            return canonical[text.lower()]
        except KeyError:
            raise _Invalid from None

    return parse


def _whole_number(low: int, high: int | None = None) -> Callable[[str], int]:
    def parse(text: str) -> int:
        if not _DIGITS.fullmatch(text):
            raise _Invalid
        number = int(text)
        if number < low or (high is not None and number > high):
            raise _Invalid
        return number

    return parse


def _non_negative(text: str) -> float:
    """A finite number, 0 or more (the pattern takes no sign): a rate, or a number of seconds,
    where 0 turns the limit or the timer off."""
    if not _DECIMAL.fullmatch(text):
        raise _Invalid
    number = float(text)
    if not math.isfinite(number):
        raise _Invalid
    return number


def _positive_seconds(text: str) -> float:
    seconds = _non_negative(text)
    if seconds <= 0:
        raise _Invalid
    return seconds


def _seconds_at_least(low: float) -> Callable[[str], float]:
    """A finite number of seconds, ``low`` or more: below it the service would spin or thrash."""

    def parse(text: str) -> float:
        seconds = _positive_seconds(text)
        if seconds < low:
            raise _Invalid
        return seconds

    return parse


def _boolean(text: str) -> bool:
    word = text.lower()
    if word in _TRUE:
        return True
    if word in _FALSE:
        return False
    raise _Invalid


def _host_name(text: str) -> bool:
    return len(text) <= 253 and _HOST_NAME.fullmatch(text) is not None


def _broker_address(item: str) -> str:
    host, colon, port = item.rpartition(":")
    if not colon or not re.fullmatch(r"[0-9]{1,5}", port) or not 1 <= int(port) <= 65535:
        raise _Invalid
    if host.startswith("[") and host.endswith("]"):
        try:
            ipaddress.IPv6Address(host[1:-1])
        except ValueError:
            raise _Invalid from None
    elif not _host_name(host):
        raise _Invalid
    return item


def _broker_list(text: str) -> tuple[str, ...]:
    items = [item.strip() for item in text.split(",")]
    addresses = tuple(_broker_address(item) for item in items if item)
    if not addresses:
        raise _Invalid
    return addresses


def _topic(text: str) -> str:
    if not _TOPIC.fullmatch(text) or text in {".", ".."}:
        raise _Invalid
    return text


def _client_id(text: str) -> str:
    if not _CLIENT_ID.fullmatch(text):
        raise _Invalid
    return text


def _credential(text: str) -> str:
    # SASL PLAIN separates its fields with NUL; no control character belongs in a credential.
    if _CONTROL.search(text):
        raise _Invalid
    return text


def _existing_file(text: str) -> str:
    if not os.path.isfile(text):
        raise _Invalid
    return text


def _statsd_host(text: str) -> str:
    if _host_name(text):
        return text
    try:
        ipaddress.ip_address(text)
    except ValueError:
        raise _Invalid from None
    return text


def _networks(text: str) -> tuple[IPNetwork, ...]:
    try:
        return tuple(ipaddress.ip_network(item.strip(), strict=False) for item in text.split(",") if item.strip())
    except ValueError:
        raise _Invalid from None


def _jwt_secret(text: str) -> str:
    if len(text) < MIN_SECRET_CHARS or _CONTROL.search(text):
        raise _Invalid
    return text


def _jwt_public_key(text: str) -> str:
    try:
        pem = read_public_key_text(text)
        load_public_key(pem)
    except (ValueError, OSError):
        raise _Invalid from None
    return pem


def _claim_value(text: str) -> str:
    if len(text) > 200 or _CONTROL.search(text):
        raise _Invalid
    return text


def _origins(text: str) -> tuple[str, ...]:
    items = [item.strip() for item in text.split(",") if item.strip()]
    if not items:
        raise _Invalid
    try:
        return tuple(item if item == ANY_ORIGIN else normalize_origin(item) for item in items)
    except ValueError:
        raise _Invalid from None


def _metric_prefix(text: str) -> str:
    if len(text) > 200 or not _METRIC_PREFIX.fullmatch(text):
        raise _Invalid
    return text


def _tile_url(text: str) -> str | None:
    if text.lower() == MAP_TILES_OFF:
        return None
    if len(text) > 2000 or _URL_UNSAFE.search(text):
        raise _Invalid
    parts = urllib.parse.urlsplit(text)
    try:
        _ = parts.port  # raises ValueError when out of range or not a number
    except ValueError:
        raise _Invalid from None
    host = parts.hostname or ""
    if (
        parts.scheme not in ("https", "http")
        or parts.username is not None
        or parts.fragment
        or not _CSP_HOST.fullmatch(host)
        or len(host) > 253
    ):
        raise _Invalid
    rest = parts.path + "?" + parts.query
    for placeholder in _TILE_PLACEHOLDERS:
        if rest.count(placeholder) != 1:
            raise _Invalid
        rest = rest.replace(placeholder, "")
    if "{" in rest or "}" in rest:
        raise _Invalid
    return text


_TOPIC_RULE = "a legal Kafka topic name: 1-249 characters of A-Z a-z 0-9 . _ - (not '.' or '..'; '/' is not allowed)"
_AT_LEAST_ONE = "a whole number, at least 1"
_BYTES = f"a whole number of bytes from 1 to {_INT32_MAX}"
_SASL_PROTOCOLS = ("SASL_PLAINTEXT", "SASL_SSL")


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything the service can be told from outside; see :func:`describe_variables`."""

    kafka_bootstrap_servers: tuple[str, ...] = _setting(
        ("localhost:9092",),
        _broker_list,
        "a comma-separated list of host:port (port 1-65535; IPv6 as [::1]:9092)",
        "Kafka brokers to bootstrap from",
    )
    kafka_topic: str = _setting(
        "tracking-data",
        _topic,
        _TOPIC_RULE,
        "topic with the position records, sent to clients as 'message' frames",
    )
    kafka_alerts_topic: str | None = _setting(
        None,
        _topic,
        _TOPIC_RULE + "; empty for none",
        "optional topic whose records are sent to clients as 'alert' frames",
    )
    kafka_snapshot_topic: str | None = _setting(
        None,
        _topic,
        _TOPIC_RULE + "; empty for none",
        "optional last-positions topic (keyed by device id, values as in KAFKA_TOPIC, compacted; kept "
        "by `siscom snapshot-writer`), read from its beginning at start for vehicles silent longer "
        "than the lookback",
    )
    kafka_group_id: str = _setting(
        "siscom-stream",
        _client_id,
        "1-200 characters of A-Z a-z 0-9 . _ -",
        "prefix of the Kafka client id (no consumer group is joined: every replica reads every partition)",
    )
    kafka_auto_offset_reset: str = _setting(
        "latest",
        _one_of("latest", "earliest"),
        "one of latest, earliest",
        "where a partition is first read from when the gateway starts with no offset for it, with "
        "warm-up off (with it, live reading starts where warm-up ended: see docs/warm-start.md); "
        "also where a partition restarts whose offset left the log",
    )
    kafka_security_protocol: str = _setting(
        "PLAINTEXT",
        _one_of("PLAINTEXT", "SASL_PLAINTEXT", "SASL_SSL", "SSL"),
        "one of PLAINTEXT, SASL_PLAINTEXT, SASL_SSL, SSL",
        "how to talk to the brokers",
    )
    kafka_sasl_mechanism: str = _setting(
        "PLAIN",
        _one_of("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"),
        "one of PLAIN, SCRAM-SHA-256, SCRAM-SHA-512",
        "SASL mechanism, used with the SASL_* protocols",
    )
    kafka_username: str | None = _setting(
        None,
        _credential,
        "a user name without control characters; empty for none",
        "SASL user name; needs KAFKA_PASSWORD and a SASL_* protocol",
        keep_blanks=True,
    )
    kafka_password: str | None = _setting(
        None,
        _credential,
        "a password without control characters; empty for none",
        "SASL password (never logged)",
        secret=True,
        keep_blanks=True,
    )
    kafka_ssl_cafile: str | None = _setting(
        None,
        _existing_file,
        "the path of an existing file; empty for none",
        "CA bundle (PEM) to verify the brokers with, instead of the system's",
    )
    kafka_ssl_certfile: str | None = _setting(
        None,
        _existing_file,
        "the path of an existing file; empty for none",
        "client certificate (PEM) for mutual TLS",
    )
    kafka_ssl_keyfile: str | None = _setting(
        None,
        _existing_file,
        "the path of an existing file; empty for none",
        "private key (PEM) of the client certificate",
    )
    kafka_fetch_max_wait_ms: int = _setting(
        100,
        _whole_number(10, 60000),
        "a whole number of milliseconds from 10 to 60000 (less makes an idle gateway and its broker "
        "poll each other in a busy loop; Kafka answers at once anyway when data waits)",
        "longest time the broker may hold a fetch waiting for data (bounds latency)",
    )
    kafka_fetch_min_bytes: int = _setting(
        1,
        _whole_number(1, _INT32_MAX),
        _BYTES,
        "data the broker waits for before answering a fetch",
    )
    kafka_fetch_max_bytes: int = _setting(
        52428800,
        _whole_number(1, _INT32_MAX),
        _BYTES,
        "most data returned by one fetch",
    )
    kafka_max_partition_fetch_bytes: int = _setting(
        1048576,
        _whole_number(1, _INT32_MAX),
        _BYTES,
        "most data returned per partition by one fetch",
    )
    kafka_max_poll_records: int = _setting(
        2000,
        _whole_number(1),
        _AT_LEAST_ONE,
        "most records handed down the pipeline in one batch",
    )
    kafka_reconnect_backoff_max_seconds: float = _setting(
        5.0,
        _seconds_at_least(0.1),
        "a number of seconds, at least 0.1 (less retries an absent broker in a busy loop)",
        "cap of the exponential backoff between attempts to reach the brokers",
    )
    stream_keepalive_seconds: float = _setting(
        60.0,
        _seconds_at_least(0.1),
        "a number of seconds, at least 0.1 (less spends the server's CPU on pings)",
        "interval of the keep-alive 'ping' frames",
    )
    stream_max_device_ids: int = _setting(
        1000,
        _whole_number(1),
        _AT_LEAST_ONE,
        "most device ids one client may subscribe to",
    )
    stream_snapshot: bool = _setting(
        True,
        _boolean,
        "true or false (also 1/0, yes/no, on/off)",
        "send a new client the last known position of each of its devices",
    )
    stream_max_fields: int = _setting(
        50,
        _whole_number(1, 1000),
        "a whole number from 1 to 1000",
        "most names a client may give in 'fields' (field selection of position frames)",
    )
    stream_max_hz: int = _setting(
        50,
        _whole_number(1, 1000),
        "a whole number from 1 to 1000",
        "highest 'max_hz' (position frames per second per device) a client may ask for",
    )
    stream_max_record_bytes: int = _setting(
        1048576,
        _whole_number(1),
        _AT_LEAST_ONE,
        "largest record value accepted, in bytes; larger ones are skipped as malformed",
    )
    stream_max_pending_frames: int = _setting(
        1000,
        _whole_number(1),
        _AT_LEAST_ONE,
        "frames that cannot be conflated (alerts) a client may have waiting before it is closed with 1013",
    )
    stream_trusted_proxies: tuple[IPNetwork, ...] = _setting(
        (),
        _networks,
        "comma-separated IP addresses or networks (CIDR), e.g. 127.0.0.1,10.0.0.0/8",
        "proxies whose X-Forwarded-For header is believed when finding a client's address",
    )
    stream_send_timeout_seconds: float = _setting(
        30.0,
        _seconds_at_least(1.0),
        "a number of seconds, at least 1 (less closes healthy clients on a passing stall, such as "
        "a garbage-collector pause)",
        "longest a write to one client may stall before that client is closed with 1013",
    )
    stream_coalesce_writes: bool = _setting(
        True,
        _boolean,
        "true or false (also 1/0, yes/no, on/off)",
        "write the frames waiting for a client in one write, from the event-loop turn after they "
        "were routed, below ASGI (Hypercorn over HTTP/1.1 only; WebSocket and SSE); false writes "
        "through ASGI (a WebSocket frame, or an SSE chunk, per ASGI message) and leaves "
        "Hypercorn's own queue of each connection in place",
    )
    stream_write_delay_milliseconds: int = _setting(
        0,
        _whole_number(0, 1000),
        "a whole number of milliseconds, 0 to 1000",
        "how long frames routed to clients wait to be written, so that those of several batches "
        "leave in one write per client (fewer system calls, less CPU per delivery, latency up by "
        "as much); 0 writes in the event-loop turn after each batch. With write coalescing only",
    )
    stream_websocket_compression: str = _setting(
        "shared",
        _one_of("shared", "off", "server"),
        "one of shared, off, server",
        "permessage-deflate for WebSocket clients that offer it (every browser does): shared "
        "compresses each frame once, on its own, for every client that gets it (Hypercorn over "
        "HTTP/1.1; elsewhere the server's own); off declines every offer; server leaves the offer "
        "to the server (Hypercorn compresses each frame again for each client)",
    )
    stream_sse_retry_milliseconds: int = _setting(
        3000,
        _whole_number(0, 3600000),
        "a whole number of milliseconds, 0 to 3600000",
        "reconnect delay sent to Server-Sent Events clients in the stream's first 'retry:' line "
        "(EventSource waits this long before it reconnects with Last-Event-ID)",
    )
    stream_close_linger_seconds: float = _setting(
        5.0,
        _positive_seconds,
        "a number of seconds greater than 0",
        "longest a connection stays open after its stream ended (close frame not yet read, or not "
        "answered): then the TCP connection is dropped, whether or not the client reads",
    )
    stream_replay_max_seconds: float = _setting(
        3600.0,
        _seconds_at_least(1.0),
        "a number of seconds, at least 1",
        "how far back a client may ask to replay with ?since= (further back is refused with 1008)",
    )
    stream_replay_window_records: int = _setting(
        50000,
        _whole_number(0),
        "a whole number; 0 keeps no window (every resume reads Kafka)",
        "records of the recent-records window each process keeps to serve resumes without Kafka",
    )
    stream_replay_window_bytes: int = _setting(
        67108864,
        _whole_number(0),
        "a whole number of bytes; 0 keeps no window",
        "most frame bytes the recent-records window holds (whichever bound is reached first)",
    )
    stream_snapshot_lookback_seconds: float = _setting(
        3600.0,
        _non_negative,
        "a number of seconds, 0 or more; 0 turns warm-up off",
        "at start, read this much of the log back (every partition, up to the end found at start) "
        "into the snapshot and the recent-records window before /ready says ready",
    )
    stream_snapshot_write_seconds: float = _setting(
        60.0,
        _positive_seconds,
        "a number of seconds greater than 0",
        "`siscom snapshot-writer`: writes each device's newest position to KAFKA_SNAPSHOT_TOPIC at "
        "most once per this many seconds",
    )
    stream_replay_concurrency: int = _setting(
        64,
        _whole_number(1, 10000),
        "a whole number from 1 to 10000",
        "replays (resumes with cursor or since) one process runs at once; more wait their turn",
    )
    stream_replay_wait_seconds: float = _setting(
        10.0,
        _non_negative,
        "a number of seconds, 0 or more (0: a resume never waits for a turn)",
        "longest a resume waits for its turn to replay; past it the stream opens with "
        "recovered:false, then the snapshot and live",
    )
    stream_replay_max_records: int = _setting(
        50000,
        _whole_number(1),
        _AT_LEAST_ONE,
        "most records one replay may cost (the log's records between its cursor and where this "
        "process has read, every partition); further behind, the stream opens with "
        "recovered:false, then the snapshot and live",
    )
    stream_jwt_secret: str | None = _setting(
        None,
        _jwt_secret,
        "at least 32 characters; empty for none",
        "shared secret that verifies client tokens (HS256); when set, every stream and the stats "
        "need a token (never logged)",
        secret=True,
    )
    stream_jwt_public_key: str | None = _setting(
        None,
        _jwt_public_key,
        "a PEM public key (RSA of 2048 bits or more: RS256; EC P-256: ES256), as PEM text (newlines "
        "may be written \\n) or the path of a PEM file; empty for none",
        "public key that verifies client tokens; when set, every stream and the stats need a "
        "token (instead of STREAM_JWT_SECRET)",
    )
    stream_jwt_audience: str | None = _setting(
        None,
        _claim_value,
        "1-200 characters; empty for none",
        "when set, tokens must carry this 'aud' claim",
    )
    stream_jwt_issuer: str | None = _setting(
        None,
        _claim_value,
        "1-200 characters; empty for none",
        "when set, tokens must carry this 'iss' claim",
    )
    stream_token_notice_seconds: float = _setting(
        60.0,
        _non_negative,
        "a number of seconds, 0 or more; 0 for never",
        "how long before a client's token expires the stream sends it a 'token-expiring' frame "
        "(the client may then answer with a new token to keep the stream)",
    )
    stream_allowed_origins: tuple[str, ...] = _setting(
        ("*",),
        _origins,
        "'*' for any, or a comma-separated list of origins such as https://fleet.example.com",
        "web pages (the browser's Origin header) that may open a stream; others get 403",
    )
    stream_max_connections: int = _setting(
        10000,
        _whole_number(0),
        "a whole number; 0 for no limit",
        "most streams one process holds open; past it new clients are closed with 1013",
    )
    stream_max_connections_per_ip: int = _setting(
        0,
        _whole_number(0),
        "a whole number; 0 for no limit",
        "most streams one process holds open per client address (see STREAM_TRUSTED_PROXIES); "
        "past it new clients from that address are closed with 1013",
    )
    stream_client_messages_per_second: float = _setting(
        10.0,
        _non_negative,
        "a number of messages per second; 0 for no limit",
        "messages (subscribe, unsubscribe, anything) one client may send, on average; past "
        "STREAM_CLIENT_MESSAGE_BURST more it is closed with 1008 'too many messages'",
    )
    stream_client_message_burst: int = _setting(
        50,
        _whole_number(1),
        _AT_LEAST_ONE,
        "messages one client may send at once beyond STREAM_CLIENT_MESSAGES_PER_SECOND",
    )
    stream_client_pings_per_second: float = _setting(
        10.0,
        _non_negative,
        "a number of frames per second; 0 for no limit",
        "WebSocket pings and pongs one client may send, on average; past "
        "STREAM_CLIENT_PING_BURST more it is closed with 1008 'too many messages' (see "
        "STREAM_WATCH_CONTROL_FRAMES)",
    )
    stream_client_ping_burst: int = _setting(
        50,
        _whole_number(1),
        _AT_LEAST_ONE,
        "pings and pongs one client may send at once beyond STREAM_CLIENT_PINGS_PER_SECOND",
    )
    stream_watch_control_frames: bool = _setting(
        True,
        _boolean,
        "true or false (also 1/0, yes/no, on/off)",
        "count each client's pings and pongs, which Hypercorn answers below the application, by "
        "looking into Hypercorn's connection; false turns that off (and the ping limit with it)",
    )
    stream_max_subscribed_ids: int = _setting(
        2000000,
        _whole_number(0),
        "a whole number; 0 for no limit",
        "most device ids all streams of one process may subscribe to together (a stream of every "
        "device counts as one); past it new subscriptions are closed with 1013",
    )
    stream_shed_lag_seconds: float = _setting(
        0.1,
        _non_negative,
        "a number of seconds; 0 turns shedding off",
        "mean event-loop lag that means overload: once the mean over STREAM_SHED_AFTER_SECONDS "
        "reaches it, the clients with frames waiting that cost the most work per second are "
        "closed with 1013, a quarter at a time, until it falls back",
    )
    stream_shed_after_seconds: float = _setting(
        5.0,
        _positive_seconds,
        "a number of seconds greater than 0",
        "the window over which event-loop lag is averaged before clients are shed",
    )
    stream_handshakes_per_second_per_ip: float = _setting(
        0.0,
        _non_negative,
        "a number of handshakes per second; 0 for no limit",
        "stream handshakes one client address may make, on average (see STREAM_TRUSTED_PROXIES); "
        "past STREAM_HANDSHAKE_BURST_PER_IP more they are answered 429",
    )
    stream_handshake_burst_per_ip: int = _setting(
        20,
        _whole_number(1),
        _AT_LEAST_ONE,
        "handshakes one address may make at once beyond STREAM_HANDSHAKES_PER_SECOND_PER_IP",
    )
    stream_map_tile_url: str | None = _setting(
        "https://tile.openstreetmap.org/{z}/{x}/{y}.png",
        _tile_url,
        "an http:// or https:// URL (host name or IPv4 address, optional port) whose path or "
        "query holds {z}, {x} and {y} once each and no other {...}; or 'off'",
        "raster tiles under the demo page's map; the page's Content-Security-Policy allows images "
        "from this URL's origin only; 'off' draws the vehicles on a plain grid without tiles",
    )
    log_level: str = _setting(
        "INFO",
        _one_of("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"),
        "one of DEBUG, INFO, WARNING, ERROR, CRITICAL",
        "least severe log level written",
    )
    log_format: str = _setting(
        "text",
        _one_of("text", "json"),
        "one of text, json",
        "log lines as plain text or as one JSON object each",
    )
    statsd_host: str | None = _setting(
        None,
        _statsd_host,
        "a host name or IP address; empty for none",
        "StatsD server; metrics are off when unset",
    )
    statsd_port: int = _setting(
        8125,
        _whole_number(1, 65535),
        "a whole number from 1 to 65535",
        "StatsD UDP port",
    )
    statsd_prefix: str = _setting(
        "siscom",
        _metric_prefix,
        "letters, digits, '_' and '-', in parts joined by single dots",
        "prefix of every metric name",
    )
    metrics_access: str = _setting(
        "auto",
        _one_of("auto", "open", "token"),
        "one of auto, open, token",
        "who may read GET /metrics (Prometheus): 'open' anyone who reaches the port, 'token' any "
        "valid client token (as the stats), 'auto' the same as the stats (a token when "
        "STREAM_JWT_SECRET or STREAM_JWT_PUBLIC_KEY is set, else open)",
    )
    metrics_bind: str | None = _setting(
        None,
        _broker_address,
        "HOST:PORT (port 1-65535; IPv6 as [::1]:9100); empty for none",
        "a second address where GET /metrics is served, alone: it is then no longer served on the "
        "main address, and nothing else is served on this one (by siscom serve)",
    )

    @classmethod
    def from_env(
        cls,
        environ: Mapping[str, str] | None = None,
        env_file: str | os.PathLike[str] | None = ".env",
    ) -> Settings:
        """Read and check every setting; raise :class:`ConfigError` on the first bad value.

        ``environ`` defaults to ``os.environ``. Values from ``env_file``, when that file exists,
        are overridden by ``environ``, so a deployment can always correct a stale ``.env``.
        """
        source: dict[str, str] = {}
        if env_file is not None and os.path.isfile(env_file):
            source.update((k, v) for k, v in dotenv_values(env_file).items() if v is not None)
        source.update(os.environ if environ is None else environ)

        values: dict[str, Any] = {}
        for setting in dataclasses.fields(cls):
            spec: _Spec = setting.metadata["spec"]
            variable = setting.name.upper()
            raw = source.get(variable)
            if raw is None or not raw.strip():
                continue
            try:
                values[setting.name] = spec.parse(raw if spec.keep_blanks else raw.strip())
            except _Invalid:
                raise ConfigError(variable, raw, spec.allowed, secret=spec.secret) from None
        settings = cls(**values)
        _check_combinations(settings)
        return settings

    def replace(self, **changes: Any) -> Settings:
        """A copy with some fields changed (not validated)."""
        return dataclasses.replace(self, **changes)

    @property
    def tokens_on(self) -> bool:
        """Whether client tokens are checked (a key to verify them is set)."""
        return self.stream_jwt_secret is not None or self.stream_jwt_public_key is not None

    @property
    def metrics_need_token(self) -> bool:
        """Whether ``GET /metrics`` asks for a token, after ``METRICS_ACCESS=auto`` is resolved."""
        if self.metrics_access == "auto":
            return self.tokens_on
        return self.metrics_access == "token"

    @property
    def metrics_port(self) -> int | None:
        """The port of ``METRICS_BIND``, or None when /metrics is on the main address."""
        if self.metrics_bind is None:
            return None
        return int(self.metrics_bind.rpartition(":")[2])

    @property
    def topics(self) -> tuple[str, ...]:
        """Every topic the consumer reads: the position topic, then the alerts topic if set."""
        if self.kafka_alerts_topic is None:
            return (self.kafka_topic,)
        return (self.kafka_topic, self.kafka_alerts_topic)


def _check_combinations(settings: Settings) -> None:
    """Rules that involve more than one variable; each error names the variable to fix."""
    protocol = settings.kafka_security_protocol
    if settings.kafka_username is not None:
        if settings.kafka_password is None:
            raise ConfigError("KAFKA_PASSWORD", "", "required when KAFKA_USERNAME is set")
        if protocol not in _SASL_PROTOCOLS:
            raise ConfigError(
                "KAFKA_SECURITY_PROTOCOL",
                protocol,
                "SASL_PLAINTEXT or SASL_SSL when KAFKA_USERNAME is set",
            )
    elif settings.kafka_password is not None:
        raise ConfigError("KAFKA_USERNAME", "", "required when KAFKA_PASSWORD is set")
    elif protocol in _SASL_PROTOCOLS:
        raise ConfigError("KAFKA_USERNAME", "", f"required when KAFKA_SECURITY_PROTOCOL is {protocol}")
    if settings.kafka_alerts_topic == settings.kafka_topic:
        raise ConfigError(
            "KAFKA_ALERTS_TOPIC",
            settings.kafka_alerts_topic,
            "a topic other than KAFKA_TOPIC, or empty for none",
        )
    if settings.kafka_snapshot_topic is not None and settings.kafka_snapshot_topic in settings.topics:
        raise ConfigError(
            "KAFKA_SNAPSHOT_TOPIC",
            settings.kafka_snapshot_topic,
            "a topic other than KAFKA_TOPIC and KAFKA_ALERTS_TOPIC, or empty for none",
        )
    _check_kafka_tls(settings)
    _check_stream_tokens(settings)
    if settings.metrics_access == "token" and not settings.tokens_on:
        raise ConfigError(
            "METRICS_ACCESS",
            "token",
            "auto or open unless STREAM_JWT_SECRET or STREAM_JWT_PUBLIC_KEY is set (no token could be checked)",
        )


def _check_kafka_tls(settings: Settings) -> None:
    """With a TLS protocol, the TLS files must load: the consumer would crash on them later.

    (Files given with a plaintext protocol are not used; the gateway warns about them at start.)
    """
    if not settings.kafka_security_protocol.endswith("SSL"):
        return
    if settings.kafka_ssl_keyfile is not None and settings.kafka_ssl_certfile is None:
        raise ConfigError("KAFKA_SSL_CERTFILE", "", "required when KAFKA_SSL_KEYFILE is set")
    context = ssl.create_default_context()
    if settings.kafka_ssl_cafile is not None:
        try:
            context.load_verify_locations(cafile=settings.kafka_ssl_cafile)
        except (ssl.SSLError, ValueError):
            raise ConfigError("KAFKA_SSL_CAFILE", settings.kafka_ssl_cafile, "a file of PEM certificates") from None
    if settings.kafka_ssl_certfile is not None:
        try:
            context.load_cert_chain(settings.kafka_ssl_certfile, settings.kafka_ssl_keyfile)
        except (ssl.SSLError, ValueError):
            raise ConfigError(
                "KAFKA_SSL_CERTFILE",
                settings.kafka_ssl_certfile,
                "a PEM certificate whose private key is in KAFKA_SSL_KEYFILE (or in the same file), not encrypted",
            ) from None


def _check_stream_tokens(settings: Settings) -> None:
    """One way to verify tokens; claims to check without a key are a mistake, not a policy."""
    if settings.stream_jwt_secret is not None and settings.stream_jwt_public_key is not None:
        raise ConfigError("STREAM_JWT_PUBLIC_KEY", "(set)", "empty when STREAM_JWT_SECRET is set: choose one")
    if settings.stream_jwt_secret is None and settings.stream_jwt_public_key is None:
        for variable, value in (
            ("STREAM_JWT_AUDIENCE", settings.stream_jwt_audience),
            ("STREAM_JWT_ISSUER", settings.stream_jwt_issuer),
        ):
            if value is not None:
                raise ConfigError(
                    variable,
                    value,
                    "empty unless STREAM_JWT_SECRET or STREAM_JWT_PUBLIC_KEY is set (tokens "
                    "would not be checked at all)",
                )


def _default_text(value: Any) -> str:
    """The default written the way the variable would be set; it parses back to the default."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, tuple):
        return ",".join(value)
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def describe_variables() -> list[tuple[str, str, str]]:
    """``(VARIABLE, default as text, meaning — allowed values)`` for every setting, in order."""
    rows = []
    for setting in dataclasses.fields(Settings):
        spec: _Spec = setting.metadata["spec"]
        described = f"{spec.meaning} — {spec.allowed}"
        rows.append((setting.name.upper(), _default_text(setting.default), described))
    return rows
