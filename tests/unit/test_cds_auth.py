"""The EHR's JWT (CDS Hooks 2.0 "Trusting CDS Clients"): real ES384 and RS384 keys."""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes

from broker.cdshooks.auth import (
    ClientRejected,
    JwksCache,
    RegisteredClient,
    authenticate,
)

AUD = "https://mrb.example.cn/cds-services/mrb-recognition-order-select"
ISS = "https://ehr.h002.example.cn/"


class Registry:
    def __init__(self, *clients: RegisteredClient) -> None:
        self.clients = {c.issuer: c for c in clients}

    async def client(self, issuer: str) -> RegisteredClient | None:
        return self.clients.get(issuer)


class Replay:
    def __init__(self) -> None:
        self.seen: set[tuple[str, str]] = set()

    async def first_use(self, issuer: str, jti: str, expires_at: datetime) -> bool:
        if (issuer, jti) in self.seen:
            return False
        self.seen.add((issuer, jti))
        return True


def public_jwk(key: PrivateKeyTypes, kid: str, alg: str | None) -> dict[str, Any]:
    if isinstance(key, ec.EllipticCurvePrivateKey):
        data = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(key.public_key()))
    else:
        assert isinstance(key, rsa.RSAPrivateKey)
        data = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key()))
    data["kid"] = kid
    data["use"] = "sig"
    if alg:
        data["alg"] = alg
    return dict(data)


def sign(
    key: PrivateKeyTypes,
    *,
    alg: str = "ES384",
    kid: str = "ehr-1",
    iss: str = ISS,
    aud: str | list[str] = AUD,
    exp_in: int = 300,
    jti: str | None = None,
    headers: dict[str, Any] | None = None,
    drop: tuple[str, ...] = (),
) -> str:
    now = int(time.time())
    claims: dict[str, Any] = {
        "iss": iss,
        "aud": aud,
        "exp": now + exp_in,
        "iat": now,
        "jti": jti or str(uuid.uuid4()),
        "tenant": "H002",
    }
    for name in drop:
        claims.pop(name)
    return jwt.encode(
        claims, key, algorithm=alg, headers={"kid": kid, "typ": "JWT", **(headers or {})}
    )


@pytest.fixture(scope="module")
def ec_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP384R1())


@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture
def registry(ec_key: ec.EllipticCurvePrivateKey, rsa_key: rsa.RSAPrivateKey) -> Registry:
    jwks = {
        "keys": [
            public_jwk(ec_key, "ehr-1", "ES384"),
            public_jwk(rsa_key, "ehr-rsa", None),  # RSA JWKs often omit alg
        ]
    }
    return Registry(RegisteredClient(ISS, "H002", jwks=jwks))


async def check(token: str, registry: Registry, replay: Replay | None = None, **kw: Any) -> Any:
    return await authenticate(
        token,
        audience=kw.pop("audience", AUD),
        registry=registry,
        replay=replay or Replay(),
        jwks_cache=JwksCache(),
        **kw,
    )


async def test_an_es384_token_from_a_registered_ehr_is_accepted(
    ec_key: ec.EllipticCurvePrivateKey, registry: Registry
) -> None:
    client = await check(sign(ec_key), registry)
    assert client.issuer == ISS and client.hospital == "H002" and client.tenant == "H002"
    assert client.expires_at > datetime.now(UTC)


async def test_an_rs384_token_is_accepted(rsa_key: rsa.RSAPrivateKey, registry: Registry) -> None:
    client = await check(sign(rsa_key, alg="RS384", kid="ehr-rsa"), registry)
    assert client.hospital == "H002"


async def test_aud_may_be_a_list_naming_the_service(
    ec_key: ec.EllipticCurvePrivateKey, registry: Registry
) -> None:
    await check(sign(ec_key, aud=[AUD]), registry)


async def test_wrong_audience_is_refused(
    ec_key: ec.EllipticCurvePrivateKey, registry: Registry
) -> None:
    other = AUD.replace("order-select", "order-sign")
    with pytest.raises(ClientRejected, match="Audience"):
        await check(sign(ec_key, aud=other), registry)
    with pytest.raises(ClientRejected):  # the discovery URL is not the service URL
        await check(sign(ec_key, aud="https://mrb.example.cn/cds-services"), registry)


async def test_expired_is_refused(ec_key: ec.EllipticCurvePrivateKey, registry: Registry) -> None:
    with pytest.raises(ClientRejected, match="Expired"):
        await check(sign(ec_key, exp_in=-120), registry)


async def test_exp_too_far_ahead_is_refused(
    ec_key: ec.EllipticCurvePrivateKey, registry: Registry
) -> None:
    with pytest.raises(ClientRejected, match="exp is more than"):
        await check(sign(ec_key, exp_in=24 * 3600), registry)


async def test_unknown_issuer_is_refused(
    ec_key: ec.EllipticCurvePrivateKey, registry: Registry
) -> None:
    with pytest.raises(ClientRejected, match="not a registered"):
        await check(sign(ec_key, iss="https://evil.example/"), registry)


async def test_a_replayed_jti_is_refused(
    ec_key: ec.EllipticCurvePrivateKey, registry: Registry
) -> None:
    replay = Replay()
    token = sign(ec_key, jti="ee22b021-e1b7-4611-ba5b-8eec6a33ac1e")
    await check(token, registry, replay)
    with pytest.raises(ClientRejected, match="replay"):
        await check(token, registry, replay)
    # Another token with the same jti is a replay too.
    with pytest.raises(ClientRejected, match="replay"):
        await check(sign(ec_key, jti="ee22b021-e1b7-4611-ba5b-8eec6a33ac1e"), registry, replay)


async def test_a_bad_signature_is_refused(registry: Registry) -> None:
    impostor = ec.generate_private_key(ec.SECP384R1())  # same kid, another key
    with pytest.raises(ClientRejected, match="Signature"):
        await check(sign(impostor), registry)
    good = sign(ec.generate_private_key(ec.SECP384R1()))
    head, body, sig = good.split(".")
    tampered = f"{head}.{body[:-2]}AA.{sig}"
    with pytest.raises(ClientRejected):
        await check(tampered, registry)


async def test_a_key_of_the_wrong_type_for_alg_is_refused(
    rsa_key: rsa.RSAPrivateKey, registry: Registry
) -> None:
    # Signed RS384 but naming the EC key: never verified with another algorithm.
    with pytest.raises(ClientRejected):
        await check(sign(rsa_key, alg="RS384", kid="ehr-1"), registry)


@pytest.mark.parametrize("alg", ["HS256", "none"])
async def test_symmetric_and_unsigned_tokens_are_refused(alg: str, registry: Registry) -> None:
    now = int(time.time())
    claims = {"iss": ISS, "aud": AUD, "exp": now + 60, "iat": now, "jti": "x"}
    key = "a-shared-secret-that-is-long-enough-for-hs256!!" if alg == "HS256" else None
    token = jwt.encode(claims, key, algorithm=alg, headers={"kid": "ehr-1"})
    with pytest.raises(ClientRejected, match="not accepted"):
        await check(token, registry)


async def test_missing_kid_or_claims_are_refused(
    ec_key: ec.EllipticCurvePrivateKey, registry: Registry
) -> None:
    token = jwt.encode(
        {"iss": ISS, "aud": AUD, "exp": int(time.time()) + 60, "iat": int(time.time())},
        ec_key,
        algorithm="ES384",
    )
    with pytest.raises(ClientRejected, match="kid"):
        await check(token, registry)
    for claim in ("jti", "iat", "exp"):
        with pytest.raises(ClientRejected, match=claim):
            await check(sign(ec_key, drop=(claim,)), registry)
    with pytest.raises(ClientRejected, match="kid 'unknown'"):
        await check(sign(ec_key, kid="unknown"), registry)
    with pytest.raises(ClientRejected, match="typ"):
        await check(sign(ec_key, headers={"typ": "at+jwt"}), registry)
    with pytest.raises(ClientRejected, match="not a JWT"):
        await check("not.a.jwt", registry)


async def test_a_jku_not_registered_is_refused(
    ec_key: ec.EllipticCurvePrivateKey, registry: Registry
) -> None:
    token = sign(ec_key, headers={"jku": "https://evil.example/jwks.json"})
    with pytest.raises(ClientRejected, match="jku"):
        await check(token, registry)


# -- a JWKS URL, read with PyJWKClient and cached ---------------------------------------


class _Jwks:
    def __init__(self) -> None:
        self.body: dict[str, Any] = {"keys": []}
        self.hits = 0


@pytest.fixture
def jwks_server() -> Iterator[tuple[str, _Jwks]]:
    state = _Jwks()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            state.hits += 1
            data = json.dumps(state.body).encode()
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args: Any) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}/jwks.json", state
    finally:
        server.shutdown()
        server.server_close()


async def test_keys_are_read_from_the_jwks_url_cached_and_reread_for_a_new_kid(
    ec_key: ec.EllipticCurvePrivateKey, jwks_server: tuple[str, _Jwks]
) -> None:
    url, state = jwks_server
    state.body = {"keys": [public_jwk(ec_key, "k1", "ES384")]}
    registry = Registry(RegisteredClient(ISS, "H002", jwks_url=url))
    cache = JwksCache(min_refresh=0)
    replay = Replay()

    async def call(token: str) -> Any:
        return await authenticate(
            token, audience=AUD, registry=registry, replay=replay, jwks_cache=cache
        )

    await call(sign(ec_key, kid="k1", headers={"jku": url}))
    await call(sign(ec_key, kid="k1"))
    assert state.hits == 1  # cached
    rotated = ec.generate_private_key(ec.SECP384R1())
    state.body = {"keys": [public_jwk(rotated, "k2", "ES384")]}
    await call(sign(rotated, kid="k2"))  # a new kid: the set is read again
    assert state.hits == 2
    with pytest.raises(ClientRejected, match="kid 'k3'"):
        await call(sign(rotated, kid="k3"))


async def test_an_unreachable_jwks_url_is_refused(ec_key: ec.EllipticCurvePrivateKey) -> None:
    registry = Registry(RegisteredClient(ISS, "H002", jwks_url="http://127.0.0.1:9/jwks.json"))
    with pytest.raises(ClientRejected, match="unavailable"):
        await authenticate(
            sign(ec_key),
            audience=AUD,
            registry=registry,
            replay=Replay(),
            jwks_cache=JwksCache(timeout=1),
        )
