"""The FastAPI application, assembled around a Container."""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles
from starlette.types import ASGIApp

from broker.api import problems
from broker.api.limits import RateLimits, token_person
from broker.api.middleware import (
    AccessLog,
    BodyReadTimeout,
    BodySizeLimit,
    HeaderSizeLimit,
    NoStore,
)
from broker.api.routes import (
    admin,
    auth,
    cds_hooks,
    consents,
    fhir,
    finance,
    health,
    identity,
    launch,
    mappings,
    notifications,
    pages,
    patients,
    recognition,
    reference,
    tokens,
    users,
)
from broker.bootstrap import Container


class _Api(FastAPI):
    """FastAPI with mrb's edge outside everything, even Starlette's 500 handler.

    Outermost first: the access log and metrics (so refused and failed requests are
    logged and measured too, with their request id), no-store headers (on errors too),
    the header size limit, the rate limits (per address and token, before anything is
    read), then the body read timeout and the body limit, which answer before the app
    reads, parses or authenticates.
    """

    max_body_bytes: int
    max_header_bytes: int
    body_read_timeout: float
    container: Container

    def build_middleware_stack(self) -> ASGIApp:
        inner = BodySizeLimit(super().build_middleware_stack(), self.max_body_bytes)
        timed = BodyReadTimeout(inner, self.body_read_timeout)
        limited = RateLimits(timed, self.container, token_person(self.container))
        return AccessLog(NoStore(HeaderSizeLimit(limited, self.max_header_bytes)))


def create_app(container: Container, *, role: str = "api") -> FastAPI:
    """`role` is "api", "worker" (health only) or "all" (mrb up / demo).

    Metrics are not served here: the runtime exposes them on their own port
    (MRB_METRICS_HOST/MRB_METRICS_PORT), never on the API's.
    """
    app = _Api(
        title="mrb — test-result mutual-recognition broker",
        version="0.1.0",
        description="Cross-hospital recognition of lab and imaging results (互认).",
    )
    app.max_body_bytes = container.settings.max_body_bytes
    app.body_read_timeout = container.settings.body_read_timeout
    app.max_header_bytes = container.settings.max_header_bytes
    app.container = container
    app.state.container = container
    app.state.role = role
    problems.install(app)
    app.include_router(health.router)
    if role in ("api", "all"):
        app.include_router(recognition.router)
        app.include_router(notifications.router)
        app.include_router(finance.router)
        app.include_router(patients.router)
        app.include_router(consents.router)
        app.include_router(admin.router)
        app.include_router(reference.router)
        app.include_router(identity.router)
        app.include_router(mappings.router)
        app.include_router(tokens.router)
        app.include_router(users.router)
        app.include_router(auth.router)
        app.include_router(pages.router)
        app.include_router(fhir.router)
        app.include_router(cds_hooks.router)
        app.include_router(launch.router)
        app.mount("/static", StaticFiles(directory=pages.STATIC), name="static")
    return app
