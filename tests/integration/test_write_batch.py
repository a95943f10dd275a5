"""The check's writes (record, event, audit entry) sent together at commit, on SQLite and
PostgreSQL: all land or none does, and on PostgreSQL as one statement without BEGIN/COMMIT."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import event, func, select

from broker.bootstrap import Container
from broker.domain.actors import Actor, Role
from broker.storage import audit_log, events
from broker.storage.database import DatabaseError
from broker.storage.tables import audit_event, event_outbox
from broker.storage.unit_of_work import SqlUnitOfWork
from broker.storage.write_batch import WriteBatch, Writes

DOCTOR = Actor("dr.li", Role.DOCTOR, "H001")


class _BatchUow(SqlUnitOfWork):
    single_statement_on_postgresql = True

    def _bind(self, session: Any) -> None:
        self.session = session
        self.batch = WriteBatch(session)

    async def commit(self) -> None:
        await self.batch.flush()
        await super().commit()


async def _counts(c: Container) -> tuple[int, int]:
    async with c.sessions() as s:
        audits = (await s.execute(select(func.count()).select_from(audit_event))).scalar_one()
        outbox = (await s.execute(select(func.count()).select_from(event_outbox))).scalar_one()
    return int(audits), int(outbox)


def _rows(event_id: str | None = None) -> tuple[dict[str, Any], dict[str, Any]]:
    now = datetime.now(UTC)
    _, row = events.outbox_row("check", "H001", {"check_id": str(uuid.uuid4())}, now)
    if event_id is not None:
        row["event_id"] = event_id
    entry = audit_log.entry_row(DOCTOR, "recognition-check", "order-entry", None, None, {})
    return row, entry


async def test_a_batch_lands_whole_in_one_statement(container: Container) -> None:
    sent: list[str] = []

    def record(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        verb = statement.split()[0].upper()
        if verb != "SELECT":  # the counts below
            sent.append(verb)

    engine = container.engine.sync_engine
    event.listen(engine, "before_cursor_execute", record)
    try:
        before = await _counts(container)
        uow = _BatchUow(container.sessions)
        async with uow:
            row, entry = _rows()
            await uow.batch.write(event_outbox, row)
            await uow.batch.write(audit_event, entry)
            assert await _counts(container) == before  # held back until the commit
            assert uow.session is not None
            conn = await uow.session.connection()
            level = conn.sync_connection.get_execution_options().get("isolation_level")
            await uow.commit()
    finally:
        event.remove(engine, "before_cursor_execute", record)
    assert await _counts(container) == (before[0] + 1, before[1] + 1)
    if container.engine.dialect.name == "postgresql":
        assert sent == ["WITH"]  # one statement
        assert level == "AUTOCOMMIT"  # and no BEGIN or COMMIT round trips around it
    else:
        assert sent == ["INSERT", "INSERT"]
        assert level is None  # in the transaction


async def test_a_failing_row_leaves_none_of_the_batch(container: Container) -> None:
    taken = str(uuid.uuid4())
    async with _BatchUow(container.sessions) as uow:
        row, _ = _rows(taken)
        await uow.batch.write(event_outbox, row)
        await uow.commit()
    before = await _counts(container)
    async with _BatchUow(container.sessions) as uow:
        row, entry = _rows(taken)  # the outbox's event id again
        await uow.batch.write(audit_event, entry)
        await uow.batch.write(event_outbox, row)
        with pytest.raises(DatabaseError, match=r"(?i)unique|duplicate"):
            await uow.commit()
    assert await _counts(container) == before


async def test_writes_outside_a_batch_go_at_once(container: Container) -> None:
    before = await _counts(container)
    async with container.sessions() as s, s.begin():
        _, entry = _rows()
        await Writes(s).write(audit_event, entry)
        audits = (await s.execute(select(func.count()).select_from(audit_event))).scalar_one()
        assert audits == before[0] + 1
