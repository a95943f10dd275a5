"""Closing a ledger month: the platform administrator's duty, audited with its actor."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from broker.domain.actors import Actor, Duty
from broker.domain.ledger import parse_month
from broker.storage import ledger
from broker.storage.audit_log import record_change


async def close_month(sessions: async_sessionmaker[AsyncSession], month: str, *, by: Actor) -> bool:
    """Close `month` (YYYY-MM); False when it already was. Later savings and reversals book
    into the next open month. ValueError for a malformed month."""
    by.authorize(Duty.LEDGER_CLOSE)
    parse_month(month)
    async with sessions() as s, s.begin():
        closed = await ledger.close_period(s, month, by.name, datetime.now(UTC))
        if closed:
            await record_change(
                s, by, action="ledger.close", hospital=None, detail={"period": month}
            )
    return closed
