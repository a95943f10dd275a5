"""The administrative units of work on SQLAlchemy (ports in broker/ports/admin.py): the
change log every administrative change writes, closing a month, purging payloads."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from broker.domain.actors import Actor
from broker.ports import admin as ports
from broker.storage import ledger, retention
from broker.storage.audit_log import record_change
from broker.storage.unit_of_work import SqlUnitOfWork


class SqlChangeLog(ports.ChangeLog):
    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def record(
        self, actor: Actor, *, action: str, hospital: str | None, detail: dict[str, Any]
    ) -> None:
        await record_change(self._session, actor, action=action, hospital=hospital, detail=detail)


class SqlLedgerMonths(ports.LedgerMonths):
    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def closed(self) -> set[str]:
        return await ledger.closed_periods(self._session)

    async def close(self, month: str, by: str, now: datetime) -> bool:
        return await ledger.close_period(self._session, month, by, now)


class SqlPayloadRetention(ports.PayloadRetention):
    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def purge_received_before(self, cutoff: datetime) -> int:
        return await retention.purge_payloads(self._session, cutoff)


class SqlMonthUnitOfWork(SqlUnitOfWork, ports.MonthUnitOfWork):
    def _bind(self, session: AsyncSession) -> None:
        self.months = SqlLedgerMonths(session)
        self.changes = SqlChangeLog(session)


class SqlPurgeUnitOfWork(SqlUnitOfWork, ports.PurgeUnitOfWork):
    def _bind(self, session: AsyncSession) -> None:
        self.payloads = SqlPayloadRetention(session)
        self.changes = SqlChangeLog(session)
