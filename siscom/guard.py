"""The security checks of one gateway process, built once from its settings.

It stands above :mod:`siscom.security` and :mod:`siscom.config`: the configuration validates keys
and origins with the security package's parsers, and the guard builds the security package's
checks from the configuration, so neither package imports the other in a circle.

The gateway owns one :class:`Guard`; the routes ask it, in this order, whether a handshake's
origin is allowed, whether a connection slot is free, and what the client's token grants.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from siscom.security.handshakes import HandshakeLimiter
from siscom.security.inbound import InboundRates
from siscom.security.keys import load_public_key
from siscom.security.limits import ConnectionLimiter
from siscom.security.origins import OriginPolicy
from siscom.security.tokens import Grant, TokenVerifier

if TYPE_CHECKING:
    from siscom.config import Settings

__all__ = ["Guard"]


class Guard:
    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self.verifier = _verifier(settings)
        self.origins = OriginPolicy(settings.stream_allowed_origins)
        self.limiter = ConnectionLimiter(settings.stream_max_connections, settings.stream_max_connections_per_ip)
        #: Handshakes per address over time; None when STREAM_HANDSHAKES_PER_SECOND_PER_IP is 0.
        self.handshakes = (
            HandshakeLimiter(settings.stream_handshakes_per_second_per_ip, settings.stream_handshake_burst_per_ip)
            if settings.stream_handshakes_per_second_per_ip > 0
            else None
        )
        #: What each client may send once connected.
        self.inbound = InboundRates(
            messages_per_second=settings.stream_client_messages_per_second,
            message_burst=settings.stream_client_message_burst,
            pings_per_second=settings.stream_client_pings_per_second if settings.stream_watch_control_frames else 0.0,
            ping_burst=settings.stream_client_ping_burst,
        )

    @property
    def auth_required(self) -> bool:
        return self.verifier is not None

    def authenticate(self, token: str | None) -> Grant | None:
        """The token's grant; ``None`` when no token is required. Raises ``TokenError``."""
        if self.verifier is None:
            return None
        return self.verifier.verify(token)

    def log_posture(self, logger: logging.Logger) -> None:
        """Say once, at start, how streams are protected, and warn about what is left open."""
        settings = self._settings
        tokens = f"required ({self.verifier.algorithm})" if self.verifier else "not required"
        origins = "any" if self.origins.any else ",".join(settings.stream_allowed_origins)
        logger.info(
            "Streams: tokens %s; origins %s; at most %s connections, %s per address, %s handshakes/s "
            "per address; %s messages/s and %s pings/s per client",
            tokens,
            origins,
            settings.stream_max_connections or "unlimited",
            settings.stream_max_connections_per_ip or "unlimited",
            settings.stream_handshakes_per_second_per_ip or "unlimited",
            settings.stream_client_messages_per_second or "unlimited",
            (settings.stream_client_pings_per_second if settings.stream_watch_control_frames else 0) or "unlimited",
        )
        if self.verifier is None:
            logger.warning(
                "Anyone who can reach this port may watch every vehicle: "
                "set STREAM_JWT_SECRET or STREAM_JWT_PUBLIC_KEY to require tokens"
            )
        tls_files = [
            name
            for name in ("kafka_ssl_cafile", "kafka_ssl_certfile", "kafka_ssl_keyfile")
            if getattr(settings, name) is not None
        ]
        if tls_files and not settings.kafka_security_protocol.endswith("SSL"):
            logger.warning(
                "%s set, but KAFKA_SECURITY_PROTOCOL=%s: the connection to Kafka is not encrypted",
                ", ".join(name.upper() for name in tls_files),
                settings.kafka_security_protocol,
            )
        if settings.kafka_security_protocol == "SASL_PLAINTEXT" and settings.kafka_sasl_mechanism == "PLAIN":
            logger.warning(
                "KAFKA_SECURITY_PROTOCOL=SASL_PLAINTEXT with PLAIN sends the Kafka password "
                "unencrypted; prefer SASL_SSL"
            )


def _verifier(settings: Settings) -> TokenVerifier | None:
    """The verifier the settings ask for, or ``None`` when streams need no token."""
    audience, issuer = settings.stream_jwt_audience, settings.stream_jwt_issuer
    if settings.stream_jwt_secret is not None:
        return TokenVerifier(settings.stream_jwt_secret.encode(), "HS256", audience=audience, issuer=issuer)
    if settings.stream_jwt_public_key is not None:
        key, algorithm = load_public_key(settings.stream_jwt_public_key)
        return TokenVerifier(key, algorithm, audience=audience, issuer=issuer)
    return None
