"""Rate limits at the API edge, and the hook for routes that name a patient.

`RateLimits` is pure ASGI middleware around the whole app: each request counts against
its client address and, when it carries an mrb token that verifies, against the token's
person (subject and hospital), or, from the web pages, against its session. A request
over either limit gets 429 with a problem body and `Retry-After` before it is parsed or
authenticated, except on the routes that may serve an emergency (a recognition check, a
CDS Hooks call): those still run, and
`broker.services.rate_limits.admit` refuses them once it knows whether they are an
emergency (an emergency is let through and audited as break-glass). Every 429 the app
answers for a limit (the distinct-patient limit, from a route or the FHIR service) also
gets `Retry-After` here.

Health probes and the web pages' static files are not counted.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
from collections.abc import Callable

from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from broker.api.deps import session_cookie
from broker.api.problems import problem
from broker.bootstrap import Container
from broker.domain.actors import Actor
from broker.domain.identifiers import InvalidIdentifier
from broker.services.rate_limits import THROTTLE, Refusal, Throttle, admit

EXEMPT_PATHS = frozenset({"/healthz", "/readyz"})
EXEMPT_PREFIXES = ("/static/",)
CHECK_PATH = "/api/v1/recognition/check"
_CDS_CALL = re.compile(r"/cds-services/[^/]+")


def may_be_emergency(method: str, path: str) -> bool:
    """A recognition check or a CDS service call: it decides on the limits itself."""
    return method == "POST" and (path == CHECK_PATH or _CDS_CALL.fullmatch(path) is not None)


def _bearer(scope: Scope) -> str | None:
    for key, value in scope.get("headers", ()):
        if key.lower() == b"authorization":
            scheme, _, token = bytes(value).decode("latin-1").partition(" ")
            if scheme.lower() != "bearer" or not token.strip():
                return None
            return token.strip()
    return None


# The person a bearer token names ("hospital/subject"), or None when it names none.
Identify = Callable[[str], str | None]


def token_person(container: Container) -> Identify:
    """The person of an mrb token whose signature verifies.

    Only the signature and claims are checked here (no database): an EHR's CDS JWT, an
    expired or forged token names nobody and counts only against its address; the route
    still authenticates every request as before.
    """

    def identify(token: str) -> str | None:
        oidc = container.oidc_verifier()
        if oidc is not None and oidc.claims_to_be_mine(token):
            # A person of the OpenID Connect issuer, by subject (their hospital is in the
            # database, not the token), checked with the issuer keys already read.
            identity = oidc.verify_cached(token)
            return None if identity is None else f"oidc/{identity.subject}"
        try:
            actor = container.token_verifier().verify(token).actor
        except Exception:  # any token the verifier refuses: the route will answer 401
            return None
        return f"{actor.hospital}/{actor.name}"

    return identify


class RateLimits:
    """429 with Retry-After for requests over the per-address or per-token limit."""

    def __init__(self, app: ASGIApp, container: Container, identify: Identify) -> None:
        self.app = app
        self.container = container
        self.identify = identify

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if scope["type"] != "http" or path in EXEMPT_PATHS or path.startswith(EXEMPT_PREFIXES):
            await self.app(scope, receive, send)
            return
        throttle = Throttle()
        token = THROTTLE.set(throttle)
        try:
            refusal = await self._count(scope)
            if refusal is not None:
                if not may_be_emergency(scope["method"], path):
                    throttle.refused = refusal
                    await _refuse(refusal, scope, receive, send)
                    return
                throttle.deferred = refusal

            async def send_retry_after(message: Message) -> None:
                if (
                    message["type"] == "http.response.start"
                    and message["status"] == 429
                    and throttle.refused is not None
                ):
                    headers = [
                        (k, v) for k, v in message.get("headers", ()) if k.lower() != b"retry-after"
                    ]
                    headers.append((b"retry-after", str(throttle.refused.retry_after).encode()))
                    message = {**message, "headers": headers}
                await send(message)

            await self.app(scope, receive, send_retry_after)
        finally:
            THROTTLE.reset(token)

    async def _count(self, scope: Scope) -> Refusal | None:
        """The address's refusal, else the token's (or session's), else None. Both hits
        are sent at once: two round trips overlap on every request (a request refused for
        its address still counts against its token, which did send it)."""
        limiter = self.container.rate_limiter()
        client = scope.get("client")
        bearer = _bearer(scope)
        person = self.identify(bearer) if bearer else self._session(scope)
        hits = []
        if client:
            hits.append(limiter.address(str(client[0])))
        if person is not None:
            hits.append(limiter.token(person))
        refusals = await asyncio.gather(*hits)
        return next((r for r in refusals if r is not None), None)

    def _session(self, scope: Scope) -> str | None:
        """A web page's caller, by their session cookie: counted per session, without the
        database read that names the account (the route does that). A forged cookie
        counts too, which costs the forger, not anyone else."""
        cookie = Request(scope).cookies.get(session_cookie(self.container.settings))
        if not cookie:
            return None
        return "session/" + hashlib.sha256(cookie.encode()).hexdigest()[:32]


async def _refuse(refusal: Refusal, scope: Scope, receive: Receive, send: Send) -> None:
    response = problem(429, "Too Many Requests", refusal.detail, limit=refusal.limit)
    response.headers["Retry-After"] = str(refusal.retry_after)
    await response(scope, receive, send)


async def admit_check(
    container: Container, actor: Actor, system: str | None, value: str, *, emergency: bool
) -> None:
    """The limits of `POST /api/v1/recognition/check`: the request limits the edge deferred
    and the distinct-patient limit; an emergency passes as break-glass (else 429)."""
    try:
        ident = container.identifiers().lookup(system, value, hospital=actor.hospital)
    except InvalidIdentifier:
        ident = None  # refused by the check itself (422), having looked nobody up
    patients = [container.pseudonyms.of(ident)] if ident is not None else []
    await admit(
        container.rate_limiter(),
        container.read_audit(),
        actor,
        patients=patients,
        emergency=emergency,
        channel="api",
    )
