"""FHIR R4 read and search at /fhir (application/fhir+json; errors as OperationOutcome).

The router owns its error mapping (FhirRoute), so every answer under /fhir, including
401 from the bearer-token check, is FHIR rather than the API's problem+json.

Doctors read and search with their mrb token. IHE PIXm (`GET Patient/$ihe-pix`) and
PDQm `$match` (`POST Patient/$match`) answer registered machine clients only: an EHR or
MPI integration registered as a CDS client, authenticated exactly as a CDS Hooks call
(its signed JWT, `aud` = MRB_PUBLIC_BASE_URL + the operation's path); a person's token is
403. `GET Patient` serves both: a person's token the doctor's one-named-patient search, a
machine client's JWT the PDQm [ITI-78] search by demographics.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Coroutine
from typing import Annotated, Any
from urllib.parse import parse_qsl

from fastapi import APIRouter, Depends, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from fastapi.security import HTTPAuthorizationCredentials

from broker.api.deps import ContainerDep, get_actor
from broker.api.problems import status_of
from broker.api.routes.cds_hooks import cds_client
from broker.domain.actors import Actor
from broker.domain.errors import Gone, Invalid, Refused, Unauthenticated
from broker.fhir.audit_events import AuditEvents
from broker.fhir.documents import FHIR_JSON, operation_outcome
from broker.fhir.params import check_prefer
from broker.fhir.pdq_search import DomainUnknown
from broker.fhir.service import (
    RESOURCE_TYPES,
    FhirService,
    Reader,
    caller,
    machine_caller,
    person_refused,
)
from broker.security.oidc import unverified_issuer
from broker.security.tokens import ISSUER

logger = logging.getLogger(__name__)

_JSON_FORMATS = frozenset({"json", "application/json", "application/fhir+json", "fhir+json"})
# FHIR answers a bad parameter 400 (the REST API 422), and names what is gone 410.
_FHIR_STATUS: dict[type[Refused], int] = {Invalid: 400, Gone: 410}
_ISSUE_CODES = {400: "invalid", 401: "login", 403: "forbidden", 404: "not-found"}


class FhirResponse(JSONResponse):
    media_type = FHIR_JSON


class FhirEdgeError(Exception):
    """What the edge itself answers (a format, a method, a failure): status and issue."""

    def __init__(self, status: int, code: str, diagnostics: str) -> None:
        super().__init__(diagnostics)
        self.status = status
        self.code = code
        self.diagnostics = diagnostics


def outcome_response(exc: FhirEdgeError) -> FhirResponse:
    response = FhirResponse(operation_outcome(exc.code, exc.diagnostics), status_code=exc.status)
    if exc.status == 401:
        response.headers["WWW-Authenticate"] = "Bearer"
    return response


def refusal_outcome(exc: Refused) -> FhirEdgeError:
    """The one mapping of a domain refusal to a FHIR status and issue: a refusal of the
    FHIR use cases names its issue code and its detail is the whole diagnostics."""
    status = next((_FHIR_STATUS[c] for c in type(exc).__mro__ if c in _FHIR_STATUS), None)
    status = status or status_of(exc)
    if exc.issue is not None:
        return FhirEdgeError(status, exc.issue, exc.detail)
    code = _ISSUE_CODES.get(status, "processing")
    return FhirEdgeError(status, code, f"{exc.title}: {exc.detail}")


class FhirRoute(APIRoute):
    """Answers every error raised on the way (dependencies included) as an OperationOutcome."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def answer(request: Request) -> Response:
            try:
                return await handler(request)
            except FhirEdgeError as exc:
                return outcome_response(exc)
            except Refused as exc:
                return outcome_response(refusal_outcome(exc))
            except RequestValidationError as exc:
                first = exc.errors()[0] if exc.errors() else {}
                where = ".".join(str(p) for p in first.get("loc", ()))
                return outcome_response(
                    FhirEdgeError(400, "invalid", f"{where}: {first.get('msg', 'invalid request')}")
                )
            except Exception:
                logger.exception("FHIR request failed: %s %s", request.method, request.url.path)
                return outcome_response(
                    FhirEdgeError(500, "exception", "mrb could not answer; the error is logged")
                )

        return answer


router = APIRouter(prefix="/fhir", tags=["fhir"], route_class=FhirRoute)


async def get_service(request: Request) -> FhirService:
    """One FhirService per app (it holds the cursor key).

    A coroutine, so it runs on the event loop rather than in a worker thread: two first
    requests must not both create the key file.
    """
    service: FhirService | None = getattr(request.app.state, "fhir_service", None)
    if service is None:
        service = request.app.state.container.fhir_service(version=request.app.version)
        request.app.state.fhir_service = service
    return service


async def check_format(request: Request) -> None:
    """JSON only: `_format` or an Accept header asking for XML or Turtle gets 406."""
    fmt = request.query_params.get("_format")
    if fmt is not None and fmt.split(";")[0].strip().lower() not in _JSON_FORMATS:
        raise FhirEdgeError(406, "not-supported", f"_format={fmt[:40]} is not offered: JSON only")
    accept = request.headers.get("accept")
    if accept:
        kinds = [a.split(";")[0].strip().lower() for a in accept.split(",")]
        ok = _JSON_FORMATS | {"*/*", "application/*", ""}
        if not any(k in ok for k in kinds):
            raise FhirEdgeError(
                406, "not-supported", f"Accept: {accept[:60]} is not offered: JSON only"
            )


async def get_caller(request: Request, actor: Annotated[Actor, Depends(get_actor)]) -> Reader:
    return caller(
        actor,
        request.headers.get("x-purpose-of-use"),
        request.headers.get("x-break-glass-reason"),
    )


async def get_machine_caller(request: Request, container: ContainerDep) -> Reader:
    """A registered machine client, authenticated as CDS Hooks authenticates it (its own
    JWT, broker.cdshooks.auth), or 403 for a valid mrb token (a person's) and 401 else."""
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        credentials = HTTPAuthorizationCredentials(scheme="Bearer", credentials=token.strip())
        try:
            actor = await get_actor(request, container, credentials)
        except Unauthenticated:
            pass  # not a token of mrb's users: a client's JWT, checked next
        else:
            raise person_refused(actor)
    client = await cds_client(request, container)
    return machine_caller(client.issuer, client.hospital, request.headers.get("x-purpose-of-use"))


async def get_audit_events(request: Request) -> AuditEvents:
    """One AuditEvents per app (it holds the cursor key), made on the event loop."""
    events: AuditEvents | None = getattr(request.app.state, "fhir_audit_events", None)
    if events is None:
        events = request.app.state.container.fhir_audit_events()
        request.app.state.fhir_audit_events = events
    return events


ServiceDep = Annotated[FhirService, Depends(get_service)]
CallerDep = Annotated[Reader, Depends(get_caller)]
MachineDep = Annotated[Reader, Depends(get_machine_caller)]
AuditEventsDep = Annotated[AuditEvents, Depends(get_audit_events)]
ActorDep = Annotated[Actor, Depends(get_actor)]
SERVED = (*RESOURCE_TYPES, "AuditEvent", "Consent")


def _base(request: Request) -> str:
    return str(request.base_url).rstrip("/") + "/fhir"


@router.get("/metadata", dependencies=[Depends(check_format)])
async def metadata(request: Request, service: ServiceDep) -> Response:
    """The CapabilityStatement: exactly what this endpoint supports (no token needed)."""
    return FhirResponse(service.capabilities(_base(request)))


@router.get("/AuditEvent", dependencies=[Depends(check_format)])
async def audit_event_search(request: Request, events: AuditEventsDep, actor: ActorDep) -> Response:
    """The audit trail as IHE BALP AuditEvents, for the audit role only (`date`, `_count`)."""
    return FhirResponse(
        await events.search(
            actor,
            request.query_params.multi_items(),
            strict=check_prefer(request.headers.get("prefer")),
            base=_base(request),
        )
    )


@router.post("/AuditEvent/_search", dependencies=[Depends(check_format)])
async def audit_event_search_by_post(
    request: Request, events: AuditEventsDep, actor: ActorDep
) -> Response:
    """The same search with its parameters in a form body."""
    return FhirResponse(
        await events.search(
            actor,
            await _form_pairs(request),
            strict=check_prefer(request.headers.get("prefer")),
            base=_base(request),
        )
    )


@router.get("/AuditEvent/{rid}", dependencies=[Depends(check_format)])
async def audit_event_read(
    rid: str, request: Request, events: AuditEventsDep, actor: ActorDep
) -> Response:
    """One audit entry as an AuditEvent, by its audit id."""
    return FhirResponse(await events.read(actor, rid, _base(request)))


@router.get("/Patient/$ihe-pix", dependencies=[Depends(check_format)])
async def pixm_query(request: Request, service: ServiceDep, client: MachineDep) -> Response:
    """IHE PIXm [ITI-83]: the patient's identifiers this client may see (broker.fhir.pix)."""
    return FhirResponse(await service.pix(client, request.query_params.multi_items()))


@router.post("/Patient/$match", dependencies=[Depends(check_format)])
async def pdqm_match(request: Request, service: ServiceDep, client: MachineDep) -> Response:
    """IHE PDQm [ITI-119], FHIR Patient $match on identifiers and demographics
    (broker.fhir.pdq)."""
    return FhirResponse(await service.match(client, await _json_body(request), base=_base(request)))


@router.get("/Patient", dependencies=[Depends(check_format)])
async def patient_search(
    request: Request, service: ServiceDep, container: ContainerDep
) -> Response:
    """Doctors: one named patient (FHIR search-type); registered machine clients: IHE PDQm
    Patient search [ITI-78] by demographics (broker.fhir.pdq_search)."""
    return await _patient_search(request, service, container, request.query_params.multi_items())


@router.post("/Patient/_search", dependencies=[Depends(check_format)])
async def patient_search_by_post(
    request: Request, service: ServiceDep, container: ContainerDep
) -> Response:
    """The same with its parameters in a form body."""
    return await _patient_search(request, service, container, await _form_pairs(request))


async def _patient_search(
    request: Request, service: FhirService, container: Any, pairs: list[tuple[str, str]]
) -> Response:
    """An mrb token (or web session) is a person's: the doctor's search. A bearer token that
    claims another issuer than mrb's or the OpenID Connect issuer is tried as a registered
    machine client's JWT (401 if it is not). The choice goes by the claimed issuer, not by
    whether the token verifies: a revoked or expired person's token must get the person's
    answer ("Token revoked"), not a machine client's."""
    strict = check_prefer(request.headers.get("prefer"))
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    credentials = None
    if scheme.lower() == "bearer" and token.strip():
        credentials = HTTPAuthorizationCredentials(scheme="Bearer", credentials=token.strip())
    claimed = unverified_issuer(credentials.credentials) if credentials is not None else None
    if claimed is not None and claimed not in (ISSUER, container.settings.oidc_issuer):
        client = await cds_client(request, container)
        reader = machine_caller(
            client.issuer, client.hospital, request.headers.get("x-purpose-of-use")
        )
        try:
            found = await service.pdq_search(reader, pairs, strict=strict, base=_base(request))
        except DomainUnknown as exc:  # ITI-78 Case 4: 404, the profile's OperationOutcome
            return FhirResponse(exc.outcome, status_code=404)
        return FhirResponse(found)
    actor = await get_actor(request, container, credentials)
    doctor = caller(
        actor, request.headers.get("x-purpose-of-use"), request.headers.get("x-break-glass-reason")
    )
    return FhirResponse(
        await service.search(doctor, "Patient", pairs, strict=strict, base=_base(request))
    )


async def _json_body(request: Request) -> object:
    """The request's FHIR JSON body: 415 for another media type, 400 if it is not JSON."""
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind not in ("application/fhir+json", "application/json"):
        raise FhirEdgeError(
            415, "not-supported", "Patient/$match takes application/fhir+json (a Parameters)"
        )
    try:
        body: object = json.loads(await request.body())
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise FhirEdgeError(400, "invalid", f"the body is not JSON: {exc}"[:200]) from None
    return body


async def _form_pairs(request: Request) -> list[tuple[str, str]]:
    """The query string's parameters and the form body's (application/x-www-form-urlencoded)."""
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind not in ("application/x-www-form-urlencoded", ""):
        raise FhirEdgeError(
            415, "not-supported", "POST _search takes application/x-www-form-urlencoded"
        )
    body = (await request.body()).decode("utf-8", errors="replace")
    return [*request.query_params.multi_items(), *parse_qsl(body, keep_blank_values=True)]


@router.get("/{resource_type}", dependencies=[Depends(check_format)])
async def search(
    resource_type: str, request: Request, service: ServiceDep, caller: CallerDep
) -> Response:
    """Search one patient's resources (FHIR R4 search-type)."""
    return FhirResponse(
        await service.search(
            caller,
            resource_type,
            request.query_params.multi_items(),
            strict=check_prefer(request.headers.get("prefer")),
            base=_base(request),
        )
    )


@router.post("/{resource_type}/_search", dependencies=[Depends(check_format)])
async def search_by_post(
    resource_type: str, request: Request, service: ServiceDep, caller: CallerDep
) -> Response:
    """The same search with its parameters in a form body (keeps identifiers out of URLs)."""
    return FhirResponse(
        await service.search(
            caller,
            resource_type,
            await _form_pairs(request),
            strict=check_prefer(request.headers.get("prefer")),
            base=_base(request),
        )
    )


@router.get("/{resource_type}/{rid}", dependencies=[Depends(check_format)])
async def read(resource_type: str, rid: str, service: ServiceDep, caller: CallerDep) -> Response:
    """Read one resource by the id mrb serves it under."""
    return FhirResponse(await service.read(caller, resource_type, rid))


@router.api_route(
    "/{rest:path}",
    methods=["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"],
    include_in_schema=False,
)
async def unsupported(rest: str, request: Request) -> Response:
    """Anything else under /fhir: 405 for writes on served types, else 404."""
    first = rest.split("/")[0]
    if request.method not in ("GET", "HEAD") and (first in SERVED or not rest):
        raise FhirEdgeError(
            405,
            "not-supported",
            f"{request.method} is not offered: mrb's FHIR endpoint is read-only "
            "(read, search; POST only for [type]/_search and Patient/$match)",
        )
    detail: Any = rest[:80] or "(the base)"
    raise FhirEdgeError(
        404,
        "not-found",
        f"/fhir/{detail} is not offered: mrb serves metadata, read and search on "
        + ", ".join(SERVED),
    )
