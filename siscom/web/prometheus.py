"""``GET /metrics``: the registry's metrics in Prometheus' text format (see :mod:`siscom.prometheus`).

Who may read it is ``METRICS_ACCESS``: ``open``, ``token`` (any valid client token, taken as the
stats take it: an ``Authorization: Bearer`` header or ``?token=``), or ``auto``, the stats' own
rule (a token exactly when tokens are on).
"""

from __future__ import annotations

from quart import Blueprint, Response, request

from siscom.gateway import Gateway
from siscom.metrics import Metric
from siscom.security.tokens import TokenError, bearer_token

NO_STORE = {"Cache-Control": "no-store"}


def prometheus_blueprint(gateway: Gateway) -> Blueprint:
    blueprint = Blueprint("prometheus", __name__)
    need_token = gateway.settings.metrics_need_token

    @blueprint.get("/metrics")
    async def metrics():
        if need_token:
            try:
                token = bearer_token(request.headers.get("Authorization")) or request.args.get("token")
                gateway.guard.authenticate(token)
            except TokenError as error:
                gateway.metrics.incr(Metric.AUTH_FAILURES)
                challenge = {"WWW-Authenticate": 'Bearer error="invalid_token"'}
                return {"error": error.message}, 401, {**NO_STORE, **challenge}
        body, content_type = gateway.metrics.prometheus.exposition(request.headers.get("Accept"))
        return Response(body, status=200, content_type=content_type, headers=NO_STORE)

    return blueprint
