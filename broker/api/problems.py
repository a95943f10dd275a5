"""Errors as RFC 9457 problem details (application/problem+json)."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from broker.domain.actors import Forbidden
from broker.domain.errors import (
    Conflict,
    Invalid,
    NotAllowed,
    NotFound,
    PreconditionFailed,
    Refused,
    TooManyRequests,
    Unauthenticated,
    Unavailable,
)
from broker.services.registry import RegistryError
from broker.storage.hospitals import HospitalExists

PROBLEM = "application/problem+json"

# The one place a refusal becomes an HTTP status (REST, FHIR and CDS Hooks routes).
_STATUS: dict[type[Refused], int] = {
    Invalid: 422,
    NotFound: 404,
    NotAllowed: 403,
    Unauthenticated: 401,
    Conflict: 409,
    PreconditionFailed: 412,
    TooManyRequests: 429,
    Unavailable: 503,
}


def status_of(exc: Refused) -> int:
    """The HTTP status of a refusal: its own class or the nearest one mapped."""
    for cls in type(exc).__mro__:
        if cls in _STATUS:
            return _STATUS[cls]
    return 400


def problem(status: int, title: str, detail: str, **extra: Any) -> JSONResponse:
    body = {"type": "about:blank", "title": title, "status": status, "detail": detail, **extra}
    return JSONResponse(jsonable_encoder(body), status_code=status, media_type=PROBLEM)


def install(app: FastAPI) -> None:
    """Map every error the API can raise to a problem body."""

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [
            {"loc": list(e.get("loc", ())), "msg": e.get("msg"), "type": e.get("type")}
            for e in exc.errors()  # no "input": it may hold a patient identifier
        ]
        first = errors[0] if errors else {"loc": [], "msg": "invalid request"}
        where = ".".join(str(p) for p in first["loc"] if p != "body")
        return problem(
            422,
            "Invalid request",
            f"{where}: {first['msg']}" if where else str(first["msg"]),
            errors=errors,
        )

    @app.exception_handler(Refused)
    async def _refused(_: Request, exc: Refused) -> JSONResponse:
        return refused_response(exc)

    @app.exception_handler(Forbidden)
    async def _forbidden(_: Request, exc: Forbidden) -> JSONResponse:
        return problem(403, "Forbidden", str(exc))

    @app.exception_handler(RegistryError)
    async def _registry(_: Request, exc: RegistryError) -> JSONResponse:
        return problem(422, "Invalid registration", str(exc))

    @app.exception_handler(HospitalExists)
    async def _exists(_: Request, exc: HospitalExists) -> JSONResponse:
        return problem(409, "Hospital exists", f"{exc} is already registered; PUT replaces it")

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        return problem(exc.status_code, _title(exc.status_code), str(exc.detail))


def refused_response(exc: Refused) -> JSONResponse:
    response = problem(status_of(exc), exc.title, exc.detail)
    if isinstance(exc, Unauthenticated):
        response.headers["WWW-Authenticate"] = "Bearer"
    return response


def _title(status: int) -> str:
    from http import HTTPStatus

    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"
