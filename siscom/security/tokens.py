"""Who may watch which vehicles: bearer tokens (JWT) checked when a stream opens.

A dashboard's backend, which knows its user, mints a short-lived JWT and hands it to the browser;
the gateway only verifies it. The token says until when it is good (``exp``, required) and which
devices its holder may receive (``devices``: a list of ids, or ``"*"`` for every device, said
explicitly so that a forgotten claim never means "everything").

Browsers cannot set headers on a WebSocket, so a token is found in any of three places, in this
order: an ``Authorization: Bearer`` header, the ``Sec-WebSocket-Protocol`` header as the item
after ``bearer`` (``new WebSocket(url, ["bearer", token])``), or the ``token`` query parameter.

Nothing here ever puts a token in a message: :class:`TokenError` texts are safe to send to the
client and to log.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import jwt

from siscom.core.protocol import DEVICE_ID_PATTERN, BadRequest

__all__ = [
    "ALL_DEVICES",
    "MAX_TOKEN_CHARS",
    "SUBPROTOCOL",
    "Forbidden",
    "Grant",
    "TokenError",
    "TokenVerifier",
    "bearer_token",
    "find_token",
]

#: The ``devices`` claim value that grants every device.
ALL_DEVICES = "*"
#: The WebSocket subprotocol that announces a token as the next offered item.
SUBPROTOCOL = "bearer"
#: Longest token looked at; anything longer is refused before any parsing.
MAX_TOKEN_CHARS = 8192
#: Ids of a refused request listed back to the client, at most.
_SHOWN_IDS = 20


class TokenError(BadRequest):
    """No token, or one that is not acceptable; the message names the reason, never the token."""


class Forbidden(BadRequest):
    """A valid token, but the request asks for devices the token does not grant."""


@dataclass(frozen=True, slots=True)
class Grant:
    """What a verified token allows."""

    #: Device ids the holder may receive; ``None`` for every device (``"devices": "*"``).
    devices: frozenset[str] | None
    #: When the token stops being valid, in POSIX seconds.
    expires_at: float
    subject: str | None = None

    def narrow(self, requested: frozenset[str] | None) -> frozenset[str] | None:
        """The devices to stream for a request: ``None`` (no ``device_ids``) means "all of mine".

        Raises :class:`Forbidden` when the request names devices outside the grant, or when the
        grant holds no device at all.
        """
        if self.devices is None:
            return requested
        if not self.devices:
            raise Forbidden("the token grants no devices")
        if requested is None:
            return self.devices
        self.check(requested)
        return requested

    def check(self, device_ids: frozenset[str]) -> None:
        """Raise :class:`Forbidden` unless every id in ``device_ids`` is granted."""
        if self.devices is None:
            return
        outside = device_ids - self.devices
        if outside:
            raise Forbidden("device ids not allowed by the token", device_ids=sorted(outside)[:_SHOWN_IDS])


def bearer_token(authorization: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header, or ``None`` without one."""
    if not authorization:
        return None
    scheme, _, token = authorization.strip().partition(" ")
    if scheme.lower() != "bearer":
        raise TokenError("the Authorization header must use the Bearer scheme")
    return token.strip() or None


def find_token(authorization: str | None, subprotocols: Sequence[str], query_token: str | None) -> str | None:
    """The token a handshake carries, looking at the header, subprotocols, then the query."""
    token = bearer_token(authorization)
    if token is not None:
        return token
    if SUBPROTOCOL in subprotocols:
        index = subprotocols.index(SUBPROTOCOL)
        if index + 1 < len(subprotocols):
            return subprotocols[index + 1]
    return query_token or None


def _devices(claims: dict[str, Any]) -> frozenset[str] | None:
    if "devices" not in claims:
        raise TokenError('the token has no "devices" claim (a list of device ids, or "*")')
    devices = claims["devices"]
    if devices == ALL_DEVICES:
        return None
    if not isinstance(devices, list) or not all(
        isinstance(item, str) and DEVICE_ID_PATTERN.fullmatch(item) for item in devices
    ):
        raise TokenError('the token\'s "devices" claim must be "*" or a list of device ids')
    return frozenset(devices)


#: Latest expiry accepted (the last second of year 9999): a NumericDate beyond it is not a time
#: any clock will reach, and larger numbers no longer fit a float or a timer.
MAX_NUMERIC_DATE = 253_402_300_799
_TIME_CLAIMS = ("exp", "nbf", "iat")


def _check_times(claims: dict[str, Any]) -> None:
    """Time claims must be NumericDates (RFC 7519 section 2): JSON numbers of seconds, finite.

    PyJWT accepts anything ``int()`` takes (strings such as ``"1e3"`` fail, ``"123"`` passes, and
    10**400 passes its checks but overflows a float later); this service accepts only numbers.
    """
    for name in _TIME_CLAIMS:
        if name not in claims:
            continue
        value = claims[name]
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise TokenError(f'the token\'s "{name}" claim must be a number of seconds')
        if isinstance(value, float) and not math.isfinite(value):
            raise TokenError(f'the token\'s "{name}" claim must be a number of seconds')
        if not -MAX_NUMERIC_DATE <= value <= MAX_NUMERIC_DATE:
            raise TokenError(f'the token\'s "{name}" claim is out of range')


# Reasons told to clients, by PyJWT's exception type; the first match wins (subclasses first).
_REASONS: tuple[tuple[type[Exception], str], ...] = (
    (jwt.ExpiredSignatureError, "token expired"),
    (jwt.ImmatureSignatureError, "token not yet valid"),
    (jwt.InvalidAudienceError, "token audience not accepted"),
    (jwt.InvalidIssuerError, "token issuer not accepted"),
    (jwt.InvalidAlgorithmError, "token algorithm not accepted"),
    (jwt.InvalidSignatureError, "token signature not valid"),
    (jwt.DecodeError, "malformed token"),
)


class TokenVerifier:
    """Checks tokens against one key and algorithm, and optionally an audience and an issuer."""

    def __init__(
        self,
        key: Any,
        algorithm: str,
        *,
        audience: str | None = None,
        issuer: str | None = None,
    ) -> None:
        self._key = key
        self.algorithm = algorithm
        self._audience = audience
        self._issuer = issuer
        required = ["exp"] + (["aud"] if audience else []) + (["iss"] if issuer else [])
        self._options: Any = {"require": required}

    def __repr__(self) -> str:  # never the key
        return f"<TokenVerifier {self.algorithm} audience={self._audience!r} issuer={self._issuer!r}>"

    def verify(self, token: str | None) -> Grant:
        """The grant ``token`` carries; :class:`TokenError` saying why when there is none."""
        if not token:
            raise TokenError("a token is required")
        if len(token) > MAX_TOKEN_CHARS:
            raise TokenError(f"token too long (at most {MAX_TOKEN_CHARS} characters)")
        try:
            claims = jwt.decode(
                token,
                self._key,
                algorithms=[self.algorithm],
                audience=self._audience,
                issuer=self._issuer,
                options=self._options,
            )
        except jwt.MissingRequiredClaimError as error:
            raise TokenError(f'the token has no "{error.claim}" claim') from None
        except jwt.InvalidTokenError as error:
            reason = next((text for kind, text in _REASONS if isinstance(error, kind)), "token not valid")
            raise TokenError(reason) from None
        except (ValueError, TypeError, OverflowError, RecursionError):
            # Whatever PyJWT's own checks let through; a signed token is still only a request.
            raise TokenError("token claims not valid") from None
        _check_times(claims)
        subject = claims.get("sub")
        return Grant(
            devices=_devices(claims),
            expires_at=float(claims["exp"]),
            subject=subject if isinstance(subject, str) else None,
        )
