"""Typed dependencies for route handlers: the container and the authenticated caller.

Authentication: an EdDSA token from a trusted issuer key, recorded when issued and not
revoked (broker/security/tokens.py, broker/services/tokens.py), or, when MRB_OIDC_ISSUER
is set, a token of that OpenID Connect issuer whose subject mrb maps to an enabled role
(broker/security/oidc.py, broker/services/users.py), or, from the web pages, a session
cookie of a local account's login (broker/services/web_login.py), with the session's CSRF
token in `X-CSRF-Token` on every request that may change something. Authorisation: each route
names the duty it serves (`require(Duty.X)`, the role table in broker/domain/actors.py);
whether a hospital role acts on its own hospital is checked where that hospital is known
(the handler or the service), with `Actor.authorize`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from broker.bootstrap import Container
from broker.domain.actors import GRANTS, Actor, Duty
from broker.domain.errors import NotAllowed, Unauthenticated, Unavailable
from broker.security.oidc import IssuerUnavailable, unverified_issuer
from broker.security.passwords import csrf_matches
from broker.security.tokens import ISSUER, InvalidToken
from broker.services import users as user_service
from broker.services import web_login
from broker.services.tokens import TokenRevoked
from broker.settings import Settings


async def get_container(request: Request) -> Container:
    # A coroutine: FastAPI would run a plain function in its thread pool, on every request.
    container: Container = request.app.state.container
    return container


ContainerDep = Annotated[Container, Depends(get_container)]

_bearer = HTTPBearer(
    auto_error=False,
    description="a token from `mrb token issue`, or from the OpenID Connect issuer when "
    "one is configured",
)


SECURE_COOKIE = "__Host-mrb_session"
PLAIN_COOKIE = "mrb_session"  # MRB_WEB_COOKIE_SECURE=false: plain-HTTP demos only
CSRF_HEADER = "X-CSRF-Token"
_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def session_cookie(settings: Settings) -> str:
    """The session cookie's name: `__Host-` makes browsers insist on Secure, Path=/ and no
    Domain, so no sibling host can plant or read it."""
    return SECURE_COOKIE if settings.web_cookie_secure else PLAIN_COOKIE


async def web_session(request: Request, container: Container) -> web_login.ActiveSession | None:
    """The live session of the request's cookie (None without a cookie), also checking the
    CSRF header on an unsafe method; Unauthenticated (401) for a dead session, NotAllowed
    (403) for a missing or wrong CSRF token."""
    session_id = request.cookies.get(session_cookie(container.settings))
    if not session_id:
        return None
    active = await web_login.active(
        container.web_uow(),
        session_id,
        now=datetime.now(UTC),
        policy=container.settings.web_session_policy,
        oidc_issuer=container.settings.oidc_issuer,  # sessions of its people need it
    )
    # A cookie goes with any request the browser makes, even one another site's page
    # triggers: a change needs the token only this origin's pages can have read.
    if request.method not in _SAFE_METHODS and not csrf_matches(
        session_id, request.headers.get(CSRF_HEADER)
    ):
        raise NotAllowed(
            "CSRF token missing or wrong",
            f"a {request.method} with the session cookie must send the session's CSRF token "
            f"in the {CSRF_HEADER} header (from POST /auth/login or GET /auth/session)",
        )
    request.state.actor = active.actor
    return active


async def get_actor(
    request: Request,
    container: ContainerDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Actor:
    """The token's (or web session's) caller, also left in request.state.actor for the
    access log. A bearer token wins over a cookie: it is never sent by a browser on its
    own, so it needs no CSRF token."""
    if credentials is None:
        active = await web_session(request, container)
        if active is not None:
            return active.actor
        raise Unauthenticated(
            "Authentication required",
            "send `Authorization: Bearer <token>`; a security administrator issues tokens "
            "with `mrb token issue --role R --hospital H --subject NAME`; people sign in to "
            "the web pages at /login",
        )
    token = credentials.credentials
    oidc = container.oidc_verifier()
    try:
        if oidc is not None and oidc.claims_to_be_mine(token):
            identity = await oidc.verify(token)
            actor = await user_service.actor_for(container.access_lookups(), identity)
        else:
            if oidc is not None and unverified_issuer(token) not in (None, ISSUER):
                raise InvalidToken(
                    f"the token's issuer {str(unverified_issuer(token))[:100]!r} is not "
                    f"trusted here: only mrb's own tokens and those of {oidc.issuer} are"
                )
            verified = container.token_verifier().verify(token)
            await container.token_revocations().check(verified.actor.token_id or "")
            actor = verified.actor
    except TokenRevoked as exc:
        raise Unauthenticated("Token revoked", str(exc)) from None
    except InvalidToken as exc:
        raise Unauthenticated("Invalid token", str(exc)) from None
    except IssuerUnavailable as exc:
        raise Unavailable("Authentication unavailable", str(exc)) from None
    request.state.actor = actor
    return actor


def require(duty: Duty) -> Callable[[Actor], Awaitable[Actor]]:
    """A dependency that admits only callers whose role has `duty`."""

    async def check(actor: Annotated[Actor, Depends(get_actor)]) -> Actor:
        if actor.role not in GRANTS[duty]:
            allowed = ", ".join(sorted(r.value for r in GRANTS[duty]))
            raise NotAllowed(
                "Forbidden",
                f"{duty.value} needs the role {allowed}; the token's role is {actor.role}",
            )
        return actor

    return check


ReferenceDep = Annotated[Actor, Depends(require(Duty.REFERENCE))]
DoctorDep = Annotated[Actor, Depends(require(Duty.RECOGNITION))]
SavingsDep = Annotated[Actor, Depends(require(Duty.SAVINGS))]
CityReportsDep = Annotated[Actor, Depends(require(Duty.CITY_REPORTS))]
LedgerReadDep = Annotated[Actor, Depends(require(Duty.LEDGER_READ))]
LedgerCloseDep = Annotated[Actor, Depends(require(Duty.LEDGER_CLOSE))]
RegistryDep = Annotated[Actor, Depends(require(Duty.REGISTRY))]
CertifyDep = Annotated[Actor, Depends(require(Duty.CERTIFY))]
MappingsDep = Annotated[Actor, Depends(require(Duty.MAPPINGS))]
TokensDep = Annotated[Actor, Depends(require(Duty.TOKENS))]
