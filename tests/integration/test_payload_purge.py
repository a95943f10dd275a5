"""`mrb purge payloads`: old raw payloads are erased; index, checks, ledger and audit stay,
FHIR answers 410 Gone for what it can no longer read, and key rotation still works."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import func, select, update
from typer.testing import CliRunner

from broker.bootstrap import Container
from broker.cli.main import app
from broker.domain.actors import Actor, Role
from broker.domain.errors import Gone
from broker.domain.recognition import Order
from broker.fhir.service import caller as fhir_caller
from broker.services.checks import CheckRequest, run_check
from broker.settings import Settings
from broker.storage.tables import audit_event, payload, result, result_item, result_version
from tests import factories as f
from tests.conftest import Db, certify

runner = CliRunner()
DOCTOR = Actor("dr-li", Role.DOCTOR, "H002")
PATIENT = ("patient:identifier", f"{f.NATIONAL}|{f.PATIENT_A}")


def env(db: Db, settings: Settings, **extra: str) -> dict[str, str]:
    out = {"MRB_DATA_DIR": str(settings.data_dir), "MRB_DATABASE_URL": db.url, **extra}
    if db.schema:
        out["MRB_DATABASE_SCHEMA"] = db.schema
    return out


async def ingest(c: Container, accession: str, *, age_days: int) -> str:
    """Index one report received `age_days` ago; its result id."""
    (p,) = await c.ingest_service().process_batch([f.inbound(f.lab_bundle(accession=accession))])
    assert p.outcome.value == "indexed", p.detail
    async with c.sessions() as s, s.begin():
        when = datetime.now(UTC) - timedelta(days=age_days)
        await s.execute(
            update(payload).where(payload.c.message_id == p.message_id).values(received_at=when)
        )
        (rid,) = (
            await s.execute(
                select(result_version.c.result_id).where(
                    result_version.c.message_id == p.message_id
                )
            )
        ).one()
    return str(rid)


async def counts(c: Container) -> dict[str, int]:
    async with c.sessions() as s:
        return {
            t.name: int((await s.execute(select(func.count()).select_from(t))).scalar_one())
            for t in (payload, result, result_version, result_item)
        }


async def decision(c: Container) -> str:
    answer = await run_check(
        c.check_uow(),
        c.rules_provider(),
        CheckRequest(
            f.NATIONAL,
            f.PATIENT_A,
            "H002",
            datetime(2026, 5, 20, 1, tzinfo=UTC),
            (Order(system=f.LOINC, code="718-7"),),
        ),
        DOCTOR,
    )
    return answer.items[0].decision.decision.value


async def test_old_payloads_are_purged_and_nothing_else(
    db: Db, settings: Settings, container: Container
) -> None:
    c = container
    await certify(c)
    fhir = c.fhir_service(version="test")
    caller = fhir_caller(DOCTOR, None)
    old = await ingest(c, "OLD-1", age_days=400)
    recent = await ingest(c, "NEW-1", age_days=10)
    searched = await fhir.search(caller, "DiagnosticReport", [PATIENT], strict=True, base="b")
    assert searched["total"] == 2  # the index is built while the payloads are there
    unseen = await ingest(c, "OLD-2", age_days=500)  # never read before the purge
    before = await counts(c)
    assert await decision(c) == "RECOGNIZABLE"

    e = env(db, settings)
    refused = await asyncio.to_thread(runner.invoke, app, ["purge", "payloads"], env=e)
    assert refused.exit_code == 2 and "no retention policy" in refused.output
    done = await asyncio.to_thread(
        runner.invoke,
        app,
        ["purge", "payloads", "--by", "ops.wang"],
        env={**e, "MRB_PAYLOAD_RETENTION_DAYS": "365"},
    )
    assert done.exit_code == 0, done.output
    assert "erased 2 payload(s) received more than 365 days ago" in done.stdout
    again = await asyncio.to_thread(
        runner.invoke, app, ["purge", "payloads", "--older-than", "365"], env=e
    )
    assert again.exit_code == 0 and "erased 0 payload(s)" in again.stdout

    # The rows stay (result versions point at them): proof of receipt, no bytes.
    assert await counts(c) == before
    async with c.sessions() as s:
        rows = (await s.execute(select(payload).order_by(payload.c.received_at))).all()
    assert [(r.algorithm, r.ciphertext, len(r.sha256)) for r in rows[:2]] == [
        ("purged", b"", 64),
        ("purged", b"", 64),
    ]
    assert rows[2].algorithm != "purged" and rows[2].ciphertext
    assert await decision(c) == "RECOGNIZABLE"  # checks read the index, not payloads

    for rid in (old, unseen):
        with pytest.raises(Gone) as gone:
            await fhir.read(caller, "DiagnosticReport", rid)
        assert gone.value.issue == "deleted" and "purged" in gone.value.detail
    assert (await fhir.read(caller, "DiagnosticReport", recent))["id"] == recent
    searched = await fhir.search(caller, "DiagnosticReport", [PATIENT], strict=True, base="b")
    matches = [e["resource"]["id"] for e in searched["entry"] if e["search"]["mode"] == "match"]
    outcomes: list[Any] = [
        e["resource"]["issue"][0] for e in searched["entry"] if e["search"]["mode"] == "outcome"
    ]
    assert matches == [recent]
    assert [o["code"] for o in outcomes] == ["deleted"]
    assert "not returned" in outcomes[0]["diagnostics"]

    async with c.sessions() as s:
        audited = (
            await s.execute(
                select(audit_event.c.actor, audit_event.c.detail)
                .where(audit_event.c.action == "payload.purge")
                .order_by(audit_event.c.at)
            )
        ).all()
    assert (audited[0].actor, audited[0].detail["payloads"]) == ("ops.wang", 2)
    assert [a.detail["payloads"] for a in audited] == [2, 0]  # every run is audited

    # Key rotation re-seals what is left and counts no key for purged rows.
    rotated = await asyncio.to_thread(runner.invoke, app, ["keys", "rotate"], env=e)
    assert rotated.exit_code == 0, rotated.output
    usage = await asyncio.to_thread(runner.invoke, app, ["keys", "usage"], env=e)
    assert usage.exit_code == 0 and "purged" not in usage.stdout, usage.output
