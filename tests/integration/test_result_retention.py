"""`mrb purge results` on SQLite and PostgreSQL: a result past retention leaves the index (a
check no longer recognises from it), /fhir (search and read) and its payload; a result not
yet past it stays; the ledger's totals and the audit trail (chain intact) do not move."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import func, select
from typer.testing import CliRunner

from broker.bootstrap import AuditTrail, Container
from broker.cli.main import app
from broker.domain.actors import Actor, Role
from broker.domain.errors import NotFound
from broker.domain.ledger import OutcomeInput, OutcomeKind
from broker.domain.recognition import Order
from broker.domain.retention_policy import RetentionPeriod, RetentionPolicy
from broker.fhir.service import caller as fhir_caller
from broker.services.checks import CheckRequest, run_check
from broker.services.outcomes import OutcomeRequest, record_outcomes
from broker.services.reports import savings
from broker.services.retention import purge_results
from broker.settings import Settings
from broker.storage.audit_chain import verify
from broker.storage.fhir_tables import fhir_resource, fhir_token
from broker.storage.tables import (
    audit_event,
    ledger_entry,
    payload,
    recognition_outcome,
    result,
    result_item,
    result_version,
)
from tests import factories as f
from tests.conftest import Db, certify

runner = CliRunner()
DOCTOR = Actor("dr-li", Role.DOCTOR, "H002")
ADMIN = Actor("sys.zhang", Role.PLATFORM_ADMIN, "*")
PATIENT = ("patient:identifier", f"{f.NATIONAL}|{f.PATIENT_A}")
MAY_20 = datetime(2026, 5, 20, 1, 0, tzinfo=UTC)  # 09:00 in Beijing
HB = Order(system=f.LOINC, code="718-7")
# Short periods, so that a result still recognisable on MAY_20 can be past them (the shipped
# file refuses such periods: tests/unit/test_retention_policy.py).
SHORT = RetentionPolicy(
    RetentionPeriod(30),
    {"lab": RetentionPeriod(3), "imaging": RetentionPeriod(30), "report": RetentionPeriod(30)},
    version="test-short",
)


def env(db: Db, settings: Settings) -> dict[str, str]:
    out = {"MRB_DATA_DIR": str(settings.data_dir), "MRB_DATABASE_URL": db.url}
    if db.schema:
        out["MRB_DATABASE_SCHEMA"] = db.schema
    return out


async def ingest(c: Container, value: bytes) -> tuple[str, str]:
    """Index one message; (its message id, the id of the one result it holds)."""
    (p,) = await c.ingest_service().process_batch([f.inbound(value)])
    assert p.outcome.value == "indexed" and p.message_id, p.detail
    async with c.sessions() as s:
        (rid,) = (
            await s.execute(
                select(result_version.c.result_id).where(
                    result_version.c.message_id == p.message_id
                )
            )
        ).one()
    return p.message_id, str(rid)


async def check(c: Container) -> tuple[str, str]:
    """Check haemoglobin for patient A at H002 on MAY_20: (check id, decision)."""
    answer = await run_check(
        c.check_uow(),
        c.rules_provider(),
        CheckRequest(f.NATIONAL, f.PATIENT_A, "H002", MAY_20, (HB,)),
        DOCTOR,
    )
    return answer.check_id, answer.items[0].decision.decision.value


async def count(c: Container, table: Any, *where: Any) -> int:
    async with c.sessions() as s:
        query = select(func.count()).select_from(table).where(*where)
        return int((await s.execute(query)).scalar_one())


async def ledger_totals(c: Container) -> tuple[Any, ...]:
    async with c.report_figures() as figures:
        report = await savings(figures, "hospital")
    h = report.rows["H002"]
    return (h.recognitions, h.saved_fen, h.reversals, h.net_fen)


async def search(c: Container) -> list[str]:
    fhir = c.fhir_service(version="test")
    found = await fhir.search(
        fhir_caller(DOCTOR, None), "DiagnosticReport", [PATIENT], strict=True, base="b"
    )
    return sorted(e["resource"]["id"] for e in found.get("entry", ()))


async def audit_rows(c: Container) -> list[tuple[Any, ...]]:
    async with c.sessions() as s:
        rows = await s.execute(
            select(audit_event.c.id, audit_event.c.action, audit_event.c.hash).order_by(
                audit_event.c.id
            )
        )
        return [tuple(r) for r in rows]


async def test_a_result_past_retention_leaves_the_index_fhir_and_its_payload(
    container: Container,
) -> None:
    c = container
    await certify(c)
    lab_message, lab = await ingest(
        c, f.lab_bundle(accession="LAB-OLD", effective="2026-05-16T08:30:00+08:00")
    )
    img_message, img = await ingest(c, f.imaging_bundle(started="2026-05-19T09:00:00+08:00"))
    assert len(await search(c)) == 2  # the FHIR index is built while both are there
    check_id, decided = await check(c)
    assert decided == "RECOGNIZABLE"
    await record_outcomes(
        c.outcome_uow(),
        c.reference_rules().catalog,
        check_id,
        (OutcomeRequest(0, OutcomeInput(OutcomeKind.ACCEPTED)),),
        DOCTOR,
        now=MAY_20,
    )
    totals = await ledger_totals(c)
    assert totals == (1, 540, 0, 540)
    trail = AuditTrail(c.settings, c.sessions)
    await trail.sealer().seal_once()
    audit_before = await audit_rows(c)

    done = await purge_results(
        c.result_purge_uow(), SHORT, c.reference_rules().catalog, by=ADMIN, now=MAY_20, batch=1
    )
    assert (done.results, done.by_category, done.payloads) == (1, {"lab": 1}, 1)

    # Gone from the index (what checks read), the FHIR facade and payloads.
    for table, column in (
        (result, result.c.id),
        (result_item, result_item.c.result_id),
        (result_version, result_version.c.result_id),
        (fhir_resource, fhir_resource.c.result_id),
    ):
        assert await count(c, table, column == lab) == 0, table.name
        assert await count(c, table, column == img) > 0, table.name
    assert await count(c, payload, payload.c.message_id == lab_message) == 0
    assert await count(c, payload, payload.c.message_id == img_message) == 1
    orphans = ~fhir_token.c.resource_id.in_(select(fhir_resource.c.id))
    assert await count(c, fhir_token, orphans) == 0
    _, decided = await check(c)
    assert decided == "NO_PRIOR_RESULT"
    fhir = c.fhir_service(version="test")
    with pytest.raises(NotFound):
        await fhir.read(fhir_caller(DOCTOR, None), "DiagnosticReport", lab)
    remaining = await search(c)
    assert lab not in remaining and len(remaining) == 1

    # The ledger keeps its sums and the result id it was booked against.
    assert await ledger_totals(c) == totals
    assert await count(c, ledger_entry, ledger_entry.c.result_id == lab) == 1
    assert await count(c, recognition_outcome, recognition_outcome.c.result_id == lab) == 1

    # The audit trail keeps every entry, gains the purge, and its chain verifies.
    audit_after = await audit_rows(c)
    assert audit_after[: len(audit_before)] == audit_before
    new = [a for _, a, _ in audit_after[len(audit_before) :]]
    assert new.count("result.purge") == 1
    await trail.sealer().seal_once()
    async with c.sessions() as s:
        report = await verify(s, trail.pinned_keys(), trail.export())
    assert report.intact, report.problems
    async with c.sessions() as s:
        (detail,) = (
            await s.execute(
                select(audit_event.c.detail).where(audit_event.c.action == "result.purge")
            )
        ).scalars()
    assert detail["result_ids"] == [lab] and detail["by_category"] == {"lab": 1}
    assert detail["policy"] == "test-short" and detail["payloads"] == 1

    # Idempotent: nothing more to remove, and the run is audited.
    again = await purge_results(
        c.result_purge_uow(), SHORT, c.reference_rules().catalog, by=ADMIN, now=MAY_20
    )
    assert (again.results, again.payloads) == (0, 0)
    assert await count(c, audit_event, audit_event.c.action == "result.purge") == 2


async def test_a_payload_shared_with_a_kept_result_stays(container: Container) -> None:
    c = container
    message, old = await ingest(
        c, f.lab_bundle(accession="LAB-OLD", effective="2026-05-16T08:30:00+08:00")
    )
    async with c.sessions() as s, s.begin():
        # A second result read from the same message (a bundle can carry several).
        row = (await s.execute(select(result).where(result.c.id == old))).one()._asdict()
        version = (
            (await s.execute(select(result_version).where(result_version.c.result_id == old)))
            .one()
            ._asdict()
        )
        kept = "kept-result"
        later = datetime(2026, 5, 19, tzinfo=UTC)
        await s.execute(
            result.insert().values({**row, "id": kept, "business_id": "other", "effective": later})
        )
        version.pop("id")
        await s.execute(result_version.insert().values({**version, "result_id": kept}))
    done = await purge_results(
        c.result_purge_uow(), SHORT, c.reference_rules().catalog, by=ADMIN, now=MAY_20
    )
    assert (done.results, done.payloads) == (1, 0)
    assert await count(c, payload, payload.c.message_id == message) == 1
    assert await count(c, result, result.c.id == kept) == 1


async def test_the_cli_purges_by_the_shipped_policy(
    db: Db, settings: Settings, container: Container
) -> None:
    c = container
    _, ancient = await ingest(
        c, f.lab_bundle(accession="ANCIENT", effective="2023-06-01T08:30:00+08:00")
    )
    _, recent = await ingest(c, f.lab_bundle(accession="RECENT"))
    e = env(db, settings)

    dry = await asyncio.to_thread(runner.invoke, app, ["purge", "results", "--dry-run"], env=e)
    assert dry.exit_code == 0, dry.output
    assert "would remove 1 result(s) past retention" in dry.stdout and "lab: 1" in dry.stdout
    assert await count(c, result) == 2
    assert await count(c, audit_event, audit_event.c.action == "result.purge") == 0

    done = await asyncio.to_thread(
        runner.invoke, app, ["purge", "results", "--by", "ops.wang", "--batch", "1"], env=e
    )
    assert done.exit_code == 0, done.output
    assert "removed 1 result(s) past retention" in done.stdout, done.stdout
    assert "1 payload(s)" in done.stdout and "lab: 1" in done.stdout
    assert await count(c, result, result.c.id == ancient) == 0
    assert await count(c, result, result.c.id == recent) == 1

    again = await asyncio.to_thread(runner.invoke, app, ["purge", "results"], env=e)
    assert again.exit_code == 0 and "removed 0 result(s)" in again.stdout, again.output
    async with c.sessions() as s:
        actors = (
            await s.execute(
                select(audit_event.c.actor)
                .where(audit_event.c.action == "result.purge")
                .order_by(audit_event.c.id)
            )
        ).scalars()
        assert next(iter(actors)) == "ops.wang"
