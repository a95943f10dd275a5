"""CDS Hooks 2.0: discovery, the recognition services and their feedback.

Wire with `app.include_router(cds_hooks.router)`. Service calls and feedback need the
EHR's signed JWT (`Authorization: Bearer <JWT>`, broker/cdshooks/auth.py); discovery is
public (it describes the services and holds no patient data).
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Annotated, Any

import httpx
from fastapi import APIRouter, Depends, Request

from broker.api.deps import ContainerDep
from broker.bootstrap import Container
from broker.cdshooks import hooks
from broker.cdshooks.auth import AuthenticatedClient, ClientRejected, JwksCache, authenticate
from broker.cdshooks.models import FeedbackRequest, HookRequest
from broker.cdshooks.services import SERVICES, ServiceDefinition, discovery
from broker.correlation import bind_hook_instance
from broker.domain.errors import NotFound, Unauthenticated

logger = logging.getLogger(__name__)
router = APIRouter(tags=["cds-hooks"])


# Dependencies are coroutines: FastAPI runs a plain function in its thread pool, a thread
# hop per request (tests/unit/test_api_dependencies.py).
async def cds_clock() -> datetime:
    """The time of the call (the order time of checks); tests override this dependency."""
    return datetime.now(UTC)


async def cds_fhir_transport() -> httpx.AsyncBaseTransport | None:
    """How the EHR's FHIR server is reached (None: the network); tests override it."""
    return None


def _jwks_cache(request: Request) -> JwksCache:
    cache: JwksCache | None = getattr(request.app.state, "cds_jwks_cache", None)
    if cache is None:
        cache = JwksCache()
        request.app.state.cds_jwks_cache = cache
    return cache


def called_url(request: Request, container: Container) -> str:
    """The URL of the service called as mrb publishes it, which the JWT's `aud` must name:
    MRB_PUBLIC_BASE_URL + the path, never built from the request's Host header (a forged
    Host must not choose the audience a token is checked against)."""
    template = getattr(request.scope.get("route"), "path", "")
    path = template.format(**request.path_params).lstrip("/")
    return container.settings.resolved_public_base_url + path


async def cds_client(request: Request, container: ContainerDep) -> AuthenticatedClient:
    """The EHR that signed this call's JWT; anything else is a plain 401."""
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthenticated(
            "Authentication required",
            "CDS clients send `Authorization: Bearer <JWT>` signed with their registered key",
        )
    try:
        return await authenticate(
            token.strip(),
            audience=called_url(request, container),
            registry=container.cds_clients(),
            replay=container.cds_replay_guard(),
            jwks_cache=_jwks_cache(request),
        )
    except ClientRejected as exc:
        logger.warning("CDS client JWT refused: %s", exc)
        raise Unauthenticated("Unauthorized", "the CDS client's JWT was not accepted") from None


ClientDep = Annotated[AuthenticatedClient, Depends(cds_client)]
ClockDep = Annotated[datetime, Depends(cds_clock)]
TransportDep = Annotated[httpx.AsyncBaseTransport | None, Depends(cds_fhir_transport)]


def _service(service_id: str) -> ServiceDefinition:
    service = SERVICES.get(service_id)
    if service is None:
        raise NotFound("Unknown CDS service", f"no CDS service {service_id!r}")
    return service


def _caller(container: Container, client: AuthenticatedClient, now: datetime) -> hooks.HookCall:
    """Card links point at MRB_PUBLIC_BASE_URL, never at the request's Host."""
    return hooks.HookCall(client, container.settings.resolved_public_base_url, now)


@router.get("/cds-services")
async def cds_discovery() -> dict[str, Any]:
    """The CDS Services mrb offers (CDS Hooks discovery)."""
    return discovery()


@router.post("/cds-services/{service_id}")
async def cds_service(
    service_id: str,
    body: HookRequest,
    container: ContainerDep,
    client: ClientDep,
    now: ClockDep,
    transport: TransportDep,
) -> dict[str, Any]:
    """Cards for one hook call: recognisable prior results for the draft orders."""
    bind_hook_instance(body.hookInstance)  # the EHR's id for this call, in our log lines
    return await hooks.answer(
        container.cds_hooks(),
        _service(service_id),
        body,
        _caller(container, client, now),
        transport=transport,
    )


@router.post("/cds-services/{service_id}/feedback")
async def cds_feedback(
    service_id: str,
    body: FeedbackRequest,
    container: ContainerDep,
    client: ClientDep,
    now: ClockDep,
) -> dict[str, Any]:
    """Accepted or overridden cards -> the doctor's outcome (idempotent)."""
    return await hooks.record_feedback(
        container.cds_hooks(), _service(service_id), body, _caller(container, client, now)
    )
