"""Closing a ledger month: the platform administrator's duty, audited with its actor."""

from __future__ import annotations

from datetime import UTC, datetime

from broker.domain.actors import Actor, Duty
from broker.domain.ledger import parse_month
from broker.ports.admin import MonthUnitOfWork


async def closed_months(uow: MonthUnitOfWork) -> list[str]:
    """The closed months, oldest first: entries that would fall in them book into the next
    open month."""
    async with uow:
        return sorted(await uow.months.closed())


async def close_month(uow: MonthUnitOfWork, month: str, *, by: Actor) -> bool:
    """Close `month` (YYYY-MM); False when it already was. Later savings and reversals book
    into the next open month. ValueError for a malformed month."""
    by.authorize(Duty.LEDGER_CLOSE)
    parse_month(month)
    async with uow:
        closed = await uow.months.close(month, by.name, datetime.now(UTC))
        if closed:
            await uow.changes.record(
                by, action="ledger.close", hospital=None, detail={"period": month}
            )
        await uow.commit()
    return closed
