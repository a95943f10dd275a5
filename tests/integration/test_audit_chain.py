"""Sealing real audit entries on SQLite and PostgreSQL; the database refuses rewrites."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from sqlalchemy import select, text, update
from sqlalchemy.exc import DBAPIError

from broker.bootstrap import AuditTrail, Container
from broker.domain.actors import Actor, Role
from broker.storage.audit_chain import verify
from broker.storage.audit_log import record_read
from broker.storage.tables import audit_event
from tests.conftest import Db

DOCTOR = Actor("dr-li", Role.DOCTOR, "H002")
DOCTOR_AT = datetime(2026, 5, 20, 9, 0, tzinfo=UTC)


async def audit(c: Container, n: int) -> None:
    async with c.sessions() as s, s.begin():
        for i in range(n):
            await record_read(
                s, DOCTOR, action="fhir-search", purpose="TREAT",
                patient_pseudonym=None, person_id=f"p{i}", detail={"n": i},
            )  # fmt: skip


async def test_entries_are_sealed_in_order_and_verify(container: Container) -> None:
    trail = AuditTrail(container.settings, container.sessions)
    sealer = trail.sealer()
    await audit(container, 3)
    assert await sealer.seal_once() == 3
    await audit(container, 2)
    assert await sealer.seal_once() == 2
    assert await sealer.seal_once() == 0
    async with container.sessions() as s:
        report = await verify(s, trail.pinned_keys(), trail.export())
    assert report.intact and (report.sealed, report.checkpoints, report.exported) == (5, 2, 2)


async def test_sealed_entries_cannot_be_changed_or_deleted(container: Container) -> None:
    await audit(container, 2)
    await AuditTrail(container.settings, container.sessions).sealer().seal_once()
    for statement in (
        update(audit_event).values(actor="someone-else"),
        text("DELETE FROM audit_event"),
        text("DELETE FROM audit_checkpoint"),
    ):
        with pytest.raises(DBAPIError, match=r"append-only|cannot change"):
            async with container.sessions() as s, s.begin():
                await s.execute(statement)


class TestAnUnsealedEntry:
    """Before the sealer links it, an entry can be sealed, and nothing else."""

    async def test_its_content_cannot_change(self, container: Container) -> None:
        await audit(container, 1)
        for values in (
            {"actor": "someone-else"},
            {"detail": {"n": 99}},
            {"person_id": None},
            {"actor": "someone-else", "seq": 1, "prev_hash": "0" * 64, "hash": "1" * 64},
        ):
            with pytest.raises(DBAPIError, match="unsealed entry can only be sealed"):
                async with container.sessions() as s, s.begin():
                    await s.execute(update(audit_event).values(**values))

    async def test_it_is_sealed_with_all_three_columns_at_once(self, container: Container) -> None:
        await audit(container, 1)
        with pytest.raises(DBAPIError, match="append-only"):
            async with container.sessions() as s, s.begin():
                await s.execute(update(audit_event).values(seq=1))
        async with container.sessions() as s, s.begin():
            await s.execute(update(audit_event).values(seq=1, prev_hash="0" * 64, hash="1" * 64))
        with pytest.raises(DBAPIError, match=r"sealed (audit )?entry cannot change"):  # once
            async with container.sessions() as s, s.begin():
                await s.execute(update(audit_event).values(hash="2" * 64))
        async with container.sessions() as s:
            assert (await s.execute(select(audit_event.c.hash))).scalar_one() == "1" * 64

    async def test_a_new_entry_cannot_bring_its_own_seal(self, container: Container) -> None:
        with pytest.raises(DBAPIError, match="arrives unsealed"):
            async with container.sessions() as s, s.begin():
                await s.execute(
                    audit_event.insert().values(
                        at=DOCTOR_AT,
                        actor="x",
                        role="doctor",
                        action="fhir-read",
                        purpose="TREAT",
                        seq=1,
                        prev_hash="0" * 64,
                        hash="1" * 64,
                    )
                )


async def test_a_change_behind_the_triggers_back_is_detected(container: Container, db: Db) -> None:
    trail = AuditTrail(container.settings, container.sessions)
    await audit(container, 3)
    await trail.sealer().seal_once()
    async with container.sessions() as s, s.begin():  # someone with DDL rights
        if db.kind == "postgres":
            await s.execute(text("ALTER TABLE audit_event DISABLE TRIGGER audit_event_guard"))
        else:
            await s.execute(text("DROP TRIGGER audit_event_sealed"))
        await s.execute(update(audit_event).where(audit_event.c.seq == 2).values(actor="x"))
    async with container.sessions() as s:
        report = await verify(s, trail.pinned_keys(), trail.export())
    assert report.problems == ("edited: seq 2 (audit id 2): content changed after sealing",)
