"""``GET /metrics``: the registry's metrics in Prometheus' text format (see :mod:`siscom.prometheus`).

Who may read it is ``METRICS_ACCESS``: ``open``, ``token`` (any valid client token, taken as the
stats take it: an ``Authorization: Bearer`` header or ``?token=``), or ``auto``, the stats' own
rule (a token exactly when tokens are on).

Where it is served is ``METRICS_BIND``: unset, on the main address beside everything else; set,
``siscom serve`` listens there too, and requests are told apart by the port they arrived on (the
ASGI scope's ``server``): ``/metrics`` is answered only there, and only ``/metrics`` is.
"""

from __future__ import annotations

from quart import Blueprint, Response, request, websocket

from siscom.gateway import Gateway
from siscom.web.http_tokens import NO_STORE, token_refusal

NOT_FOUND = ({"error": "not found"}, 404, NO_STORE)


def _port(scope: dict) -> int | None:
    server = scope.get("server")
    return server[1] if server else None


def prometheus_blueprint(gateway: Gateway) -> Blueprint:
    blueprint = Blueprint("prometheus", __name__)
    need_token = gateway.settings.metrics_need_token
    metrics_port = gateway.settings.metrics_port

    @blueprint.get("/metrics")
    async def metrics():
        if metrics_port is not None and _port(request.scope) != metrics_port:
            return NOT_FOUND
        if need_token and (refusal := token_refusal(gateway)) is not None:
            return refusal
        body, content_type = gateway.metrics.prometheus.exposition(request.headers.get("Accept"))
        return Response(body, status=200, content_type=content_type, headers=NO_STORE)

    if metrics_port is not None:

        @blueprint.before_app_request
        async def only_metrics_on_the_metrics_port():
            if _port(request.scope) == metrics_port and request.path != "/metrics":
                return NOT_FOUND
            return None

        @blueprint.before_app_websocket
        async def no_streams_on_the_metrics_port():
            if _port(websocket.scope) == metrics_port:
                return NOT_FOUND
            return None

    return blueprint
