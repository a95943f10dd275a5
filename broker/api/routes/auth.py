"""Web login: a local account's username and password for a server-side session.

The session id travels only in the `__Host-mrb_session` cookie (HttpOnly: no script reads
it; SameSite=Strict: no other site's page sends it); the CSRF token the pages send in
`X-CSRF-Token` comes in these answers' bodies. API clients keep using bearer tokens.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Annotated, Any
from urllib.parse import parse_qs, urlsplit

from fastapi import APIRouter, Request, Response
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from broker.api.deps import ContainerDep, session_cookie, web_session
from broker.domain.actors import ALL_HOSPITALS
from broker.domain.errors import Invalid, NotAllowed, Unauthenticated
from broker.security.passwords import csrf_token
from broker.services import web_login

router = APIRouter(prefix="/auth", tags=["web login"])


class LoginRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    username: Annotated[str, Field(min_length=1, max_length=64)]
    password: Annotated[str, Field(min_length=1, max_length=1024)]


class SessionInfo(BaseModel):
    username: str
    display_name: str | None
    role: str
    hospital: str | None  # None for a platform role (every hospital)
    csrf_token: str  # send as X-CSRF-Token with every POST/PUT/PATCH/DELETE
    expires_at: datetime  # unless used again sooner (the idle timeout moves it)


_LOGIN_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            media: {"schema": LoginRequest.model_json_schema()}
            for media in ("application/json", "application/x-www-form-urlencoded")
        },
    }
}


def _info(active: web_login.ActiveSession | web_login.LoggedIn, session_id: str) -> SessionInfo:
    actor = active.actor
    return SessionInfo(
        username=actor.name,
        display_name=active.display_name,
        role=actor.role.value,
        hospital=None if actor.hospital == ALL_HOSPITALS else actor.hospital,
        csrf_token=csrf_token(session_id),
        expires_at=active.expires_at,
    )


async def _credentials(request: Request) -> LoginRequest:
    body = await request.body()
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    try:
        if content_type == "application/x-www-form-urlencoded":
            form = parse_qs(body.decode("utf-8"), keep_blank_values=True, max_num_fields=10)
            return LoginRequest.model_validate({k: v[0] for k, v in form.items()})
        return LoginRequest.model_validate(json.loads(body))
    except (ValueError, ValidationError):  # JSON, UTF-8 and model errors alike
        raise Invalid(
            "Invalid request",
            "send username and password as JSON or as a form (application/x-www-form-urlencoded)",
        ) from None


def _same_origin(request: Request) -> None:
    """Refuse a login posted by another site's page (login CSRF: signing the victim in to
    the attacker's account). Browsers send Origin with every POST; other clients need not."""
    origin = request.headers.get("origin")
    if origin is None:
        return
    base = request.app.state.container.settings.public_base_url
    allowed = {request.headers.get("host", "")}
    if base:
        allowed.add(urlsplit(base).netloc)
    if urlsplit(origin).netloc not in allowed:
        raise NotAllowed("Cross-site login refused", "sign in from mrb's own /login page")


@router.post(
    "/login",
    response_model=SessionInfo,
    summary="Sign in with a local account; sets the session cookie",
    openapi_extra=_LOGIN_BODY,
    responses={401: {"description": "wrong username or password, or disabled or locked"}},
)
async def login(request: Request, response: Response, container: ContainerDep) -> SessionInfo:
    _same_origin(request)
    body = await _credentials(request)
    settings = container.settings
    done = await web_login.login(
        container.web_uow(),
        body.username,
        body.password,
        now=datetime.now(UTC),
        sessions=settings.web_session_policy,
        lockout=settings.web_lockout_policy,
    )
    # No Max-Age: the cookie ends with the browser, the session with its timeouts.
    response.set_cookie(
        session_cookie(settings),
        done.session_id,
        httponly=True,
        secure=settings.web_cookie_secure,
        samesite="strict",
        path="/",
    )
    return _info(done, done.session_id)


@router.get("/session", response_model=SessionInfo, summary="The signed-in user and CSRF token")
async def session(request: Request, container: ContainerDep) -> SessionInfo:
    active = await web_session(request, container)
    if active is None:
        raise Unauthenticated("Not signed in", "sign in at /login")
    return _info(active, request.cookies[session_cookie(container.settings)])


@router.post("/logout", status_code=204, summary="End the session (needs X-CSRF-Token)")
async def logout(request: Request, container: ContainerDep) -> Response:
    active = await web_session(request, container)
    if active is None:
        raise Unauthenticated("Not signed in", "there is no session to end")
    await web_login.logout(container.web_uow(), active)
    response = Response(status_code=204)
    response.delete_cookie(
        session_cookie(container.settings),
        path="/",
        secure=container.settings.web_cookie_secure,
        httponly=True,
        samesite="strict",
    )
    return response
