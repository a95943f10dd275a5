"""Liveness and readiness (metrics have their own port: broker.runtime)."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from broker.api.deps import ContainerDep
from broker.api.problems import problem

router = APIRouter(tags=["operations"])


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    """The process is alive."""
    return {"status": "ok"}


@router.get("/readyz", response_model=None)
async def readyz(request: Request, container: ContainerDep) -> Response | dict[str, object]:
    """Ready to serve: the database answers; a worker process also needs Kafka.

    A Kafka outage never makes the API unready: recognition checks read the database.
    """
    checks: dict[str, object] = {}
    try:
        await container.ping_database()
        checks["database"] = "ok"
    except Exception as exc:  # any failure means not ready; the type tells the operator why
        return problem(503, "Not ready", f"database unavailable: {type(exc).__name__}")
    for i, worker in enumerate(container.workers):
        checks[f"ingest_worker_{i}"] = {
            "kafka": "ok" if worker.stats.kafka_ok else "unavailable",
            "last_error": worker.stats.last_error,
            "messages": worker.stats.messages,
        }
    if request.app.state.role == "worker" and not all(w.stats.kafka_ok for w in container.workers):
        return problem(503, "Not ready", "ingest worker is not connected to Kafka", checks=checks)
    return {"status": "ready", "checks": checks}
