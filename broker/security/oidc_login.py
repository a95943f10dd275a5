"""Signing in to the web pages through the OpenID Connect issuer (MRB_OIDC_ISSUER): the
authorization code flow with PKCE (RFC 7636, S256), as a confidential client (client
secret, HTTP Basic) or a public one (PKCE alone).

1. `start()` makes a fresh `state`, `nonce` and PKCE verifier and the issuer's
   authorization URL (read from `{issuer}/.well-known/openid-configuration`, whose
   `issuer` must be the configured one). The three secrets go to the browser only in a
   short-lived flow cookie, HMAC-signed here (`seal` / `unseal`): no server-side state,
   and only the browser that started the sign-in can finish it.
2. `finish()` exchanges the code, with the verifier, at the token endpoint, and checks the
   ID token with broker/security/oidc.py's verifier (signature by the issuer's JWKS, `iss`,
   `aud` = the client id, `exp`, `iat`, lifetime), then its `nonce` against the cookie's
   and, when present, `azp` against the client id.

What the person may do is not in the token: broker/services/web_login.py maps issuer and
subject through the `oidc_user` table, exactly as for the API's bearer tokens.

Why no OAuth library (authlib): the security-relevant half, checking the ID token, must
stay in broker/security/oidc.py (its algorithm and key rules are the API's); what is left
is a URL with six parameters and one form POST, fewer lines than adapting a client
library's session and error types.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
from dataclasses import dataclass, replace
from typing import Any
from urllib.parse import urlencode

import httpx
import jwt

from broker.security.oidc import (
    MAX_DOCUMENT_BYTES,
    IssuerUnavailable,
    OidcIdentity,
    OidcVerifier,
    issuer_url,
)
from broker.security.tokens import InvalidToken

FLOW_MAX_AGE = 600  # seconds from start to callback, at most
_FLOW_VERSION = 1
_MAX_COOKIE = 1024
_ERROR_CODE_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz_")


@dataclass(frozen=True)
class OidcLoginConfig:
    client_id: str
    client_secret: str | None  # None: a public client, PKCE only
    redirect_uri: str
    scopes: str = "openid profile"
    state_key: str | None = None  # None: from the client secret, else random per process
    timeout: float = 5.0


class LoginRefused(Exception):
    """The sign-in cannot finish: `reason` is a short code for the audit and the log,
    `title` and `detail` are for the person at the browser."""

    def __init__(self, reason: str, title: str, detail: str, *, status: int = 400) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.title = title
        self.detail = detail
        self.status = status


@dataclass(frozen=True)
class PendingLogin:
    """A sign-in between start and callback: what only the starting browser holds."""

    state: str
    nonce: str
    verifier: str  # PKCE code_verifier: 43-128 unreserved characters (RFC 7636 §4.1)
    started_at: int  # Unix seconds

    @classmethod
    def new(cls, now: float | None = None) -> PendingLogin:
        return cls(
            state=secrets.token_urlsafe(32),
            nonce=secrets.token_urlsafe(32),
            verifier=secrets.token_urlsafe(48),  # 64 characters, 384 bits
            started_at=int(time.time() if now is None else now),
        )

    @property
    def challenge(self) -> str:
        return code_challenge(self.verifier)


@dataclass(frozen=True)
class SignedIn:
    """Whom the issuer's ID token names, verified."""

    identity: OidcIdentity
    display_name: str | None  # the token's `name` or `preferred_username`, if any


def code_challenge(verifier: str) -> str:
    """The S256 code challenge: BASE64URL(SHA-256(verifier)) without padding."""
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class OidcLogin:
    """The web sign-in of one issuer and client: its endpoints, read once, and the flow."""

    def __init__(
        self,
        config: OidcLoginConfig,
        verifier: OidcVerifier,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.config = config
        # The ID token names the client in `aud`; the API's verifier may expect another
        # audience (an API audience), so the ID token gets a verifier of its own.
        if verifier.config.audience != config.client_id:
            verifier = OidcVerifier(
                replace(verifier.config, audience=config.client_id), transport=transport
            )
        self.verifier = verifier
        self._transport = transport
        self._endpoints: tuple[str, str] | None = None
        key = config.state_key or (
            f"mrb oidc flow v1 {config.client_secret}" if config.client_secret else None
        )
        self._key = (
            hashlib.sha256(key.encode()).digest() if key is not None else secrets.token_bytes(32)
        )

    @property
    def issuer(self) -> str:
        return self.verifier.issuer

    # The flow cookie: base64url(JSON) "." base64url(HMAC-SHA256), bound to this client.

    def seal(self, pending: PendingLogin) -> str:
        payload = _b64(
            json.dumps(
                {
                    "v": _FLOW_VERSION,
                    "s": pending.state,
                    "n": pending.nonce,
                    "c": pending.verifier,
                    "t": pending.started_at,
                },
                separators=(",", ":"),
            ).encode()
        )
        return f"{payload}.{_b64(self._mac(payload))}"

    def unseal(self, value: str | None, *, now: float | None = None) -> PendingLogin:
        """The pending sign-in of a flow cookie; LoginRefused when there is none, it was
        altered, or it is older than FLOW_MAX_AGE."""
        again = "start again from the sign-in page"
        if not value:
            raise LoginRefused(
                "no_flow",
                "No sign-in in progress",
                "this browser has not started a sign-in, or it was already finished: " + again,
            )
        payload, _, mac = value.partition(".")
        try:
            good = len(value) <= _MAX_COOKIE and hmac.compare_digest(
                _unb64(mac), self._mac(payload)
            )
            data = json.loads(_unb64(payload)) if good else None
        except ValueError:
            data = None
        if not isinstance(data, dict) or data.get("v") != _FLOW_VERSION:
            raise LoginRefused(
                "bad_flow", "Sign-in not recognised", "the sign-in's cookie is not valid: " + again
            )
        try:
            pending = PendingLogin(
                state=str(data["s"]),
                nonce=str(data["n"]),
                verifier=str(data["c"]),
                started_at=int(data["t"]),
            )
        except (KeyError, TypeError, ValueError):
            raise LoginRefused(
                "bad_flow", "Sign-in not recognised", "the sign-in's cookie is not valid: " + again
            ) from None
        age = (time.time() if now is None else now) - pending.started_at
        if not 0 <= age <= FLOW_MAX_AGE:
            raise LoginRefused(
                "flow_expired",
                "Sign-in took too long",
                f"a sign-in must finish within {FLOW_MAX_AGE // 60} minutes: " + again,
            )
        return pending

    def _mac(self, payload: str) -> bytes:
        message = f"{self.issuer}\n{self.config.client_id}\n{payload}".encode()
        return hmac.new(self._key, message, hashlib.sha256).digest()

    # The flow.

    async def start(self, pending: PendingLogin) -> str:
        """The issuer's authorization URL to send the browser to."""
        authorization, _ = await self._discover()
        query = urlencode(
            {
                "response_type": "code",
                "client_id": self.config.client_id,
                "redirect_uri": self.config.redirect_uri,
                "scope": self.config.scopes,
                "state": pending.state,
                "nonce": pending.nonce,
                "code_challenge": pending.challenge,
                "code_challenge_method": "S256",
            }
        )
        return f"{authorization}?{query}"

    def check_state(self, pending: PendingLogin, state: str | None) -> None:
        if state is None or not hmac.compare_digest(pending.state.encode(), state.encode()):
            raise LoginRefused(
                "state_mismatch",
                "Sign-in not recognised",
                "the answer from the sign-in service does not belong to the sign-in this "
                "browser started: start again from the sign-in page",
            )

    async def finish(self, pending: PendingLogin, code: str) -> SignedIn:
        """Exchange the code (with the PKCE verifier) and verify the ID token."""
        if not code or len(code) > 2048:
            raise LoginRefused("no_code", "Sign-in failed", "the sign-in service sent no code")
        _, token_endpoint = await self._discover()
        form = {
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": self.config.redirect_uri,
            "code_verifier": pending.verifier,
            "client_id": self.config.client_id,
        }
        auth = None
        if self.config.client_secret is not None:
            auth = httpx.BasicAuth(
                _form_encode(self.config.client_id), _form_encode(self.config.client_secret)
            )
        try:
            async with self._client() as client:
                status, answer = await _post_form(client, token_endpoint, form, auth)
        except (httpx.HTTPError, ValueError) as exc:
            raise LoginRefused(
                "issuer_unreachable",
                "Sign-in service unavailable",
                f"the sign-in service's token endpoint could not be used ({exc}); try again",
                status=503,
            ) from None
        if status != 200:
            error = _error_code(answer.get("error"))
            raise LoginRefused(
                f"token_{error}",
                "Sign-in failed",
                f"the sign-in service refused the code ({error}): it was used already, has "
                "expired or was not issued to this browser's sign-in; start again",
            )
        id_token = answer.get("id_token")
        if not isinstance(id_token, str) or not id_token:
            raise LoginRefused(
                "no_id_token", "Sign-in failed", "the sign-in service sent no ID token"
            )
        return await self._verify(id_token, pending)

    async def _verify(self, id_token: str, pending: PendingLogin) -> SignedIn:
        try:
            identity = await self.verifier.verify(id_token)
        except InvalidToken as exc:
            raise LoginRefused("bad_id_token", "Sign-in failed", f"the ID token: {exc}") from None
        except IssuerUnavailable as exc:
            raise LoginRefused(
                "issuer_unreachable", "Sign-in service unavailable", str(exc), status=503
            ) from None
        # Verified just now, signature included: reading the other claims is safe.
        claims: dict[str, Any] = jwt.decode(id_token, options={"verify_signature": False})
        nonce = claims.get("nonce")
        if not isinstance(nonce, str) or not hmac.compare_digest(
            nonce.encode(), pending.nonce.encode()
        ):
            raise LoginRefused(
                "nonce_mismatch",
                "Sign-in failed",
                "the ID token was not issued for this browser's sign-in (nonce); start again",
            )
        azp = claims.get("azp")
        if azp is not None and azp != self.config.client_id:
            raise LoginRefused(
                "azp_mismatch", "Sign-in failed", "the ID token was issued to another client"
            )
        name = claims.get("name") or claims.get("preferred_username")
        display = name.strip()[:200] if isinstance(name, str) and name.strip() else None
        return SignedIn(identity, display)

    async def _discover(self) -> tuple[str, str]:
        """The authorization and token endpoints, from the discovery document (read once)."""
        if self._endpoints is not None:
            return self._endpoints
        url = self.verifier.config.discovery_url
        try:
            async with self._client() as client:
                response = await client.get(url, headers={"Accept": "application/json"})
            if response.status_code != 200 or len(response.content) > MAX_DOCUMENT_BYTES:
                raise ValueError(f"{url} answered HTTP {response.status_code}")
            document = response.json()
            if not isinstance(document, dict) or document.get("issuer") != self.issuer:
                raise ValueError(f"{url} names another issuer than {self.issuer}")
            endpoints = (
                issuer_url(
                    str(document.get("authorization_endpoint")),
                    setting=f"authorization_endpoint of {url}",
                ),
                issuer_url(str(document.get("token_endpoint")), setting=f"token_endpoint of {url}"),
            )
            methods = document.get("code_challenge_methods_supported")
            if isinstance(methods, list) and "S256" not in methods:
                raise ValueError(f"{url}: the issuer does not support PKCE with S256")
        except (httpx.HTTPError, ValueError) as exc:
            raise LoginRefused(
                "issuer_unreachable",
                "Sign-in service unavailable",
                f"the sign-in service could not be read ({exc}); try again later or sign in "
                "with a local account",
                status=503,
            ) from None
        self._endpoints = endpoints
        return endpoints

    def _client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(
            transport=self._transport,
            timeout=self.config.timeout,
            follow_redirects=False,
            trust_env=False,
        )


def _form_encode(value: str) -> str:
    """RFC 6749 §2.3.1: client id and secret are form-encoded before HTTP Basic."""
    return urlencode({"": value})[1:]


def _error_code(value: Any) -> str:
    if isinstance(value, str) and value and set(value) <= _ERROR_CODE_CHARS:
        return value[:64]
    return "error"


def issuer_error(error: str | None, description: str | None) -> LoginRefused:
    """The page for an issuer's `error` answer at the callback (RFC 6749 §4.1.2.1)."""
    code = _error_code(error)
    said = f": {description.strip()[:200]}" if description and description.strip() else ""
    if code == "access_denied":
        return LoginRefused(
            "access_denied",
            "Sign-in cancelled",
            f"the sign-in service did not sign you in (access_denied{said})",
            status=403,
        )
    return LoginRefused(
        f"issuer_{code}",
        "Sign-in failed",
        f"the sign-in service answered with an error ({code}{said})",
    )


async def _post_form(
    client: httpx.AsyncClient, url: str, form: dict[str, str], auth: httpx.BasicAuth | None
) -> tuple[int, dict[str, Any]]:
    headers = {"Accept": "application/json"}
    async with client.stream(
        "POST", url, data=form, headers=headers, auth=auth or httpx.USE_CLIENT_DEFAULT
    ) as response:
        body = bytearray()
        async for chunk in response.aiter_bytes():
            body += chunk
            if len(body) > MAX_DOCUMENT_BYTES:
                raise ValueError(f"{url} sent more than {MAX_DOCUMENT_BYTES} bytes")
    try:
        answer = json.loads(bytes(body))
    except ValueError:
        answer = None
    if not isinstance(answer, dict):
        if response.status_code == 200:
            raise ValueError(f"{url} did not send a JSON object")
        answer = {}
    return response.status_code, answer
