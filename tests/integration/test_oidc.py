"""People logging in through an OpenID Connect issuer: a real HTTP server in the test plays
the issuer (discovery document and JWK Set, with keys made here); the API accepts its
tokens only for mapped, enabled people, with the role and hospital mrb gives them."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import threading
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from pydantic import ValidationError
from sqlalchemy import select
from typer.testing import CliRunner

from broker.api.app import create_app
from broker.bootstrap import Container
from broker.cli.main import app as cli
from broker.domain.actors import ALL_HOSPITALS, Actor, Forbidden, Role
from broker.security.oidc import IssuerUnavailable, OidcConfig, OidcVerifier
from broker.security.tokens import InvalidToken
from broker.services import users as user_service
from broker.settings import Settings
from broker.storage import hospitals
from broker.storage.tables import audit_event
from tests.conftest import Db, free_port

SQLITE = pytest.mark.parametrize("db", ["sqlite"], indirect=True)
BOTH_DATABASES = pytest.mark.parametrize(
    "db", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)], indirect=True
)

AUDIENCE = "mrb-api"
SECURITY = Actor("sec.chen", Role.SECURITY_ADMIN, ALL_HOSPITALS)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class Issuer:
    """An OpenID Connect issuer on a real HTTP server: discovery, JWKS, and its keys."""

    def __init__(self) -> None:
        self.hits: Counter[str] = Counter()
        self.published: list[dict[str, Any]] = []
        self.private: dict[str, Any] = {}  # kid -> private key
        issuer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                issuer.hits[self.path] += 1
                if self.path == issuer.discovery_path:
                    body: dict[str, Any] = {
                        "issuer": issuer.issuer,
                        "jwks_uri": issuer.issuer + "/protocol/openid-connect/certs",
                    }
                elif self.path == issuer.jwks_path:
                    body = {"keys": list(issuer.published)}
                else:
                    self.send_error(404)
                    return
                data = json.dumps(body).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        port = self.server.server_address[1]
        self.issuer = f"http://127.0.0.1:{port}/realms/city"
        self.discovery_path = "/realms/city/.well-known/openid-configuration"
        self.jwks_path = "/realms/city/protocol/openid-connect/certs"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        self.rsa_kid = self.add_rsa()

    @property
    def jwks_reads(self) -> int:
        return self.hits[self.jwks_path]

    def add_rsa(self) -> str:
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        kid = f"rsa-{uuid.uuid4().hex[:8]}"
        jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key()))
        self.published.append({**jwk, "kid": kid, "use": "sig", "alg": "RS256"})
        self.private[kid] = key
        return kid

    def add_ec(self) -> str:
        key = ec.generate_private_key(ec.SECP256R1())
        kid = f"ec-{uuid.uuid4().hex[:8]}"
        jwk = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(key.public_key()))
        self.published.append({**jwk, "kid": kid, "use": "sig"})
        self.private[kid] = key
        return kid

    def claims(self, subject: str, **extra: Any) -> dict[str, Any]:
        now = int(time.time())
        return {
            "iss": self.issuer,
            "aud": [AUDIENCE, "account"],
            "azp": "mrb-web",
            "sub": subject,
            "iat": now,
            "nbf": now,
            "exp": now + 300,
            "jti": str(uuid.uuid4()),
            **extra,
        }

    def token(self, subject: str, *, kid: str | None = None, **extra: Any) -> str:
        kid = kid or self.rsa_kid
        key = self.private[kid]
        alg = "RS256" if isinstance(key, rsa.RSAPrivateKey) else "ES256"
        return jwt.encode(self.claims(subject, **extra), key, algorithm=alg, headers={"kid": kid})

    def public_pem(self, kid: str) -> bytes:
        return bytes(
            self.private[kid]
            .public_key()
            .public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        )

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def handmade(header: dict[str, Any], claims: dict[str, Any], secret: bytes | None) -> str:
    """A JWT put together by hand: HS256 with `secret`, or no signature at all (`none`)."""
    signing_input = f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(claims).encode())}"
    if secret is None:
        return signing_input + "."
    mac = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{_b64(mac)}"


@pytest.fixture
def idp() -> Iterator[Issuer]:
    issuer = Issuer()
    yield issuer
    issuer.close()


@pytest.fixture
def settings(db: Db, tmp_path: Path, idp: Issuer) -> Settings:
    return Settings(
        data_dir=tmp_path / "data",
        database_url=db.url,
        database_schema=db.schema,
        http_port=free_port(),
        metrics_port=free_port(),
        embedded_kafka_port=free_port(),
        create_keys=True,
        oidc_issuer=idp.issuer,
        oidc_audience=AUDIENCE,
    )


@pytest.fixture
async def api(container: Container) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=create_app(container))
    async with httpx.AsyncClient(transport=transport, base_url="http://mrb.test") as client:
        yield client


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@SQLITE
async def test_a_mapped_person_acts_with_the_role_and_hospital_mrb_gives(
    container: Container, api: httpx.AsyncClient, idp: Issuer
) -> None:
    await user_service.map_user(
        container.access_uow(),
        SECURITY,
        issuer=idp.issuer,
        subject="u-wang",
        role=Role.FINANCE,
        hospital="H001",
        display_name="王会计",
    )
    # The token claims nothing about roles; what it claims ("role": "platform-finance")
    # changes nothing either.
    token = idp.token("u-wang", role="platform-finance", hospital="*")
    ec_kid = idp.add_ec()  # published before mrb first reads the set
    own = await api.get("/api/v1/savings", params={"hospital": "H001"}, headers=auth(token))
    assert own.status_code == 200, own.text
    other = await api.get("/api/v1/savings", params={"hospital": "H002"}, headers=auth(token))
    assert other.status_code == 403, other.text
    city = await api.get(
        "/api/v1/reports/regulator", params={"month": "2026-05"}, headers=auth(token)
    )
    assert city.status_code == 403 and "platform-finance" in city.json()["detail"]
    # An EC key (ES256) of the issuer works as well as its RSA key.
    ec_token = idp.token("u-wang", kid=ec_kid)
    ec = await api.get("/api/v1/savings", params={"hospital": "H001"}, headers=auth(ec_token))
    assert ec.status_code == 200, ec.text
    # mrb's own tokens keep working beside the issuer's.
    own_token = await container.issue_token("fin.li", Role.FINANCE, "H001", by="tests")
    mine = await api.get(
        "/api/v1/savings", params={"hospital": "H001"}, headers=auth(own_token.token)
    )
    assert mine.status_code == 200, mine.text

    async with container.sessions() as s:
        mapped = (
            await s.execute(select(audit_event).where(audit_event.c.action == "user.map"))
        ).one()
    assert (mapped.actor, mapped.role, mapped.purpose) == (
        "sec.chen",
        "security-admin",
        "administration",
    )
    assert mapped.detail["subject"] == "u-wang" and mapped.detail["role"] == "finance"
    assert mapped.detail["user_hospital"] == "H001" and mapped.detail["before"] is None


@SQLITE
async def test_an_unmapped_person_is_told_an_administrator_must_map_them(
    api: httpx.AsyncClient, idp: Issuer
) -> None:
    answer = await api.get("/api/v1/admin/catalog", headers=auth(idp.token("u-nobody")))
    assert answer.status_code == 403, answer.text
    problem = answer.json()
    assert problem["title"] == "User not mapped"
    assert "an administrator must map it" in problem["detail"]
    assert "u-nobody" in problem["detail"] and "mrb user map" in problem["detail"]


@SQLITE
async def test_forged_misaddressed_and_expired_tokens_get_401(
    container: Container, api: httpx.AsyncClient, idp: Issuer
) -> None:
    await user_service.map_user(
        container.access_uow(),
        SECURITY,
        issuer=idp.issuer,
        subject="u-li",
        role=Role.DOCTOR,
        hospital="H001",
    )
    good = await api.get("/api/v1/admin/catalog", headers=auth(idp.token("u-li")))
    assert good.status_code == 200, good.text

    now = int(time.time())
    kid = idp.rsa_kid
    claims = idp.claims("u-li")
    impostor = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    refused = {
        "another issuer": jwt.encode(
            {**claims, "iss": "https://login.example.org/realms/other"},
            idp.private[kid],
            algorithm="RS256",
            headers={"kid": kid},
        ),
        "the issuer with a trailing slash": idp.token("u-li", iss=idp.issuer + "/"),
        "another audience": idp.token("u-li", aud="another-app"),
        "expired": idp.token("u-li", iat=now - 900, nbf=now - 900, exp=now - 300),
        "not yet valid": idp.token("u-li", nbf=now + 600, exp=now + 900),
        "longer than the people cap": idp.token("u-li", exp=now + 9 * 3600),
        "no iat": jwt.encode(
            {k: v for k, v in claims.items() if k != "iat"},
            idp.private[kid],
            algorithm="RS256",
            headers={"kid": kid},
        ),
        "alg none": handmade({"alg": "none", "typ": "JWT", "kid": kid}, claims, None),
        "HS256 with the public key as secret": handmade(
            {"alg": "HS256", "typ": "JWT", "kid": kid}, claims, idp.public_pem(kid)
        ),
        "another key under the issuer's kid": jwt.encode(
            claims, impostor, algorithm="RS256", headers={"kid": kid}
        ),
        "a kid the issuer does not list": jwt.encode(
            claims, impostor, algorithm="RS256", headers={"kid": "made-up"}
        ),
        "no kid": jwt.encode(claims, idp.private[kid], algorithm="RS256"),
        "RS256 key used as PS256": jwt.encode(
            claims, idp.private[kid], algorithm="PS256", headers={"kid": kid}
        ),
    }
    for case, token in refused.items():
        answer = await api.get("/api/v1/admin/catalog", headers=auth(token))
        assert answer.status_code == 401, f"{case}: {answer.status_code} {answer.text}"
        assert answer.json()["title"] == "Invalid token", case


@BOTH_DATABASES
async def test_a_disabled_person_is_refused_on_the_next_request(
    container: Container, api: httpx.AsyncClient, idp: Issuer
) -> None:
    await user_service.map_user(
        container.access_uow(),
        SECURITY,
        issuer=idp.issuer,
        subject="u-zhao",
        role=Role.ADMIN,
        hospital="H001",
    )
    jti = str(uuid.uuid4())
    token = idp.token("u-zhao", jti=jti)
    before = await api.get(
        "/api/v1/admin/mappings/unmapped", params={"hospital": "H001"}, headers=auth(token)
    )
    assert before.status_code == 200, before.text
    mapping = {
        "hospital": "H001",
        "system": "urn:mrb:hospital:H001:lab-code",
        "code": "X-OIDC",
        "catalog_code": "LAB-HGB",
    }
    written = await api.post("/api/v1/admin/mappings", json=mapping, headers=auth(token))
    assert written.status_code == 201, written.text
    foreign = await api.post(
        "/api/v1/admin/mappings", json={**mapping, "hospital": "H002"}, headers=auth(token)
    )
    assert foreign.status_code == 403, foreign.text
    # A hospital admin may disable only their own hospital's people.
    with pytest.raises(Forbidden):
        await user_service.disable(
            container.access_uow(),
            Actor("it.qian", Role.ADMIN, "H002"),
            issuer=idp.issuer,
            subject="u-zhao",
            reason="not theirs",
        )
    assert await user_service.disable(
        container.access_uow(), SECURITY, issuer=idp.issuer, subject="u-zhao", reason="left"
    )
    after = await api.get(
        "/api/v1/admin/mappings/unmapped", params={"hospital": "H001"}, headers=auth(token)
    )
    assert after.status_code == 403, after.text
    assert after.json()["title"] == "User disabled"
    assert "an administrator must map it" in after.json()["detail"]
    # Mapping again enables the person (with the role now given).
    await user_service.map_user(
        container.access_uow(),
        SECURITY,
        issuer=idp.issuer,
        subject="u-zhao",
        role=Role.ADMIN,
        hospital="H001",
    )
    again = await api.get(
        "/api/v1/admin/mappings/unmapped", params={"hospital": "H001"}, headers=auth(token)
    )
    assert again.status_code == 200, again.text
    async with container.sessions() as s:
        entries = [
            (r.action, r.actor, r.role, r.detail.get("token"))
            for r in await s.execute(
                select(
                    audit_event.c.action,
                    audit_event.c.actor,
                    audit_event.c.role,
                    audit_event.c.detail,
                ).order_by(audit_event.c.id)
            )
        ]
    assert entries == [
        ("user.map", "sec.chen", "security-admin", None),
        ("mapping.add", "u-zhao", "admin", f"oidc:{jti}"),  # the person, and their token
        ("user.disable", "sec.chen", "security-admin", None),
        ("user.map", "sec.chen", "security-admin", None),
    ]


@SQLITE
async def test_only_a_security_admin_maps_and_people_hold_no_adapter_role(
    container: Container, idp: Issuer
) -> None:
    for who in (
        Actor("it.zhou", Role.ADMIN, "H001"),
        Actor("sys.zhang", Role.PLATFORM_ADMIN, ALL_HOSPITALS),
    ):
        with pytest.raises(Forbidden, match="security-admin"):
            await user_service.map_user(
                container.access_uow(),
                who,
                issuer=idp.issuer,
                subject="u-x",
                role=Role.DOCTOR,
                hospital="H001",
            )
    refusals: list[tuple[Role, str | None, str]] = [
        (Role.ADAPTER, "H001", "machine"),
        (Role.DOCTOR, "H404", "not registered"),
        (Role.DOCTOR, None, "name its one hospital"),
        (Role.AUDIT, "H001", "platform role"),
    ]
    for role, hospital, message in refusals:
        with pytest.raises(ValueError, match=message):
            await user_service.map_user(
                container.access_uow(),
                SECURITY,
                issuer=idp.issuer,
                subject="u-x",
                role=role,
                hospital=hospital,
            )


async def test_an_unknown_kid_reads_the_jwks_again_at_most_once_a_minute(idp: Issuer) -> None:
    now = [1000.0]
    verifier = OidcVerifier(OidcConfig(idp.issuer, AUDIENCE), clock=lambda: now[0])
    first = await verifier.verify(idp.token("u-a"))
    assert (first.subject, first.issuer) == ("u-a", idp.issuer)
    assert (idp.hits[idp.discovery_path], idp.jwks_reads) == (1, 1)
    await verifier.verify(idp.token("u-a"))
    assert idp.jwks_reads == 1  # cached

    rotated = idp.add_ec()  # the issuer rotates in a new key
    now[0] += 61
    assert (await verifier.verify(idp.token("u-a", kid=rotated))).key_id == rotated
    assert idp.jwks_reads == 2  # one read for the new kid

    made_up = jwt.encode(
        idp.claims("u-a"),
        ec.generate_private_key(ec.SECP256R1()),
        algorithm="ES256",
        headers={"kid": "made-up"},
    )
    now[0] += 30
    for _ in range(3):
        with pytest.raises(InvalidToken, match="not among the issuer's keys"):
            await verifier.verify(made_up)
    assert idp.jwks_reads == 2  # within the minute: no read, however many unknown kids

    now[0] += 31
    with pytest.raises(InvalidToken, match="not among the issuer's keys"):
        await verifier.verify(made_up)
    assert idp.jwks_reads == 3  # a minute on: one read again

    # A key the issuer drops stops being trusted once the set is re-read (max age).
    idp.published = [k for k in idp.published if k["kid"] != rotated]
    now[0] += 601
    with pytest.raises(InvalidToken, match="not among the issuer's keys"):
        await verifier.verify(idp.token("u-a", kid=rotated))
    assert idp.jwks_reads == 4


async def test_an_issuer_whose_discovery_names_another_issuer_is_not_trusted(
    idp: Issuer,
) -> None:
    verifier = OidcVerifier(OidcConfig(idp.issuer + "/", AUDIENCE))
    with pytest.raises(IssuerUnavailable):
        await verifier.verify(idp.token("u-a", iss=idp.issuer + "/"))
    assert idp.jwks_reads == 0


def test_oidc_settings_are_checked(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="MRB_OIDC_AUDIENCE"):
        Settings(data_dir=tmp_path, oidc_issuer="https://login.example.org/realms/city")
    with pytest.raises(ValidationError, match="https"):
        Settings(data_dir=tmp_path, oidc_issuer="http://login.example.org", oidc_audience="a")
    with pytest.raises(ValidationError, match="need MRB_OIDC_ISSUER"):
        Settings(data_dir=tmp_path, oidc_audience="mrb-api")
    configured = Settings(
        data_dir=tmp_path,
        oidc_issuer="https://login.example.org/realms/city",
        oidc_audience="mrb-api",
    )
    assert configured.oidc is not None
    assert configured.oidc.discovery_url == (
        "https://login.example.org/realms/city/.well-known/openid-configuration"
    )
    assert Settings(data_dir=tmp_path).oidc is None


@SQLITE
def test_user_commands_map_list_and_disable(settings: Settings, idp: Issuer) -> None:
    runner = CliRunner()
    env = {
        "MRB_DATA_DIR": str(settings.data_dir),
        "MRB_DATABASE_URL": settings.database_url or "",
        "MRB_CREATE_KEYS": "true",
        "MRB_OIDC_ISSUER": idp.issuer,
        "MRB_OIDC_AUDIENCE": AUDIENCE,
        "MRB_DATABASE_SCHEMA": settings.database_schema or "",
        "COLUMNS": "250",
    }
    assert runner.invoke(cli, ["keys", "init"], env=env).exit_code == 0  # never made by `user`
    mapped = runner.invoke(
        cli,
        [
            "user",
            "map",
            "--subject",
            "u-qc",
            "--role",
            "qc",
            "--name",
            "质控 刘",
            "--by",
            "sec.chen",
        ],
        env=env,
    )
    assert mapped.exit_code == 0, mapped.output
    assert f"mapped u-qc of {idp.issuer}: qc, *" in mapped.output
    unregistered = runner.invoke(
        cli,
        [
            "user",
            "map",
            "--issuer",
            idp.issuer,
            "--subject",
            "u-doc",
            "--role",
            "doctor",
            "--hospital",
            "H404",
            "--by",
            "sec.chen",
        ],
        env=env,
    )
    assert unregistered.exit_code == 2 and "not registered" in unregistered.output
    listed = runner.invoke(cli, ["user", "list", "--by", "sec.chen"], env=env)
    assert listed.exit_code == 0, listed.output
    assert "u-qc" in listed.output and "质控 刘" in listed.output and "u-doc" not in listed.output
    disabled = runner.invoke(
        cli,
        ["user", "disable", "--subject", "u-qc", "--reason", "left", "--by", "sec.chen"],
        env=env,
    )
    assert disabled.exit_code == 0 and "disabled u-qc" in disabled.output, disabled.output
    enabled = runner.invoke(cli, ["user", "list", "--enabled", "--by", "sec.chen"], env=env)
    assert "u-qc" not in enabled.output
    unknown = runner.invoke(
        cli, ["user", "disable", "--subject", "u-?", "--reason", "x", "--by", "sec.chen"], env=env
    )
    assert unknown.exit_code == 2 and "not mapped" in unknown.output


@SQLITE
async def test_the_per_token_rate_limit_counts_a_person_of_the_issuer(
    settings: Settings, idp: Issuer
) -> None:
    second = time.time() % 60  # stay inside one minute window (see test_rate_limits.py)
    if second > 45:
        await asyncio.sleep(60.5 - second)
    container = Container.build(settings.model_copy(update={"rate_limit_per_minute": 3}))
    try:
        async with container.sessions() as s, s.begin():
            await hospitals.add(s, hospitals.Hospital("H001", "H001", "510502", "3"))
        for subject in ("u-busy", "u-calm"):
            await user_service.map_user(
                container.access_uow(),
                SECURITY,
                issuer=idp.issuer,
                subject=subject,
                role=Role.DOCTOR,
                hospital="H001",
            )
        transport = httpx.ASGITransport(app=create_app(container))
        async with httpx.AsyncClient(transport=transport, base_url="http://mrb.test") as api:
            reasons = "/api/v1/recognition/decline-reasons"
            busy = auth(idp.token("u-busy"))
            # The first request reads the issuer's keys (the limiter never reads them
            # itself, so that one counts against the address only); then three per minute.
            for _ in range(4):
                assert (await api.get(reasons, headers=busy)).status_code == 200
            refused = await api.get(reasons, headers=busy)
            assert refused.status_code == 429, refused.text
            assert refused.json()["limit"] == "token"
            # Another token of the same person shares the count; another person does not.
            assert (await api.get(reasons, headers=auth(idp.token("u-busy")))).status_code == 429
            calm = await api.get(reasons, headers=auth(idp.token("u-calm")))
            assert calm.status_code == 200, calm.text
    finally:
        await container.close()
