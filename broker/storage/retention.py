"""Retention of raw payloads: the sealed bytes of old messages are erased, the rest stays.

A purged payload keeps its row (message id, hospital, SHA-256, size, received_at: proof
of what was received and when), because result versions point at it; its key id and
algorithm say `purged` and its nonce and ciphertext are empty. The index, the ledger and
the audit trail are not touched. Audit entries are never purged (the database refuses).
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncSession

from broker.storage.tables import payload

PURGED = "purged"  # payload.key_id and payload.algorithm of an erased payload


async def purge_payloads(session: AsyncSession, received_before: datetime) -> int:
    """Erase the bytes of payloads received before the moment; how many were erased."""
    done = await session.execute(
        update(payload)
        .where(payload.c.received_at < received_before, payload.c.algorithm != PURGED)
        .values(key_id=PURGED, algorithm=PURGED, nonce=b"", ciphertext=b"")
    )
    return int(getattr(done, "rowcount", 0) or 0)
