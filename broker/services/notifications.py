"""Safety notices for doctors: a result they recognised was corrected or withdrawn."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from broker.domain.actors import Actor
from broker.domain.check_items import stored_items
from broker.domain.errors import NotFound
from broker.security.payload_cipher import ALGORITHM, PayloadCipher, Sealed
from broker.services.audit import record_read
from broker.storage.tables import notification, recognition_check, result


async def notices_for(
    sessions: async_sessionmaker[AsyncSession],
    cipher: PayloadCipher,
    actor: Actor,
    *,
    unread_only: bool = False,
    limit: int = 100,
) -> list[dict[str, Any]]:
    """The caller's own notices, newest first, each naming the patient (audited)."""
    query = (
        select(
            notification,
            recognition_check.c.order_time,
            recognition_check.c["items"],
            recognition_check.c.person_id,
            recognition_check.c.patient_sealed,
            recognition_check.c.patient_nonce,
            recognition_check.c.patient_key_id,
            result.c.resource_type,
        )
        .join(recognition_check, recognition_check.c.id == notification.c.check_id)
        .join(result, result.c.id == notification.c.result_id)
        .where(
            notification.c.hospital_id == actor.hospital,
            notification.c.recipient == actor.name,
        )
        .order_by(notification.c.id.desc())
        .limit(limit)
    )
    if unread_only:
        query = query.where(notification.c.read_at.is_(None))
    async with sessions() as s, s.begin():
        rows = (await s.execute(query)).all()
        out = []
        for r in rows:
            out.append(_notice(r, cipher))
            await record_read(
                s,
                actor,
                action="safety-notice",
                purpose="patient-safety",
                patient_pseudonym=None,
                person_id=r.person_id,
                detail={"notice_id": r.notice_id, "check_id": r.check_id},
            )
    return out


def _notice(r: Any, cipher: PayloadCipher) -> dict[str, Any]:
    patient = None
    if r.patient_sealed is not None:
        sealed = Sealed(r.patient_key_id, ALGORITHM, r.patient_nonce, r.patient_sealed)
        patient = json.loads(cipher.open(sealed, associated=r.check_id.encode()))
    items = stored_items(r.items)
    item = items[r.item_index] if r.item_index < len(items) else None
    return {
        "notice_id": r.notice_id,
        "created_at": r.created_at,
        "read_at": r.read_at,
        "kind": r.kind,
        "new_status": r.new_status,
        "action": r.action,
        "message": r.message,
        "check_id": r.check_id,
        "item_index": r.item_index,
        "catalog_code": item.catalog_code if item else None,
        "order_time": r.order_time,
        "patient": patient,
        "result_fhir": f"/fhir/{r.resource_type}/{r.result_id}",
    }


async def mark_read(
    sessions: async_sessionmaker[AsyncSession], actor: Actor, notice_id: str
) -> None:
    async with sessions() as s, s.begin():
        done = await s.execute(
            update(notification)
            .where(
                notification.c.notice_id == notice_id,
                notification.c.hospital_id == actor.hospital,
                notification.c.recipient == actor.name,
            )
            .values(read_at=func.coalesce(notification.c.read_at, datetime.now(UTC)))
        )
        if done.rowcount == 0:  # type: ignore[attr-defined]
            raise NotFound("Unknown notice", f"you have no notice {notice_id!r}")
