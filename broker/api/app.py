"""The FastAPI application, assembled around a Container."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

from fastapi import FastAPI, Request, Response
from fastapi.staticfiles import StaticFiles

from broker.api import problems
from broker.api.routes import (
    admin,
    cds_hooks,
    fhir,
    finance,
    health,
    mappings,
    notifications,
    pages,
    recognition,
)
from broker.bootstrap import Container
from broker.observability import REQUEST_SECONDS


def create_app(container: Container, *, role: str = "api") -> FastAPI:
    """`role` is "api", "worker" (health and metrics only) or "all" (mrb up / demo)."""
    app = FastAPI(
        title="mrb — test-result mutual-recognition broker",
        version="0.1.0",
        description="Cross-hospital recognition of lab and imaging results (互认).",
    )
    app.state.container = container
    app.state.role = role
    problems.install(app)
    app.include_router(health.router)
    if role in ("api", "all"):
        app.include_router(recognition.router)
        app.include_router(notifications.router)
        app.include_router(finance.router)
        app.include_router(admin.router)
        app.include_router(mappings.router)
        app.include_router(pages.router)
        app.include_router(fhir.router)
        app.include_router(cds_hooks.router)
        app.mount("/static", StaticFiles(directory=pages.STATIC), name="static")

    @app.middleware("http")
    async def _timing(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        started = time.perf_counter()
        response = await call_next(request)
        route = request.scope.get("route")
        path = getattr(route, "path", "unmatched")
        REQUEST_SECONDS.labels(request.method, path, str(response.status_code)).observe(
            time.perf_counter() - started
        )
        return response

    return app
