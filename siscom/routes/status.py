"""Liveness, readiness and counters: what load balancers and operators poll."""

from __future__ import annotations

from quart import Blueprint

from siscom.gateway import Gateway

NO_STORE = {"Cache-Control": "no-store"}


def status_blueprint(gateway: Gateway) -> Blueprint:
    blueprint = Blueprint("status", __name__)

    @blueprint.get("/health")
    async def health():
        """200 while the process serves requests; says nothing about the broker."""
        return {"status": "ok"}, 200, NO_STORE

    @blueprint.get("/ready")
    async def ready():
        """200 once the consumer is connected and positioned on every partition, else 503."""
        kafka = gateway.kafka
        body = {
            "status": "ready" if gateway.ready else "not ready",
            "reason": "ready" if gateway.ready else ("supervision tree failed" if gateway.failed.is_set() else kafka.reason()),
            "assigned_partitions": len(kafka.assigned),
            "total_partitions": kafka.total_partitions,
        }
        return body, (200 if gateway.ready else 503), NO_STORE

    @blueprint.get("/api/v1/stream/stats")
    async def stats():
        return gateway.stats(), 200, NO_STORE

    return blueprint
