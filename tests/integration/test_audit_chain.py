"""Sealing real audit entries on SQLite and PostgreSQL; the database refuses rewrites."""

from __future__ import annotations

import pytest
from sqlalchemy import text, update
from sqlalchemy.exc import DBAPIError

from broker.bootstrap import Container
from broker.domain.actors import Actor, Role
from broker.services.audit import record_read
from broker.storage.audit_chain import CheckpointKey, seal, verify
from broker.storage.tables import audit_event
from tests.conftest import Db

DOCTOR = Actor("dr-li", Role.DOCTOR, "H002")


async def audit(c: Container, n: int) -> None:
    async with c.sessions() as s, s.begin():
        for i in range(n):
            await record_read(
                s, DOCTOR, action="fhir-search", purpose="TREAT",
                patient_pseudonym=None, person_id=f"p{i}", detail={"n": i},
            )  # fmt: skip


async def test_entries_are_sealed_in_order_and_verify(container: Container) -> None:
    key = CheckpointKey.from_dir(container.settings.keys_dir, create=True)
    await audit(container, 3)
    async with container.sessions() as s, s.begin():
        assert await seal(s, key) == 3
    await audit(container, 2)
    async with container.sessions() as s, s.begin():
        assert await seal(s, key) == 2
        assert await seal(s, key) == 0
    async with container.sessions() as s:
        report = await verify(s, key)
    assert report.intact and (report.sealed, report.checkpoints) == (5, 2)


async def test_sealed_entries_cannot_be_changed_or_deleted(container: Container) -> None:
    key = CheckpointKey.from_dir(container.settings.keys_dir, create=True)
    await audit(container, 2)
    async with container.sessions() as s, s.begin():
        await seal(s, key)
    for statement in (
        update(audit_event).values(actor="someone-else"),
        text("DELETE FROM audit_event"),
        text("DELETE FROM audit_checkpoint"),
    ):
        with pytest.raises(DBAPIError, match=r"append-only|cannot change"):
            async with container.sessions() as s, s.begin():
                await s.execute(statement)


async def test_a_change_behind_the_triggers_back_is_detected(container: Container, db: Db) -> None:
    key = CheckpointKey.from_dir(container.settings.keys_dir, create=True)
    await audit(container, 3)
    async with container.sessions() as s, s.begin():
        await seal(s, key)
    async with container.sessions() as s, s.begin():  # someone with DDL rights
        if db.kind == "postgres":
            await s.execute(text("ALTER TABLE audit_event DISABLE TRIGGER audit_event_guard"))
        else:
            await s.execute(text("DROP TRIGGER audit_event_sealed"))
        await s.execute(update(audit_event).where(audit_event.c.seq == 2).values(actor="x"))
    async with container.sessions() as s:
        report = await verify(s, key)
    assert not report.intact
    assert any("seq 2" in p and "content changed" in p for p in report.problems)
