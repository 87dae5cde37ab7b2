"""Liveness, readiness and counters: what load balancers and operators poll.

``/health`` and ``/ready`` stay open (load balancers carry no tokens and learn nothing about
vehicles from them); the stats need a token when streams do.
"""

from __future__ import annotations

from quart import Blueprint, request

from siscom.gateway import Gateway
from siscom.security.tokens import TokenError, bearer_token
from siscom.metrics import Metric

NO_STORE = {"Cache-Control": "no-store"}


def status_blueprint(gateway: Gateway) -> Blueprint:
    blueprint = Blueprint("status", __name__)

    @blueprint.get("/health")
    async def health():
        """200 while the process serves requests; says nothing about the broker."""
        return {"status": "ok"}, 200, NO_STORE

    @blueprint.get("/ready")
    async def ready():
        """200 once the consumer is connected and has a read offset on every partition, else 503."""
        kafka = gateway.kafka
        reason = gateway.not_ready_reason()
        body = {
            "status": "not ready" if reason else "ready",
            "reason": reason or "ready",
            "assigned_partitions": len(kafka.assigned),
            "total_partitions": kafka.total_partitions,
        }
        return body, (503 if reason else 200), NO_STORE

    @blueprint.get("/api/v1/stream/stats")
    async def stats():
        """The counters; with tokens required, any valid token (``"devices": []`` will do)."""
        if gateway.guard.auth_required:
            try:
                token = bearer_token(request.headers.get("Authorization")) or request.args.get("token")
                gateway.guard.authenticate(token)
            except TokenError as error:
                gateway.metrics.incr(Metric.AUTH_FAILURES)
                challenge = {"WWW-Authenticate": 'Bearer error="invalid_token"'}
                return {"error": error.message}, 401, {**NO_STORE, **challenge}
        return gateway.stats(), 200, NO_STORE

    return blueprint
