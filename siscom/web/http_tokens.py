"""The token check of the plain HTTP routes that need one (the stats, ``/metrics``).

They take a client token as the streams do: an ``Authorization: Bearer`` header, or ``?token=``.
"""

from __future__ import annotations

from quart import request

from siscom.gateway import Gateway
from siscom.metrics import Metric
from siscom.security.tokens import TokenError, bearer_token

NO_STORE = {"Cache-Control": "no-store"}


def token_refusal(gateway: Gateway) -> tuple[dict[str, str], int, dict[str, str]] | None:
    """None if the request carries a valid token; else the 401 answer, the failure counted."""
    try:
        token = bearer_token(request.headers.get("Authorization")) or request.args.get("token")
        gateway.guard.authenticate(token)
    except TokenError as error:
        gateway.metrics.incr(Metric.AUTH_FAILURES)
        challenge = {"WWW-Authenticate": 'Bearer error="invalid_token"'}
        return {"error": error.message}, 401, {**NO_STORE, **challenge}
    return None
