"""Purging raw payloads per the retention policy: an audited administrative action."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from broker.domain.actors import Actor
from broker.ports.admin import PurgeUnitOfWork


async def purge_payloads(
    uow: PurgeUnitOfWork,
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
    async with uow:
        erased = await uow.payloads.purge_received_before(cutoff)
        await uow.changes.record(
            by,
            action="payload.purge",
            hospital=None,
            detail={
                "older_than_days": older_than_days,
                "received_before": cutoff.isoformat(),
                "payloads": erased,
            },
        )
        await uow.commit()
    return erased
