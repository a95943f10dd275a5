"""Purging raw payloads per the retention policy: an audited administrative action."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from broker.domain.actors import Actor
from broker.storage import retention
from broker.storage.audit_log import record_change


async def purge_payloads(
    sessions: async_sessionmaker[AsyncSession],
    older_than_days: int,
    *,
    by: Actor,
    now: datetime | None = None,
) -> int:
    """Erase the payloads received more than `older_than_days` days ago, and audit it in
    the same transaction; how many were erased. ValueError for a policy under one day."""
    if older_than_days < 1:
        raise ValueError("--older-than must be at least 1 day")
    cutoff = (now or datetime.now(UTC)) - timedelta(days=older_than_days)
    async with sessions() as s, s.begin():
        erased = await retention.purge_payloads(s, cutoff)
        await record_change(
            s,
            by,
            action="payload.purge",
            hospital=None,
            detail={
                "older_than_days": older_than_days,
                "received_before": cutoff.isoformat(),
                "payloads": erased,
            },
        )
    return erased
