"""Trusting CDS clients (CDS Hooks 2.0): the EHR's signed JWT on every service call.

The EHR signs a short-lived JWT with its private key (ES384 or RS384 recommended by the
spec; the other asymmetric JWS algorithms below are accepted, never `none` or HMAC).
mrb accepts it when:

- the header has `alg` (allowed), `kid`, and `typ` "JWT" when present;
- `iss` is a registered, unrevoked client (the registry maps it to a hospital);
- a `jku` header, if sent, is exactly the client's registered JWKS URL (mrb never
  fetches a key from a URL it was not given by an administrator);
- the signature verifies with the JWK named by `kid` in the client's JWK Set (from its
  registered URL, cached, re-read once when a new `kid` appears, or given inline);
- `aud` is the URL of the service called as mrb publishes it (MRB_PUBLIC_BASE_URL +
  `cds-services/{id}`, never built from the request's Host header), `exp` is in the
  future and at most an hour away, `iat` is present and not in the future, `jti` is
  present and never seen before.

Every refusal is a ClientRejected whose message is for the log only: the caller gets a
plain 401 (the spec's best practices: do not tell an attacker what was wrong).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

import jwt

from broker.ports.cds import RegisteredClient as RegisteredClient  # kept here for callers

ALGORITHMS = ("ES384", "RS384", "ES256", "ES512", "RS256", "RS512", "PS256", "PS384", "PS512")
LEEWAY_SECONDS = 30
MAX_LIFETIME = timedelta(hours=1)  # exp may be at most this far ahead
JTI_MAX = 200
REQUIRED_CLAIMS = ["iss", "aud", "exp", "iat", "jti"]


class ClientRejected(Exception):
    """The JWT is not accepted; the message says why (for logs, never for the caller)."""


@dataclass(frozen=True)
class AuthenticatedClient:
    issuer: str
    hospital: str
    jti: str
    expires_at: datetime
    subject: str | None = None  # not defined by 2.0; kept for logs when an EHR sends it
    tenant: str | None = None
    fhir_servers: tuple[str, ...] = ()  # the client's registered FHIR server bases


class ClientRegistry(Protocol):
    async def client(self, issuer: str) -> RegisteredClient | None: ...


class ReplayGuard(Protocol):
    async def first_use(self, issuer: str, jti: str, expires_at: datetime) -> bool:
        """Remember the jti until it expires; False when it was used before."""
        ...


class JwksCache:
    """JWK Sets read from clients' JWKS URLs (with PyJWKClient), kept for `ttl` seconds.

    A `kid` not in the cached set re-reads the URL, at most once per `min_refresh`
    seconds per URL (a flood of unknown kids cannot make mrb hammer the EHR).
    """

    def __init__(self, ttl: float = 300.0, min_refresh: float = 30.0, timeout: float = 5.0):
        self.ttl = ttl
        self.min_refresh = min_refresh
        self.timeout = timeout
        self._sets: dict[str, tuple[float, dict[str, Any]]] = {}
        self._locks: dict[str, asyncio.Lock] = {}  # one per URL: a slow EHR delays only itself

    async def get(self, url: str, *, refresh: bool = False) -> dict[str, Any]:
        async with self._locks.setdefault(url, asyncio.Lock()):
            held = self._sets.get(url)
            if held is not None:
                age = time.monotonic() - held[0]
                wanted = refresh and age >= self.min_refresh
                if age < self.ttl and not wanted:
                    return held[1]
            try:
                data = await asyncio.to_thread(self._fetch, url)
            except (jwt.PyJWKClientError, ValueError) as exc:
                if held is not None:  # an outage of the EHR's endpoint: keep the known keys
                    return held[1]
                raise ClientRejected(f"JWKS at {url} unavailable: {exc}") from None
            self._sets[url] = (time.monotonic(), data)
            return data

    def _fetch(self, url: str) -> dict[str, Any]:
        data: dict[str, Any] = jwt.PyJWKClient(
            url, cache_jwk_set=False, timeout=self.timeout
        ).fetch_data()
        return data


async def authenticate(
    token: str,
    *,
    audience: str,
    registry: ClientRegistry,
    replay: ReplayGuard,
    jwks_cache: JwksCache,
    now: datetime | None = None,
) -> AuthenticatedClient:
    """The client that signed `token` for a call to `audience`, or ClientRejected."""
    now = now or datetime.now(UTC)
    try:
        header = jwt.get_unverified_header(token)
        unverified = jwt.decode(token, options={"verify_signature": False})
    except jwt.PyJWTError as exc:
        raise ClientRejected(f"not a JWT: {exc}") from None
    alg = header.get("alg")
    if alg not in ALGORITHMS:
        raise ClientRejected(f"alg {alg!r} is not accepted")
    typ = header.get("typ")
    if typ is not None and (not isinstance(typ, str) or typ.upper() != "JWT"):
        raise ClientRejected(f"typ {typ!r} is not JWT")
    kid = header.get("kid")
    if not isinstance(kid, str) or not kid:
        raise ClientRejected("the header has no kid")
    issuer = unverified.get("iss")
    if not isinstance(issuer, str) or not issuer:
        raise ClientRejected("the token has no iss")
    client = await registry.client(issuer)
    if client is None:
        raise ClientRejected(f"issuer {issuer!r} is not a registered CDS client")
    jku = header.get("jku")
    if jku is not None and jku != client.jwks_url:
        raise ClientRejected(f"jku {jku!r} is not the JWKS URL registered for {issuer!r}")
    key = await _signing_key(client, kid, alg, jwks_cache)
    try:
        claims = jwt.decode(
            token,
            key,
            algorithms=[alg],
            audience=audience,
            issuer=issuer,
            leeway=LEEWAY_SECONDS,
            options={"require": REQUIRED_CLAIMS},
        )
    except jwt.PyJWTError as exc:
        raise ClientRejected(f"{type(exc).__name__}: {exc}") from None
    expires_at = datetime.fromtimestamp(int(claims["exp"]), UTC)
    if expires_at - now > MAX_LIFETIME + timedelta(seconds=LEEWAY_SECONDS):
        raise ClientRejected(f"exp is more than {MAX_LIFETIME} ahead")
    jti = claims["jti"]
    if not isinstance(jti, str) or not jti or len(jti) > JTI_MAX:
        raise ClientRejected("jti must be a string of 1-200 characters")
    if not await replay.first_use(issuer, jti, expires_at):
        raise ClientRejected(f"jti {jti!r} was already used (replay)")
    sub, tenant = claims.get("sub"), claims.get("tenant")
    return AuthenticatedClient(
        issuer=issuer,
        hospital=client.hospital,
        jti=jti,
        expires_at=expires_at,
        subject=sub if isinstance(sub, str) else None,
        tenant=tenant if isinstance(tenant, str) else None,
        fhir_servers=client.fhir_servers,
    )


async def _signing_key(client: RegisteredClient, kid: str, alg: str, cache: JwksCache) -> jwt.PyJWK:
    if client.jwks is not None:
        jwk = _find(client.jwks, kid)
    elif client.jwks_url:
        jwk = _find(await cache.get(client.jwks_url), kid)
        if jwk is None:  # a rotated key: read the set again (rate-limited)
            jwk = _find(await cache.get(client.jwks_url, refresh=True), kid)
    else:
        raise ClientRejected(f"client {client.issuer!r} has no keys registered")
    if jwk is None:
        raise ClientRejected(f"kid {kid!r} is not in {client.issuer!r}'s JWK Set")
    if jwk.get("use") not in (None, "sig"):
        raise ClientRejected(f"kid {kid!r} is not a signing key")
    if any(private in jwk for private in ("d", "k")):
        raise ClientRejected(f"kid {kid!r} is a private or symmetric key")
    named = jwk.get("alg")
    if named is not None and named != alg:
        raise ClientRejected(f"kid {kid!r} is for {named}, the token says {alg}")
    try:
        return jwt.PyJWK(jwk, algorithm=alg)
    except (jwt.PyJWTError, KeyError, TypeError, ValueError) as exc:
        raise ClientRejected(f"kid {kid!r} is not a usable {alg} key: {exc}") from None


def _find(jwks: dict[str, Any], kid: str) -> dict[str, Any] | None:
    keys = jwks.get("keys") if isinstance(jwks, dict) else None
    for key in keys if isinstance(keys, list) else []:
        if isinstance(key, dict) and key.get("kid") == kid:
            return key
    return None
