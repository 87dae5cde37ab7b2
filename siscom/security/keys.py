"""Public keys that verify client tokens, and the one signature algorithm each allows.

An operator gives the key either as PEM text in ``STREAM_JWT_PUBLIC_KEY`` or as the path of a PEM
file. The key's type fixes the algorithm (RSA: RS256, EC P-256: ES256), so a token cannot pick a
weaker or different one for itself; that is the classic "algorithm confusion" hole, closed here
by never letting the token's header choose.
"""

from __future__ import annotations

import os

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

__all__ = ["MIN_RSA_BITS", "MIN_SECRET_CHARS", "PublicKey", "load_public_key", "read_public_key_text"]

#: Shortest RSA modulus accepted (NIST SP 800-131A).
MIN_RSA_BITS = 2048
#: Shortest HS256 secret accepted: RFC 7518 wants a key at least as long as the hash (256 bits).
MIN_SECRET_CHARS = 32

PublicKey = rsa.RSAPublicKey | ec.EllipticCurvePublicKey
_PEM_START = "-----BEGIN"


def read_public_key_text(value: str) -> str:
    """The PEM text ``value`` holds, or the text of the file it names.

    Environment variables rarely carry newlines well, so a PEM value may also be written on one
    line with literal ``\\n`` escapes. Raises :class:`ValueError` when neither fits.
    """
    text = value.strip()
    if text.startswith(_PEM_START):
        return text.replace("\\n", "\n") if "\n" not in text else text
    if not os.path.isfile(text):
        raise ValueError("neither PEM text nor the path of an existing file")
    with open(text, encoding="ascii", errors="replace") as file:
        return file.read()


def load_public_key(pem: str) -> tuple[PublicKey, str]:
    """The key in ``pem`` and the algorithm it verifies; :class:`ValueError` if it is unusable."""
    try:
        key = serialization.load_pem_public_key(pem.encode("ascii", errors="replace"))
    except (ValueError, TypeError) as error:
        raise ValueError("not a PEM public key") from error
    if isinstance(key, rsa.RSAPublicKey):
        if key.key_size < MIN_RSA_BITS:
            raise ValueError(f"an RSA key of {key.key_size} bits; at least {MIN_RSA_BITS} are required")
        return key, "RS256"
    if isinstance(key, ec.EllipticCurvePublicKey):
        if not isinstance(key.curve, ec.SECP256R1):
            raise ValueError(f"an EC key on {key.curve.name}; ES256 needs P-256 (secp256r1)")
        return key, "ES256"
    raise ValueError(f"a {type(key).__name__}; only RSA (RS256) and EC P-256 (ES256) keys are supported")
