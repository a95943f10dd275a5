"""The transactional outbox of mrb.recognition.v1 events.

Events are rows written in the same transaction as what they report (a check, an
outcome and its ledger entry, a reversal); a relay publishes them afterwards, so an
event exists exactly when its cause was committed, and Kafka being down delays events
without failing a doctor's request.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from broker.storage.tables import event_outbox

EVENT_TYPES = frozenset({"check", "accepted", "declined", "reversed", "flagged"})


async def append(
    session: AsyncSession, type_: str, key: str, body: dict[str, Any], now: datetime
) -> str:
    event_id, values = outbox_row(type_, key, body, now)
    await session.execute(event_outbox.insert().values(values))
    return event_id


def outbox_row(
    type_: str, key: str, body: dict[str, Any], now: datetime
) -> tuple[str, dict[str, Any]]:
    """The event's id and its outbox row's values (for broker/storage/write_batch.py)."""
    if type_ not in EVENT_TYPES:
        raise ValueError(f"unknown event type {type_!r}")
    event_id = str(uuid.uuid4())
    payload = {
        "event_id": event_id,
        "type": type_,
        "occurred_at": now.isoformat(),
        "schema": "mrb.recognition.v1",
        **body,
    }
    return event_id, {
        "event_id": event_id,
        "type": type_,
        "key": key,
        "payload": payload,
        "created_at": now,
    }


async def claim_pending(session: AsyncSession, limit: int) -> list[tuple[int, str, dict[str, Any]]]:
    """Oldest unpublished events; on PostgreSQL, rows other relays hold are skipped."""
    query = (
        select(event_outbox.c.id, event_outbox.c.key, event_outbox.c.payload)
        .where(event_outbox.c.published_at.is_(None))
        .order_by(event_outbox.c.id)
        .limit(limit)
    )
    if session.get_bind().dialect.name == "postgresql":
        query = query.with_for_update(skip_locked=True)
    return [(i, k, p) for i, k, p in await session.execute(query)]


async def mark_published(session: AsyncSession, ids: list[int], now: datetime) -> None:
    await session.execute(
        update(event_outbox).where(event_outbox.c.id.in_(ids)).values(published_at=now)
    )
