"""`mrb cds add|fhir-servers|launch-origins|list|revoke` (broker/cli/cds_cmd.py) against a
real SQLite database."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from sqlalchemy import select
from typer.testing import CliRunner

from broker.bootstrap import Container
from broker.cdshooks import clients as cds_clients
from broker.cli.cds_cmd import app
from broker.cli.main import app as mrb
from broker.ports.cds import ClientRow
from broker.settings import Settings
from broker.storage import hospitals
from broker.storage.cds_store import SqlCdsClients
from broker.storage.tables import audit_event

ISS = "https://his.h009.example.cn/"


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    monkeypatch.setenv("MRB_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.delenv("MRB_DATABASE_URL", raising=False)
    monkeypatch.delenv("MRB_DATABASE_SCHEMA", raising=False)
    for first in (["keys", "init"], ["db", "upgrade"]):  # admin commands create neither
        assert CliRunner().invoke(mrb, first).exit_code == 0
    return Settings()


def add_hospital(settings: Settings) -> None:
    async def work() -> None:
        c = Container.build(settings)
        try:
            async with c.sessions() as s, s.begin():
                await hospitals.add(s, hospitals.Hospital("H009", "Hospital H009", "510502", "3"))
        finally:
            await c.close()

    asyncio.run(work())


def clients(settings: Settings) -> list[ClientRow]:
    async def work() -> list[ClientRow]:
        c = Container.build(settings)
        try:
            async with c.sessions() as s:
                return await cds_clients.list_clients(SqlCdsClients(s))
        finally:
            await c.close()

    return asyncio.run(work())


def test_register_list_and_revoke_an_ehr(env: Settings, tmp_path: Path) -> None:
    runner = CliRunner()
    key = ec.generate_private_key(ec.SECP384R1())
    jwk = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(key.public_key())) | {"kid": "k1"}
    jwks = tmp_path / "jwks.json"
    jwks.write_text(json.dumps({"keys": [jwk]}), encoding="utf-8")

    refused = runner.invoke(
        app, ["add", "--issuer", ISS, "--hospital", "H009", "--jwks-file", str(jwks)]
    )
    assert refused.exit_code == 2  # no such hospital yet (the database was migrated)
    add_hospital(env)
    done = runner.invoke(
        app, ["add", "--issuer", ISS, "--hospital", "H009", "--jwks-file", str(jwks)]
    )
    assert done.exit_code == 0, done.output
    listed = runner.invoke(app, ["list"])
    assert listed.exit_code == 0 and "H009" in listed.output
    (row,) = clients(env)
    assert (row.issuer, row.hospital, row.keys, row.revoked_at) == (ISS, "H009", 1, None)
    assert runner.invoke(app, ["revoke", "--issuer", ISS]).exit_code == 0
    assert runner.invoke(app, ["revoke", "--issuer", ISS]).exit_code == 1
    (row,) = clients(env)
    assert row.revoked_at is not None
    url = runner.invoke(
        app, ["add", "--issuer", ISS, "--hospital", "H009", "--jwks-url", "http://ehr/jwks"]
    )
    assert url.exit_code == 2  # https only (http for localhost)


def test_an_ehrs_fhir_servers_are_registered_https_only(
    env: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    runner = CliRunner()
    assert runner.invoke(app, ["list"]).exit_code == 0
    add_hospital(env)
    url = "https://ehr.h009.example.cn/jwks"
    add = ["add", "--issuer", ISS, "--hospital", "H009", "--jwks-url", url]
    plain = runner.invoke(app, [*add, "--fhir-server", "http://ehr.h009.example.cn/fhir"])
    assert plain.exit_code == 2 and "https" in plain.output
    done = runner.invoke(
        app, [*add, "--fhir-server", "https://EHR.h009.example.cn:443/fhir/", "--fhir-server",
              "https://ehr.h009.example.cn/fhir"]
    )  # fmt: skip
    assert done.exit_code == 0, done.output
    (row,) = clients(env)
    assert row.fhir_servers == ("https://ehr.h009.example.cn/fhir",)  # one server, two spellings
    loopback = "http://127.0.0.1:8080/fhir"
    servers = ["fhir-servers", "--issuer", ISS, "--fhir-server", loopback]
    assert runner.invoke(app, servers).exit_code == 2  # http on loopback: tests and dev only
    monkeypatch.setenv("MRB_CDS_ALLOW_HTTP_LOOPBACK", "true")
    assert runner.invoke(app, servers).exit_code == 0
    (row,) = clients(env)
    assert row.fhir_servers == (loopback,)
    monkeypatch.setenv("COLUMNS", "300")  # rich fits tables to the terminal
    assert "127.0.0.1:8080" in runner.invoke(app, ["list"]).output
    assert runner.invoke(app, ["fhir-servers", "--issuer", ISS]).exit_code == 0
    assert clients(env)[0].fhir_servers == ()  # none: the EHR must prefetch the Patient
    assert runner.invoke(app, ["fhir-servers", "--issuer", "https://nobody/"]).exit_code == 1


def audited(settings: Settings, action: str) -> list[dict[str, Any]]:
    async def work() -> list[dict[str, Any]]:
        c = Container.build(settings)
        try:
            async with c.sessions() as s:
                rows = await s.execute(select(audit_event).where(audit_event.c.action == action))
                return [dict(r._mapping) for r in rows]
        finally:
            await c.close()

    return asyncio.run(work())


def test_a_his_launch_origins_are_registered_validated_and_audited(
    env: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    runner = CliRunner()
    add_hospital(env)
    url = "https://his.h009.example.cn/jwks"
    add = ["add", "--issuer", ISS, "--hospital", "H009", "--jwks-url", url, "--by", "ops.li"]
    for bad in (
        "http://his.h009.example.cn",  # https only
        "https://his.h009.example.cn/order",  # an origin has no path
        "https://*.h009.example.cn",  # no wildcard
        "https://his.h009.example.cn?x=1",
        "https://user@his.h009.example.cn",
        "http://localhost:8080",  # loopback http: tests and development only
    ):
        refused = runner.invoke(app, [*add, "--launch-origin", bad])
        assert refused.exit_code == 2, bad
        assert "launch origin" in refused.output, refused.output
    assert clients(env) == []
    done = runner.invoke(
        app, [*add, "--launch-origin", "https://HIS.h009.example.cn:443/", "--launch-origin",
              "https://his.h009.example.cn", "--launch-origin", "https://emr.h009.example.cn:8443"]
    )  # fmt: skip
    assert done.exit_code == 0, done.output
    (row,) = clients(env)
    assert row.launch_origins == ("https://his.h009.example.cn", "https://emr.h009.example.cn:8443")
    (added,) = audited(env, "cds.client.add")
    assert added["actor"] == "ops.li"
    assert added["detail"]["launch_origins"] == list(row.launch_origins)
    monkeypatch.setenv("COLUMNS", "300")
    assert "emr.h009.example.cn:8443" in runner.invoke(app, ["list"]).output

    change = ["launch-origins", "--issuer", ISS, "--by", "ops.wang"]
    with_path = runner.invoke(app, [*change, "--launch-origin", "https://his.h009.example.cn/x"])
    assert with_path.exit_code == 2
    assert clients(env)[0].launch_origins == row.launch_origins  # unchanged
    assert runner.invoke(app, [*change, "--launch-origin", "http://127.0.0.1:9000"]).exit_code == 2
    monkeypatch.setenv("MRB_CDS_ALLOW_HTTP_LOOPBACK", "true")
    moved = runner.invoke(app, [*change, "--launch-origin", "http://127.0.0.1:9000"])
    assert moved.exit_code == 0, moved.output
    assert "http://127.0.0.1:9000" in moved.output
    assert clients(env)[0].launch_origins == ("http://127.0.0.1:9000",)
    assert runner.invoke(app, change).exit_code == 0
    assert clients(env)[0].launch_origins == ()  # none: no page may frame its launches
    changes = audited(env, "cds.client.launch-origins")
    assert [
        (e["actor"], e["detail"]["issuer"], e["detail"]["launch_origins"]) for e in changes
    ] == [
        ("ops.wang", ISS, ["http://127.0.0.1:9000"]),
        ("ops.wang", ISS, []),
    ]
    nobody = ["launch-origins", "--issuer", "https://nobody/", "--by", "ops.wang"]
    assert runner.invoke(app, nobody).exit_code == 1
    # Registering the issuer again replaces its origins, as its keys and FHIR servers.
    again = runner.invoke(app, [*add, "--launch-origin", "https://his.h009.example.cn"])
    assert again.exit_code == 0, again.output
    assert clients(env)[0].launch_origins == ("https://his.h009.example.cn",)


def test_an_issuer_may_start_with_mrb_colon_now(env: Settings) -> None:
    """Launch state has tables of its own: no issuer is reserved in the replay store."""
    add_hospital(env)
    url = "https://his.h009.example.cn/jwks"
    done = CliRunner().invoke(
        app, ["add", "--issuer", "mrb:his", "--hospital", "H009", "--jwks-url", url]
    )
    assert done.exit_code == 0, done.output
