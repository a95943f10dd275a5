"""The event outbox relay's unit of work on SQLAlchemy (port in broker/ports/outbox.py)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from broker.ports import outbox as ports
from broker.storage import events
from broker.storage.unit_of_work import SqlUnitOfWork


class SqlPendingEvents(ports.PendingEvents):
    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def claim(self, limit: int) -> list[tuple[int, str, dict[str, Any]]]:
        return await events.claim_pending(self._session, limit)

    async def mark_published(self, ids: list[int], now: datetime) -> None:
        await events.mark_published(self._session, ids, now)


class SqlOutboxUnitOfWork(SqlUnitOfWork, ports.OutboxUnitOfWork):
    def _bind(self, session: AsyncSession) -> None:
        self.events = SqlPendingEvents(session)
