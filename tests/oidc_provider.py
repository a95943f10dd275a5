"""A stand-in OpenID Connect provider on a real HTTP server, for the web sign-in's tests:
discovery, JWKS, an authorization endpoint that approves at once (as `subject`) and sends
the browser back with a code, and a token endpoint that checks the client, the redirect
URI and the PKCE verifier (S256), spends each code once, and answers with an ID token
signed by its JWKS key. Knobs let a test make it misbehave."""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import threading
import time
import uuid
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import jwt
from cryptography.hazmat.primitives.asymmetric import rsa


@dataclass
class Grant:
    client_id: str
    redirect_uri: str
    challenge: str
    nonce: str
    subject: str
    used: bool = False


def s256(verifier: str) -> str:
    digest = hashlib.sha256(verifier.encode()).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


class Provider:
    def __init__(self, client_id: str, client_secret: str | None = None) -> None:
        self.client_id = client_id
        self.client_secret = client_secret
        self.subject = "u-wang"  # who "signs in" at the authorization endpoint
        self.name: str | None = "王医生"
        self.deny = False  # answer error=access_denied instead of a code
        self.nonce_override: str | None = None  # put this nonce in the ID token instead
        self.grants: dict[str, Grant] = {}
        self.token_requests: list[dict[str, str]] = []
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.kid = f"rsa-{uuid.uuid4().hex[:8]}"
        jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(self.key.public_key()))
        self.jwks = {"keys": [{**jwk, "kid": self.kid, "use": "sig", "alg": "RS256"}]}
        provider = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                path, _, query = self.path.partition("?")
                if path == provider.base_path + "/.well-known/openid-configuration":
                    self._json(200, provider.discovery())
                elif path == provider.base_path + "/certs":
                    self._json(200, provider.jwks)
                elif path == provider.base_path + "/auth":
                    self._authorize(parse_qs(query))
                else:
                    self.send_error(404)

            def do_POST(self) -> None:
                if self.path != provider.base_path + "/token":
                    self.send_error(404)
                    return
                length = int(self.headers.get("Content-Length", "0"))
                form = {k: v[0] for k, v in parse_qs(self.rfile.read(length).decode()).items()}
                status, body = provider.token(form, self.headers.get("Authorization"))
                self._json(status, body)

            def _authorize(self, q: dict[str, list[str]]) -> None:
                one = {k: v[0] for k, v in q.items()}
                redirect = one.get("redirect_uri", "")
                if (
                    one.get("client_id") != provider.client_id
                    or one.get("response_type") != "code"
                    or one.get("code_challenge_method") != "S256"
                    or not one.get("code_challenge")
                    or "openid" not in one.get("scope", "").split()
                ):
                    self.send_error(400, "bad authorization request")
                    return
                answer: dict[str, str] = {"state": one.get("state", "")}
                if provider.deny:
                    answer["error"] = "access_denied"
                    answer["error_description"] = "The user declined"
                else:
                    code = secrets.token_urlsafe(24)
                    provider.grants[code] = Grant(
                        provider.client_id,
                        redirect,
                        one["code_challenge"],
                        one.get("nonce", ""),
                        provider.subject,
                    )
                    answer["code"] = code
                self.send_response(302)
                self.send_header("Location", f"{redirect}?{urlencode(answer)}")
                self.send_header("Content-Length", "0")
                self.end_headers()

            def _json(self, status: int, body: dict[str, Any]) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base_path = "/realms/city"
        self.issuer = f"http://127.0.0.1:{self.server.server_address[1]}{self.base_path}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def discovery(self) -> dict[str, Any]:
        return {
            "issuer": self.issuer,
            "authorization_endpoint": self.issuer + "/auth",
            "token_endpoint": self.issuer + "/token",
            "jwks_uri": self.issuer + "/certs",
            "response_types_supported": ["code"],
            "code_challenge_methods_supported": ["S256"],
            "id_token_signing_alg_values_supported": ["RS256"],
        }

    def authorize_for(self, challenge: str, redirect_uri: str, nonce: str = "n") -> str:
        """A code issued to another sign-in (another browser's PKCE challenge)."""
        code = secrets.token_urlsafe(24)
        self.grants[code] = Grant(self.client_id, redirect_uri, challenge, nonce, self.subject)
        return code

    def token(self, form: dict[str, str], authorization: str | None) -> tuple[int, dict[str, Any]]:
        self.token_requests.append(form)
        if self.client_secret is not None:
            expected = base64.b64encode(f"{self.client_id}:{self.client_secret}".encode())
            if authorization != f"Basic {expected.decode()}":
                return 401, {"error": "invalid_client"}
        if form.get("grant_type") != "authorization_code":
            return 400, {"error": "unsupported_grant_type"}
        grant = self.grants.get(form.get("code", ""))
        if grant is None or grant.used:
            return 400, {"error": "invalid_grant", "error_description": "code unknown or used"}
        grant.used = True  # spent even when the rest is wrong, as RFC 6749 §4.1.2 wants
        if form.get("redirect_uri") != grant.redirect_uri or form.get("client_id") not in (
            None,
            grant.client_id,
        ):
            return 400, {"error": "invalid_grant", "error_description": "redirect_uri"}
        if s256(form.get("code_verifier", "")) != grant.challenge:
            return 400, {"error": "invalid_grant", "error_description": "PKCE verification"}
        now = int(time.time())
        claims: dict[str, Any] = {
            "iss": self.issuer,
            "aud": grant.client_id,
            "azp": grant.client_id,
            "sub": grant.subject,
            "iat": now,
            "exp": now + 300,
            "nonce": self.nonce_override if self.nonce_override is not None else grant.nonce,
        }
        if self.name:
            claims["name"] = self.name
        id_token = jwt.encode(claims, self.key, algorithm="RS256", headers={"kid": self.kid})
        return 200, {"access_token": "opaque", "token_type": "Bearer", "id_token": id_token}

    @staticmethod
    def query_of(url: str) -> dict[str, str]:
        return {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
