"""Web login: a local account's username and password, or the OpenID Connect issuer's
sign-in (authorization code + PKCE, broker/security/oidc_login.py), for a server-side
session.

The session id travels only in the `__Host-mrb_session` cookie (HttpOnly: no script reads
it; SameSite=Strict: no other site's page sends it); the CSRF token the pages send in
`X-CSRF-Token` comes in these answers' bodies. API clients keep using bearer tokens.
"""

from __future__ import annotations

import html
import json
from datetime import UTC, datetime
from typing import Annotated, Any
from urllib.parse import parse_qs, urlsplit

import structlog
from fastapi import APIRouter, Request, Response
from fastapi.responses import HTMLResponse, RedirectResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from broker.api.deps import ContainerDep, session_cookie, web_session
from broker.bootstrap import Container
from broker.domain.actors import ALL_HOSPITALS
from broker.domain.errors import Invalid, NotAllowed, NotFound, Unauthenticated
from broker.security.oidc_login import (
    FLOW_MAX_AGE,
    LoginRefused,
    OidcLogin,
    PendingLogin,
    issuer_error,
)
from broker.security.passwords import csrf_token
from broker.services import web_login
from broker.settings import Settings

log = structlog.get_logger(__name__)

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


# Sign-in through the OpenID Connect issuer. Both steps are top-level browser navigations:
# they answer with redirects and, when refused, a page (not problem+json).

FLOW_COOKIE = "__Host-mrb_oidc"
PLAIN_FLOW_COOKIE = "mrb_oidc"  # MRB_WEB_COOKIE_SECURE=false
# Where each role lands after signing in (as broker/web/static/login.js sends it).
ROLE_PAGES = {
    "doctor": "/doctor",
    "finance": "/finance",
    "platform-finance": "/finance",
    "admin": "/admin",
    "platform-admin": "/admin",
    "security-admin": "/admin",
    "qc": "/admin",
}
_NO_STORE = {
    "Cache-Control": "no-store",
    "Referrer-Policy": "no-referrer",  # the callback's URL holds the code: never pass it on
    "X-Content-Type-Options": "nosniff",
}
_PAGE_HEADERS = {
    **_NO_STORE,
    "Content-Security-Policy": "default-src 'self'; frame-ancestors 'none'",
}


class SignInMethods(BaseModel):
    password: bool  # local accounts (always)
    oidc_issuer: str | None  # the issuer to sign in with, if configured
    oidc_start: str | None  # where a link sends the browser to sign in with it


def flow_cookie(settings: Settings) -> str:
    return FLOW_COOKIE if settings.web_cookie_secure else PLAIN_FLOW_COOKIE


def _refused_page(refused: LoginRefused) -> HTMLResponse:
    title, detail = html.escape(refused.title), html.escape(refused.detail)
    body = f"""<!doctype html>
<html lang="zh-CN">
<head>
  <meta charset="utf-8">
  <meta name="viewport" content="width=device-width, initial-scale=1">
  <title>mrb · 登录失败 {title}</title>
  <link rel="stylesheet" href="/static/style.css">
</head>
<body>
  <header><h1>检查检验结果互认 <small>Result recognition</small></h1></header>
  <main>
    <h2 id="refused">登录失败 {title}</h2>
    <p class="error" role="alert">{detail}</p>
    <p><a href="/login">返回登录页 Back to sign-in</a></p>
  </main>
</body>
</html>
"""
    return HTMLResponse(body, status_code=refused.status, headers=_PAGE_HEADERS)


def _drop_flow_cookie(response: Response, settings: Settings) -> None:
    response.delete_cookie(
        flow_cookie(settings),
        path="/",
        secure=settings.web_cookie_secure,
        httponly=True,
        samesite="lax",
    )


def _oidc_login(container: Container) -> OidcLogin:
    login = container.oidc_login()
    if login is None:
        raise NotFound(
            "OpenID Connect sign-in not configured",
            "set MRB_OIDC_ISSUER and MRB_OIDC_CLIENT_ID, or sign in with a local account",
        )
    return login


@router.get("/methods", response_model=SignInMethods, summary="How one can sign in here")
async def methods(container: ContainerDep) -> SignInMethods:
    login = container.oidc_login()
    return SignInMethods(
        password=True,
        oidc_issuer=login.issuer if login is not None else None,
        oidc_start="/auth/oidc/start" if login is not None else None,
    )


@router.get(
    "/oidc/start",
    status_code=303,
    summary="Sign in through the OpenID Connect issuer: a redirect to it",
    responses={303: {"description": "to the issuer's authorization endpoint"}},
    response_class=RedirectResponse,
)
async def oidc_start(container: ContainerDep) -> Response:
    login = _oidc_login(container)
    settings = container.settings
    pending = PendingLogin.new()
    try:
        url = await login.start(pending)
    except LoginRefused as refused:
        log.warning("web_login.oidc_refused", reason=refused.reason, detail=refused.detail)
        return _refused_page(refused)
    response = RedirectResponse(url, status_code=303, headers=_NO_STORE)
    # Lax, not Strict: the issuer's redirect back is a cross-site top-level navigation.
    response.set_cookie(
        flow_cookie(settings),
        login.seal(pending),
        max_age=FLOW_MAX_AGE,
        httponly=True,
        secure=settings.web_cookie_secure,
        samesite="lax",
        path="/",
    )
    return response


@router.get(
    "/oidc/callback",
    status_code=303,
    summary="Where the issuer sends the browser back; sets the session cookie",
    responses={
        303: {"description": "signed in: to the page of the user's role"},
        400: {"description": "a page: the sign-in was not this browser's, or failed"},
        403: {"description": "a page: cancelled, or the user is not mapped or disabled"},
    },
    response_class=RedirectResponse,
)
async def oidc_callback(
    request: Request,
    container: ContainerDep,
    code: str | None = None,
    state: str | None = None,
    error: str | None = None,
    error_description: str | None = None,
) -> Response:
    login = _oidc_login(container)
    settings = container.settings
    try:
        # The flow cookie is spent whatever happens: one callback per start.
        pending = login.unseal(request.cookies.get(flow_cookie(settings)))
        login.check_state(pending, state)
        if error is not None:
            raise issuer_error(error, error_description)
        signed_in = await login.finish(pending, code or "")
        identity = signed_in.identity
        try:
            done = await web_login.login_oidc(
                container.web_uow(),
                issuer=identity.issuer,
                subject=identity.subject,
                display_name=signed_in.display_name,
                now=datetime.now(UTC),
                sessions=settings.web_session_policy,
            )
        except NotAllowed as exc:
            raise LoginRefused("not_allowed", exc.title, exc.detail, status=403) from None
    except LoginRefused as refused:
        log.warning("web_login.oidc_refused", reason=refused.reason, detail=refused.detail)
        page = _refused_page(refused)
        _drop_flow_cookie(page, settings)
        return page
    response = RedirectResponse(
        ROLE_PAGES.get(done.actor.role.value, "/login"), status_code=303, headers=_NO_STORE
    )
    _drop_flow_cookie(response, settings)
    response.set_cookie(
        session_cookie(settings),
        done.session_id,
        httponly=True,
        secure=settings.web_cookie_secure,
        samesite="strict",
        path="/",
    )
    return response
