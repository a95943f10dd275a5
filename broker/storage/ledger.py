"""The savings ledger: append-only entries in months that can be closed.

Writers of entries hold a shared lock and closing a month takes it exclusively (a
PostgreSQL advisory lock; SQLite has one writer at a time anyway), so no entry can land
in a month while it is being closed.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncSession

from broker.storage.tables import ledger_entry
from broker.storage.tables import ledger_period as ledger_period_table

_LOCK = 0x6D72_626C  # "mrbl"


async def _lock(session: AsyncSession, *, exclusive: bool) -> None:
    if session.get_bind().dialect.name == "postgresql":
        fn = "pg_advisory_xact_lock" if exclusive else "pg_advisory_xact_lock_shared"
        await session.execute(text(f"SELECT {fn}(:k)"), {"k": _LOCK})


async def closed_periods(session: AsyncSession) -> set[str]:
    return set((await session.scalars(select(ledger_period_table.c.period))).all())


async def booking_period(session: AsyncSession, moment: datetime) -> str:
    """Lock against a concurrent close, then pick the first open month from `moment`'s."""
    # Imported here: the ledger's domain brings the recognition rules, which the admin
    # commands reaching this module (`mrb token issue`) never need (CLI start, #16).
    from broker.domain.ledger import ledger_period

    await _lock(session, exclusive=False)
    return ledger_period(moment, await closed_periods(session))


async def close_period(session: AsyncSession, period: str, by: str, now: datetime) -> bool:
    """Close a month; False when it already was."""
    await _lock(session, exclusive=True)
    if period in await closed_periods(session):
        return False
    await session.execute(
        ledger_period_table.insert().values(period=period, closed_at=now, closed_by=by)
    )
    return True


async def add_entry(session: AsyncSession, **values: Any) -> str:
    entry_id = str(uuid.uuid4())
    await session.execute(ledger_entry.insert().values(entry_id=entry_id, **values))
    return entry_id


async def existing_keys(session: AsyncSession, keys: list[str]) -> set[str]:
    if not keys:
        return set()
    found = await session.scalars(
        select(ledger_entry.c.dedupe_key).where(ledger_entry.c.dedupe_key.in_(keys))
    )
    return set(found.all())
