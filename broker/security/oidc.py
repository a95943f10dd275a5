"""Bearer tokens from an OpenID Connect issuer: people who log in through the hospital's
or the city's identity provider (Keycloak, Azure AD, Authing, …) instead of holding a
token from `mrb token issue`.

When MRB_OIDC_ISSUER is set, a token whose (unverified) `iss` is exactly that issuer is
checked here, and nowhere else:

- the header's `alg` is RS256, ES256 or EdDSA — `none`, HS* (an HMAC "signed" with the
  public key) and everything else are refused before any key is looked at — and it names
  a `kid`;
- the signature verifies with the JWK of that `kid` in the issuer's JWK Set, read from
  MRB_OIDC_JWKS_URL or, unset, from the `jwks_uri` of
  `{issuer}/.well-known/openid-configuration` (whose `issuer` must be the configured one).
  The set is cached; a `kid` not in it re-reads it, at most once per
  `min_refresh` seconds (a flood of made-up kids cannot make mrb hammer the issuer), and
  it is re-read anyway once it is `max_age` old (a key the issuer dropped stops being
  trusted). Keys must be signing keys (`use` absent or `sig`), public only, of a type
  that fits the `alg` (RSA of at least 2048 bits, EC P-256, OKP Ed25519);
- `iss` is the configured issuer, `aud` is or contains MRB_OIDC_AUDIENCE, `exp`, `iat`
  and `sub` are present, `exp`, `iat` and `nbf` hold with CLOCK_SKEW of leeway, and
  `exp − iat` is at most the people cap (MRB_TOKEN_MAX_TTL_PEOPLE).

What the person may do is not in the token: broker/services/users.py maps issuer and
subject to a role and hospital in mrb's own `oidc_user` table.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

import httpx
import jwt
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey

from broker.security.tokens import CLOCK_SKEW, InvalidToken, describe

logger = logging.getLogger(__name__)

ALGORITHMS = ("RS256", "ES256", "EdDSA")
# What a JWK must be for each accepted algorithm: its kty, and its curve where it has one.
_KEY_TYPES: dict[str, tuple[str, frozenset[str | None]]] = {
    "RS256": ("RSA", frozenset({None})),
    "ES256": ("EC", frozenset({"P-256"})),
    "EdDSA": ("OKP", frozenset({"Ed25519"})),
}
_PRIVATE_MEMBERS = ("d", "p", "q", "dp", "dq", "qi", "k")
MIN_RSA_BITS = 2048
MAX_DOCUMENT_BYTES = 512 * 1024  # a discovery document or JWK Set larger than this is refused
MAX_SUBJECT = 255  # OpenID Connect Core 1.0 §2: `sub` is at most 255 ASCII characters
LOOPBACK_HOSTS = frozenset({"localhost", "127.0.0.1", "::1"})


class IssuerUnavailable(Exception):
    """The issuer's discovery document or JWK Set cannot be read, and no keys are known."""


def issuer_url(value: str, *, setting: str) -> str:
    """An issuer or JWKS URL as configured: https (http only to this machine), absolute,
    without user, query or fragment. Returned unchanged: `iss` is compared exactly."""
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 - raises ValueError for a malformed port
    except ValueError:
        raise ValueError(f"{setting} {value[:100]!r} is not a URL") from None
    host = (parts.hostname or "").lower()
    if not host:
        raise ValueError(f"{setting} must be an absolute URL, not {value[:100]!r}")
    if parts.scheme != "https" and not (parts.scheme == "http" and _loopback(host)):
        raise ValueError(f"{setting} must be https (http only for this machine's loopback)")
    if parts.username is not None or parts.password is not None:
        raise ValueError(f"{setting} takes no user or password")
    if parts.query or parts.fragment or "?" in value or "#" in value:
        raise ValueError(f"{setting} takes no query or fragment")
    return value


def _loopback(host: str) -> bool:
    if host in LOOPBACK_HOSTS:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def unverified_issuer(token: str) -> str | None:
    """The `iss` a token claims, before anything is verified (to pick its verifier)."""
    try:
        claims = jwt.decode(token, options={"verify_signature": False})
    except jwt.PyJWTError:
        return None
    iss = claims.get("iss")
    return iss if isinstance(iss, str) else None


@dataclass(frozen=True)
class OidcConfig:
    issuer: str
    audience: str
    jwks_url: str | None = None  # None: discovered from the issuer
    max_lifetime: timedelta = timedelta(hours=8)  # the people cap
    min_refresh: float = 60.0  # seconds between two reads of the JWK Set, at least
    max_age: float = 600.0  # seconds a JWK Set is used before it is read again
    timeout: float = 5.0

    @property
    def discovery_url(self) -> str:
        return self.issuer.rstrip("/") + "/.well-known/openid-configuration"


@dataclass(frozen=True)
class OidcIdentity:
    """Who the issuer says the caller is; what they may do is mrb's to say."""

    issuer: str
    subject: str
    key_id: str
    issued_at: datetime
    expires_at: datetime
    token_id: str | None  # the token's `jti`, when the issuer sets one


class OidcVerifier:
    """Verifies the configured issuer's tokens against its JWK Set, read over HTTP."""

    def __init__(
        self,
        config: OidcConfig,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config = config
        self._transport = transport
        self._clock = clock
        self._keys: dict[str, dict[str, Any]] = {}  # kid -> JWK, public signing keys only
        self._read_at: float | None = None  # when the set was last read successfully
        self._tried_at: float | None = None  # when it was last asked for, read or not
        self._jwks_url = config.jwks_url
        self._lock = asyncio.Lock()
        self.fetches = 0  # JWK Set reads made, for the log and the tests

    @property
    def issuer(self) -> str:
        return self.config.issuer

    def claims_to_be_mine(self, token: str) -> bool:
        return unverified_issuer(token) == self.config.issuer

    async def verify(self, token: str) -> OidcIdentity:
        """The caller the token names; InvalidToken saying why not, IssuerUnavailable when
        no key of the issuer could ever be read."""
        alg, kid = _header(token)
        return self._check(token, _signing_key(await self._key(kid), kid, alg), kid, alg)

    def verify_cached(self, token: str) -> OidcIdentity | None:
        """The caller, checked as `verify` does but with the keys already read only (no
        network): for the rate limits, before the route authenticates. None when refused
        or when the key is not known yet."""
        try:
            alg, kid = _header(token)
            jwk = self._keys.get(kid)
            if jwk is None:
                return None
            return self._check(token, _signing_key(jwk, kid, alg), kid, alg)
        except InvalidToken:
            return None

    def _check(self, token: str, key: jwt.PyJWK, kid: str, alg: str) -> OidcIdentity:
        c = self.config
        try:
            claims = jwt.decode(
                token,
                key,
                algorithms=[alg],
                audience=c.audience,
                issuer=c.issuer,
                leeway=CLOCK_SKEW,
                options={
                    "require": ["exp", "iat", "sub", "aud", "iss"],
                    "enforce_minimum_key_length": True,
                },
            )
        except jwt.ExpiredSignatureError:
            raise InvalidToken("the token has expired; log in again") from None
        except jwt.PyJWTError as exc:
            raise InvalidToken(f"the token is not valid: {exc}") from None
        issued_at, expires_at = _instant(claims["iat"]), _instant(claims["exp"])
        if expires_at - issued_at > c.max_lifetime:
            raise InvalidToken(
                f"the token lives {describe(expires_at - issued_at)}, longer than the "
                f"{describe(c.max_lifetime)} allowed for a person's token "
                "(MRB_TOKEN_MAX_TTL_PEOPLE)"
            )
        subject = claims["sub"]
        if not isinstance(subject, str) or not subject.strip() or len(subject) > MAX_SUBJECT:
            raise InvalidToken(f"the token's subject must be 1-{MAX_SUBJECT} characters")
        jti = claims.get("jti")
        return OidcIdentity(
            issuer=c.issuer,
            subject=subject,
            key_id=kid,
            issued_at=issued_at,
            expires_at=expires_at,
            token_id=jti[:200] if isinstance(jti, str) and jti else None,
        )

    async def _key(self, kid: str) -> dict[str, Any]:
        """The JWK named `kid`: from the cached set, else from a fresh read if one is due."""
        async with self._lock:  # concurrent requests with a new kid wait for one read
            now = self._clock()
            stale = self._read_at is None or now - self._read_at >= self.config.max_age
            if kid in self._keys and not stale:
                return self._keys[kid]
            if self._may_read(now):
                await self._read(now)
            if kid in self._keys:
                return self._keys[kid]
        if self._read_at is None:
            raise IssuerUnavailable(f"no signing keys of {self.config.issuer} could be read")
        raise InvalidToken(f"the token's key {kid[:64]!r} is not among the issuer's keys")

    def _may_read(self, now: float) -> bool:
        if self._tried_at is None:
            return True
        since = now - self._tried_at
        if self._read_at is None:  # never read: retry sooner, the issuer may be starting
            return since >= min(5.0, self.config.min_refresh)
        return since >= self.config.min_refresh

    async def _read(self, now: float) -> None:
        self._tried_at = now
        try:
            async with httpx.AsyncClient(
                transport=self._transport,
                timeout=self.config.timeout,
                follow_redirects=False,
                trust_env=False,
            ) as client:
                if self._jwks_url is None:
                    self._jwks_url = await self._discover(client)
                document = await _get_json(client, self._jwks_url)
            keys = _usable_keys(document, self._jwks_url)
        except (httpx.HTTPError, ValueError) as exc:
            if self.config.jwks_url is None:
                self._jwks_url = None  # discover again next time
            kept = "the keys read before stay in use" if self._read_at is not None else "none"
            logger.warning("OpenID Connect keys of %s not read (%s); %s", self.issuer, exc, kept)
            return
        self.fetches += 1
        self._keys, self._read_at = keys, now
        logger.info(
            "OpenID Connect keys of %s read from %s: %s",
            self.issuer,
            self._jwks_url,
            ", ".join(sorted(keys)) or "none usable",
        )

    async def _discover(self, client: httpx.AsyncClient) -> str:
        url = self.config.discovery_url
        document = await _get_json(client, url)
        if document.get("issuer") != self.config.issuer:
            raise ValueError(
                f"{url} names issuer {str(document.get('issuer'))[:100]!r}, "
                f"not {self.config.issuer!r} (MRB_OIDC_ISSUER must match it exactly)"
            )
        jwks_uri = document.get("jwks_uri")
        if not isinstance(jwks_uri, str):
            raise ValueError(f"{url} has no jwks_uri")
        return issuer_url(jwks_uri, setting=f"jwks_uri of {url}")


async def _get_json(client: httpx.AsyncClient, url: str) -> dict[str, Any]:
    async with client.stream("GET", url, headers={"Accept": "application/json"}) as response:
        if response.status_code != 200:
            raise ValueError(f"{url} answered HTTP {response.status_code}")
        body = bytearray()
        async for chunk in response.aiter_bytes():
            body += chunk
            if len(body) > MAX_DOCUMENT_BYTES:
                raise ValueError(f"{url} sent more than {MAX_DOCUMENT_BYTES} bytes")
    try:
        document = json.loads(bytes(body))
    except ValueError:
        raise ValueError(f"{url} did not send JSON") from None
    if not isinstance(document, dict):
        raise ValueError(f"{url} did not send a JSON object")
    return document


def _usable_keys(document: dict[str, Any], url: str) -> dict[str, dict[str, Any]]:
    """The public signing keys of a JWK Set, by kid; others are skipped (and logged)."""
    keys = document.get("keys")
    if not isinstance(keys, list):
        raise ValueError(f"{url} is not a JWK Set (no 'keys' list)")
    usable: dict[str, dict[str, Any]] = {}
    for jwk in keys:
        if not isinstance(jwk, dict):
            continue
        kid = jwk.get("kid")
        why = None
        if not isinstance(kid, str) or not kid:
            why = "it has no kid"
        elif jwk.get("use") not in (None, "sig"):
            why = f"its use is {jwk.get('use')!r}"
        elif any(m in jwk for m in _PRIVATE_MEMBERS) or jwk.get("kty") == "oct":
            why = "it is a private or symmetric key"
        elif not any(_fits(jwk, alg) for alg in ALGORITHMS):
            why = f"no accepted algorithm fits it ({jwk.get('kty')}, {jwk.get('alg')})"
        if why is not None:
            logger.info("OpenID Connect key %r at %s skipped: %s", kid, url, why)
            continue
        assert isinstance(kid, str)
        usable[kid] = jwk
    return usable


def _header(token: str) -> tuple[str, str]:
    """The token's `alg` (one of ALGORITHMS) and `kid`, or InvalidToken."""
    try:
        header = jwt.get_unverified_header(token)
    except jwt.PyJWTError:
        raise InvalidToken("the token is not a JWT") from None
    alg = header.get("alg")
    if alg not in ALGORITHMS:
        raise InvalidToken(
            f"OpenID Connect tokens are accepted signed with {', '.join(ALGORITHMS)}; "
            f"{str(alg)[:20]!r} is refused"
        )
    kid = header.get("kid")
    if not isinstance(kid, str) or not kid:
        raise InvalidToken("the token names no signing key (kid)")
    return str(alg), kid


def _fits(jwk: dict[str, Any], alg: str) -> bool:
    kty, curves = _KEY_TYPES[alg]
    named = jwk.get("alg")
    return jwk.get("kty") == kty and jwk.get("crv") in curves and named in (None, alg)


def _signing_key(jwk: dict[str, Any], kid: str, alg: str) -> jwt.PyJWK:
    if not _fits(jwk, alg):
        raise InvalidToken(f"key {kid[:64]!r} is not a {alg} key")
    try:
        key = jwt.PyJWK(jwk, algorithm=alg)
    except (jwt.PyJWTError, KeyError, TypeError, ValueError) as exc:
        raise InvalidToken(f"key {kid[:64]!r} is not a usable {alg} key: {exc}") from None
    if isinstance(key.key, RSAPublicKey) and key.key.key_size < MIN_RSA_BITS:
        raise InvalidToken(f"key {kid[:64]!r} is an RSA key under {MIN_RSA_BITS} bits")
    return key


def _instant(value: Any) -> datetime:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidToken("the token's times are not numbers")
    return datetime.fromtimestamp(value, UTC)
