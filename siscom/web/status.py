"""Liveness, readiness and counters: what load balancers and operators poll.

``/health`` and ``/ready`` stay open (load balancers carry no tokens and learn nothing about
vehicles from them); the stats need a token when streams do.
"""

from __future__ import annotations

from quart import Blueprint
from quart.typing import ResponseReturnValue

from siscom.gateway import Gateway
from siscom.web.http_tokens import NO_STORE, token_refusal


def status_blueprint(gateway: Gateway) -> Blueprint:
    blueprint = Blueprint("status", __name__)

    @blueprint.get("/health")
    async def health() -> ResponseReturnValue:
        """200 while the process serves requests; says nothing about the broker."""
        return {"status": "ok"}, 200, NO_STORE

    @blueprint.get("/ready")
    async def ready() -> ResponseReturnValue:
        """200 once the consumer is connected, has read the log back (warm-up) and has a read
        offset on every partition, else 503; while warming, the body shows how far it got."""
        kafka = gateway.kafka
        reason = gateway.not_ready_reason()
        body: dict[str, object] = {
            "status": "not ready" if reason else "ready",
            "reason": reason or "ready",
            "assigned_partitions": len(kafka.assigned),
            "total_partitions": kafka.total_partitions,
        }
        if reason == "warming":
            warmup = gateway.warming.as_dict()
            body.update(warmup, status="warming")
        return body, (503 if reason else 200), NO_STORE

    @blueprint.get("/api/v1/stream/stats")
    async def stats() -> ResponseReturnValue:
        """The counters; with tokens required, any valid token (``"devices": []`` will do)."""
        if gateway.guard.auth_required and (refusal := token_refusal(gateway)) is not None:
            return refusal
        return gateway.stats(), 200, NO_STORE

    return blueprint
