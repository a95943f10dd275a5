"""Tokens and roles against a running API and a real database (SQLite and PostgreSQL):
forged tokens, revocation mid-session, an API host holding only public keys, rotation,
and the attacker's case — a hospital admin acting platform-wide."""

from __future__ import annotations

import asyncio
import base64
import json
import shutil
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from click.testing import Result
from cryptography.hazmat.primitives.asymmetric import ec
from sqlalchemy import select
from typer.testing import CliRunner

from broker.bootstrap import Container
from broker.cli.main import app as cli
from broker.domain.actors import Role
from broker.runtime import Stack, running_stack
from broker.security.keys import MissingKey
from broker.security.tokens import AUDIENCE, ISSUER, load_issuer_key
from broker.settings import Settings
from broker.storage import hospitals
from broker.storage.tables import audit_event, certification, hospital, ledger_period
from tests import factories as f
from tests.conftest import api_client, bearer, free_port, seed_hospitals

runner = CliRunner()


async def invoke(app: Any, args: list[str], env: dict[str, str]) -> Result:
    """The `mrb` command, in a thread (it runs its own event loop) beside the API."""
    return await asyncio.to_thread(runner.invoke, app, args, env=env)


def craft(header: dict[str, Any], claims: dict[str, Any]) -> str:
    """An unsigned JWT put together by hand."""

    def part(value: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=").decode()

    return f"{part(header)}.{part(claims)}."


PUT_H002 = {"id": "H002", "name": "Hospital H002", "region": "510521", "level": "1"}
TEN_YEARS = {
    "scope": "HEMATOLOGY",
    "body": "national-eqa",
    "valid_from": "2026-01-01",
    "valid_to": "2035-12-31",
}


async def _register(container: Container) -> None:
    await seed_hospitals(
        container,
        hospitals.Hospital("H001", "Hospital H001", "510502", "3"),
        hospitals.Hospital("H002", "Hospital H002", "510521", "2"),
    )
    async with container.sessions() as s, s.begin():
        await hospitals.add(s, hospitals.Hospital("H003", "Hospital H003", "510503", "1"))


@pytest.fixture
async def stack(settings: Settings) -> AsyncIterator[Stack]:
    quiet = settings.model_copy(
        update={"rate_limit_per_minute": 0, "rate_limit_per_address_per_minute": 0}
    )
    async with running_stack(quiet, api=True, worker=False, kafka_needed=False) as s:
        await _register(s.container)
        yield s


def cli_env(settings: Settings, **more: str) -> dict[str, str]:
    env = {
        "MRB_DATA_DIR": str(settings.data_dir),
        "MRB_DATABASE_URL": settings.database_url or "",
        "MRB_CREATE_KEYS": "true" if settings.create_keys else "false",
        "MRB_OPERATOR": "sec.chen",
        "COLUMNS": "250",
        **more,
    }
    if settings.database_schema:
        env["MRB_DATABASE_SCHEMA"] = settings.database_schema
    return env


async def _audit(container: Container, action: str) -> list[Any]:
    async with container.sessions() as s:
        rows = await s.execute(
            select(audit_event).where(audit_event.c.action == action).order_by(audit_event.c.id)
        )
        return list(rows.all())


class TestTheAttackersCase:
    async def test_a_hospital_admin_cannot_act_platform_wide(self, stack: Stack) -> None:
        c = stack.container
        async with api_client(stack, "admin", "H001", "it.zhou") as admin:
            assert (
                await admin.put("/api/v1/admin/hospitals/H002", json=PUT_H002)
            ).status_code == 403
            own = {**PUT_H002, "id": "H001", "level": "3", "alliances": ["X"]}
            assert (await admin.put("/api/v1/admin/hospitals/H001", json=own)).status_code == 403
            new = {**PUT_H002, "id": "H099"}
            assert (await admin.post("/api/v1/admin/hospitals", json=new)).status_code == 403
            cert = await admin.post("/api/v1/admin/hospitals/H003/certifications", json=TEN_YEARS)
            assert cert.status_code == 403
            close = await admin.post("/api/v1/ledger/periods/2026-05/close")
            assert close.status_code == 403 and "platform-admin" in close.json()["detail"]
            other_map = {"hospital": "H002", "system": "urn:x", "code": "1", "catalog_code": "X"}
            assert (await admin.post("/api/v1/admin/mappings", json=other_map)).status_code == 403
            other_tokens = await admin.get("/api/v1/admin/tokens", params={"hospital": "H002"})
            assert other_tokens.status_code == 403
            assert (await admin.get("/api/v1/savings")).status_code == 403
        async with c.sessions() as s:
            levels = dict((await s.execute(select(hospital.c.id, hospital.c.level))).all())
            assert levels == {"H001": "3", "H002": "2", "H003": "1"}
            assert (await s.execute(select(certification))).all() == []
            assert (await s.execute(select(ledger_period))).all() == []

    async def test_platform_duties_are_separate_and_every_change_is_audited(
        self, stack: Stack
    ) -> None:
        c = stack.container
        async with (
            api_client(stack, "platform-admin", "*", "sys.zhang") as platform,
            api_client(stack, "qc", "*", "qc.wu") as qc,
            api_client(stack, "security-admin", "*", "sec.chen") as security,
        ):
            assert (await qc.put("/api/v1/admin/hospitals/H002", json=PUT_H002)).status_code == 403
            assert (await security.post("/api/v1/ledger/periods/2026-05/close")).status_code == 403
            cert = await platform.post(
                "/api/v1/admin/hospitals/H003/certifications", json=TEN_YEARS
            )
            assert cert.status_code == 403

            changed = await platform.put("/api/v1/admin/hospitals/H002", json=PUT_H002)
            assert changed.status_code == 200
            cert = await qc.post("/api/v1/admin/hospitals/H003/certifications", json=TEN_YEARS)
            assert cert.status_code == 201
            closed = await platform.post("/api/v1/ledger/periods/2026-05/close")
            assert closed.status_code == 200
        (replaced,) = await _audit(c, "registry.hospital.replace")
        assert (replaced.actor, replaced.role, replaced.hospital_id) == (
            "sys.zhang",
            "platform-admin",
            "*",
        )
        assert replaced.purpose == "administration" and replaced.detail["hospital"] == "H002"
        assert (
            replaced.detail["before"]["level"] == "2" and replaced.detail["after"]["level"] == "1"
        )
        (certified,) = await _audit(c, "registry.certify")
        assert certified.actor == "qc.wu" and certified.detail["valid_to"] == "2035-12-31"
        (month,) = await _audit(c, "ledger.close")
        assert month.actor == "sys.zhang" and month.detail["period"] == "2026-05"
        async with c.sessions() as s:
            closed_by = (await s.execute(select(ledger_period.c.closed_by))).scalar_one()
        assert closed_by == "sys.zhang"
        # Each entry names the token used, so it can be traced to its issuing and holder.
        jtis = {e.detail["token"] for e in (replaced, certified, month)}
        issued = {e.detail["jti"]: e.detail["subject"] for e in await _audit(c, "token.issue")}
        assert {issued[j] for j in jtis} == {"sys.zhang", "qc.wu"}

    async def test_cli_changes_record_their_operator(self, stack: Stack) -> None:
        env = cli_env(stack.container.settings)
        close = await invoke(cli, ["ledger", "close", "2026-04", "--by", "sys.li"], env=env)
        assert close.exit_code == 0, close.output
        added = await invoke(
            cli,
            ["hospital", "add", "H010", "--name", "n", "--region", "510502", "--level", "2"],
            env=env,  # MRB_OPERATOR
        )
        assert added.exit_code == 0, added.output
        (month,) = await _audit(stack.container, "ledger.close")
        assert (month.actor, month.role, month.detail["token"]) == (
            "sys.li",
            "platform-admin",
            None,
        )
        (hospital_added,) = await _audit(stack.container, "registry.hospital.add")
        assert hospital_added.actor == "sec.chen" and hospital_added.detail["after"]["id"] == "H010"

    async def test_cds_client_changes_record_their_operator(
        self, stack: Stack, tmp_path: Path
    ) -> None:
        env = cli_env(stack.container.settings)
        key = ec.generate_private_key(ec.SECP256R1()).public_key()
        jwk = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(key)) | {"kid": "k1"}
        jwks = tmp_path / "jwks.json"
        jwks.write_text(json.dumps({"keys": [jwk]}))
        ehr = "https://ehr.h001.example"
        added = await invoke(
            cli,
            ["cds", "add", "--issuer", ehr, "--hospital", "H001", "--jwks-file", str(jwks)],
            env={**env, "MRB_OPERATOR": "sys.wu"},
        )
        assert added.exit_code == 0, added.output
        revoked = await invoke(cli, ["cds", "revoke", "--issuer", ehr, "--by", "sys.he"], env=env)
        assert revoked.exit_code == 0, revoked.output
        (add,) = await _audit(stack.container, "cds.client.add")
        (revoke,) = await _audit(stack.container, "cds.client.revoke")
        assert (add.actor, add.role, add.detail["hospital"]) == ("sys.wu", "platform-admin", "H001")
        assert (revoke.actor, revoke.detail["issuer"]) == ("sys.he", ehr)


class TestForgedTokens:
    async def test_every_forgery_gets_401(self, stack: Stack, tmp_path: Path) -> None:
        c = stack.container
        real = await c.issue_token("dr.li", Role.DOCTOR, "H001", by="tests")
        header = {"kid": jwt.get_unverified_header(real.token)["kid"]}
        body = jwt.decode(real.token, options={"verify_signature": False})
        escalated = {**body, "role": "platform-admin", "hospital": "*"}
        stranger = load_issuer_key(tmp_path, create=True)  # a key nobody trusts
        now = int(datetime.now(UTC).timestamp())
        issuer = c.token_issuer().key.private
        forged = {
            "hs256": jwt.encode(escalated, "a-guessed-shared-secret-32-bytes!", "HS256", header),
            "none": craft({"alg": "none", **header}, escalated),
            "stranger key, trusted kid": jwt.encode(escalated, stranger.private, "EdDSA", header),
            "stranger key and kid": jwt.encode(
                escalated, stranger.private, "EdDSA", {"kid": stranger.key_id}
            ),
            # Signed with the real key, but never recorded: a leaked issuer key alone is not
            # enough to mint tokens the API takes.
            "unrecorded": jwt.encode({**body, "jti": "x" * 36}, issuer, "EdDSA", header),
            "a century": jwt.encode(
                {**body, "iat": now, "exp": now + 100 * 365 * 86400}, issuer, "EdDSA", header
            ),
        }
        async with httpx.AsyncClient(base_url=stack.api_url) as client:
            for name, token in forged.items():
                r = await client.get(
                    "/api/v1/notifications", headers={"Authorization": f"Bearer {token}"}
                )
                assert r.status_code == 401, name
                assert r.json()["title"] == "Invalid token", name
            ok = await client.get(
                "/api/v1/notifications", headers=await bearer(c, "doctor", "H001")
            )
            assert ok.status_code == 200
        assert {"aud": AUDIENCE, "iss": ISSUER}.items() <= body.items()


class TestRevocation:
    async def test_revoked_mid_session_through_the_api(self, stack: Stack) -> None:
        async with (
            api_client(stack, "doctor", "H001", "dr.li") as doctor,
            api_client(stack, "admin", "H001", "it.zhou") as hospital_admin,
            api_client(stack, "admin", "H002", "it.qian") as other_admin,
        ):
            assert (await doctor.get("/api/v1/notifications")).status_code == 200
            (listed,) = (
                await hospital_admin.get("/api/v1/admin/tokens", params={"subject": "dr.li"})
            ).json()
            assert listed["hospital"] == "H001" and "token" not in listed
            revoke = {"jti": listed["jti"], "reason": "left the hospital"}
            refused = await other_admin.post("/api/v1/admin/tokens/revoke", json=revoke)
            assert refused.status_code == 403
            done = await hospital_admin.post("/api/v1/admin/tokens/revoke", json=revoke)
            assert done.json() == {"revoked": [listed["jti"]]}
            r = await doctor.get("/api/v1/notifications")  # the very next request
            assert r.status_code == 401 and r.json()["title"] == "Token revoked"
            assert r.json()["detail"].startswith("token revoked")
            fhir = await doctor.get("/fhir/Patient", params={"identifier": f"{f.NATIONAL}|x"})
            assert fhir.status_code == 401 and "token revoked" in fhir.text
        (entry,) = await _audit(stack.container, "token.revoke")
        assert entry.actor == "it.zhou" and entry.detail["reason"] == "left the hospital"

    async def test_revoked_mid_session_from_the_issuing_host(self, settings: Settings) -> None:
        """The CLI revokes in its own process; the running API (default cache) refuses the
        token within MRB_TOKEN_REVOCATION_CACHE_SECONDS, without a restart."""
        async with running_stack(settings, api=True, worker=False, kafka_needed=False) as stack:
            await _register(stack.container)
            async with api_client(stack, "doctor", "H001", "dr.li") as doctor:
                assert (await doctor.get("/api/v1/notifications")).status_code == 200
                out = await invoke(
                    cli,
                    ["token", "revoke", "--subject", "dr.li", "--reason", "stolen laptop"],
                    env=cli_env(settings),
                )
                assert out.exit_code == 0 and out.stdout.startswith("revoked "), out.output
                window = settings.token_revocation_cache_seconds
                deadline = asyncio.get_running_loop().time() + window + 0.5
                statuses = []
                while asyncio.get_running_loop().time() < deadline:
                    statuses.append((await doctor.get("/api/v1/notifications")).status_code)
                    if statuses[-1] == 401:
                        break
                    await asyncio.sleep(0.1)
                assert statuses[-1] == 401, statuses

    async def test_without_a_cache_the_next_request_is_refused(self, settings: Settings) -> None:
        uncached = settings.model_copy(update={"token_revocation_cache_seconds": 0})
        async with running_stack(uncached, api=True, worker=False, kafka_needed=False) as stack:
            await _register(stack.container)
            async with api_client(stack, "finance", "H001", "cw.wang") as finance:
                assert (await finance.get("/api/v1/savings")).status_code == 200
                listed = await invoke(
                    cli, ["token", "list", "--subject", "cw.wang"], env=cli_env(settings)
                )
                (jti,) = [
                    line.split()[1] for line in listed.stdout.splitlines() if "cw.wang" in line
                ]
                revoked = await invoke(
                    cli, ["token", "revoke", jti, "--reason", "tests"], env=cli_env(settings)
                )
                assert revoked.exit_code == 0, revoked.output
                r = await finance.get("/api/v1/savings")
                assert r.status_code == 401 and r.json()["title"] == "Token revoked"


@asynccontextmanager
async def api_host(settings: Settings, keys: Path, **changes: Any) -> AsyncIterator[Stack]:
    """An API process with its own data dir: every key but the issuer's private one."""
    data = keys.parent.parent / "api-host"
    (data / "keys").mkdir(parents=True)
    for file in keys.iterdir():
        if file.name != "token-issuer.key":
            shutil.copy2(file, data / "keys" / file.name)
    api = settings.model_copy(
        update={
            "data_dir": data,
            "create_keys": False,
            "http_port": free_port(),
            "metrics_port": 0,
            **changes,
        }
    )
    async with running_stack(api, api=True, worker=False, kafka_needed=False) as stack:
        yield stack


class TestPublicKeysOnly:
    async def test_an_api_host_with_only_public_keys_verifies_but_cannot_issue(
        self, settings: Settings
    ) -> None:
        issuing = Container.build(settings)  # the issuing host: holds token-issuer.key
        try:
            await _register(issuing)
            token = (await issuing.issue_token("dr.li", Role.DOCTOR, "H001", by="sec")).token
            async with api_host(settings, settings.keys_dir) as api:
                assert not (api.container.settings.keys_dir / "token-issuer.key").exists()
                async with httpx.AsyncClient(base_url=api.api_url) as client:
                    auth = {"Authorization": f"Bearer {token}"}
                    assert (
                        await client.get("/api/v1/notifications", headers=auth)
                    ).status_code == 200
                with pytest.raises(MissingKey, match="cannot issue"):
                    api.container.token_issuer()
                host = api.container.settings
                refused = await invoke(
                    cli,
                    ["token", "issue", "--role", "doctor", "--hospital", "H001", "--subject", "x"],
                    env=cli_env(host),
                )
                assert refused.exit_code == 2 and "cannot issue" in refused.output
                assert not (host.keys_dir / "token-issuer.key").exists()
        finally:
            await issuing.close()

    async def test_public_keys_from_the_environment_and_rotation_without_restart(
        self, settings: Settings
    ) -> None:
        issuing = Container.build(settings)
        keys = settings.keys_dir
        try:
            await _register(issuing)
            first = await issuing.issue_token("dr.li", Role.DOCTOR, "H001", by="sec")
            entry = issuing.token_issuer().key.public_entry()
            (keys / "token-issuer.pub").rename(keys.parent / "issuer.pub.bak")
            # This host trusts the key through MRB_TOKEN_PUBLIC_KEYS alone (no .pub file).
            async with api_host(settings, keys, token_public_keys=entry) as api:
                host_pub = api.container.settings.keys_dir / "token-issuer.pub"
                assert not host_pub.exists()
                async with httpx.AsyncClient(base_url=api.api_url) as client:

                    async def status(token: str) -> int:
                        auth = {"Authorization": f"Bearer {token}"}
                        return (await client.get("/api/v1/notifications", headers=auth)).status_code

                    assert await status(first.token) == 200
                    # Rotation on the issuing host; the API host is given the new public key
                    # in its file, the old one stays trusted through the environment.
                    rotated = await invoke(
                        cli, ["keys", "token-issuer", "rotate"], env=cli_env(settings)
                    )
                    assert rotated.exit_code == 0, rotated.output
                    fresh = Container.build(settings)
                    try:
                        second = await fresh.issue_token("dr.li", Role.DOCTOR, "H001", by="sec")
                    finally:
                        await fresh.close()
                    assert second.key_id != first.key_id
                    assert await status(second.token) == 401  # not trusted there yet
                    shutil.copy2(keys / "token-issuer.pub", host_pub)
                    assert await status(second.token) == 200  # no restart
                    assert await status(first.token) == 200
        finally:
            await issuing.close()

    async def test_retiring_a_key_refuses_its_tokens_at_once(self, stack: Stack) -> None:
        c = stack.container
        env = cli_env(c.settings)
        old = await c.issue_token("dr.li", Role.DOCTOR, "H001", by="sec")
        assert (await invoke(cli, ["keys", "token-issuer", "rotate"], env=env)).exit_code == 0
        fresh = Container.build(c.settings)
        try:
            new = await fresh.issue_token("dr.li", Role.DOCTOR, "H001", by="sec")
        finally:
            await fresh.close()
        shown = (await invoke(cli, ["keys", "token-issuer", "show"], env=env)).stdout
        assert old.key_id in shown and f"{new.key_id}=" in shown and "# issues here" in shown
        retired = await invoke(cli, ["keys", "token-issuer", "retire", old.key_id], env=env)
        assert retired.exit_code == 0, retired.output
        async with httpx.AsyncClient(base_url=stack.api_url) as client:
            for token, want in ((old.token, 401), (new.token, 200)):
                auth = {"Authorization": f"Bearer {token}"}
                assert (await client.get("/api/v1/notifications", headers=auth)).status_code == want

    async def test_an_api_host_with_a_shorter_cap_refuses_longer_tokens(
        self, settings: Settings
    ) -> None:
        issuing = Container.build(settings)
        try:
            await _register(issuing)
            long = await issuing.issue_token("dr.li", Role.DOCTOR, "H001", by="sec")
            short = await issuing.issue_token(
                "dr.li", Role.DOCTOR, "H001", by="sec", ttl=timedelta(minutes=30)
            )
            cap = {"token_max_ttl_people": timedelta(hours=1)}
            async with (
                api_host(settings, settings.keys_dir, **cap) as api,
                httpx.AsyncClient(base_url=api.api_url) as client,
            ):
                for token, want in ((long.token, 401), (short.token, 200)):
                    auth = {"Authorization": f"Bearer {token}"}
                    r = await client.get("/api/v1/notifications", headers=auth)
                    assert r.status_code == want, r.text
        finally:
            await issuing.close()
