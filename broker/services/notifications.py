"""Safety notices for doctors: a result they recognised was corrected or withdrawn, or the
patient link it was found through was undone (`kind`: corrected | withdrawn |
link-undone; `action`: reverse | flag)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from broker import ports
from broker.domain.actors import Actor
from broker.domain.errors import NotFound


async def notices_for(
    uow: ports.NoticeUnitOfWork,
    actor: Actor,
    *,
    unread_only: bool = False,
    limit: int = 100,
) -> list[dict[str, Any]]:
    """The caller's own notices, newest first, each naming the patient (each read audited,
    in the transaction that reads it)."""
    async with uow:
        views = await uow.notices.for_recipient(
            actor.hospital, actor.name, unread_only=unread_only, limit=limit
        )
        for v in views:
            await uow.audit.record_read(
                actor,
                action="safety-notice",
                purpose="patient-safety",
                patient=None,
                person_id=v.check.person_id,
                detail={"notice_id": v.notice.notice_id, "check_id": v.notice.check_id},
            )
        await uow.commit()
    return [_notice(v) for v in views]


def _notice(v: ports.NoticeView) -> dict[str, Any]:
    n, items = v.notice, v.check.items
    item = items[n.item_index] if n.item_index < len(items) else None
    return {
        "notice_id": n.notice_id,
        "created_at": n.created_at,
        "read_at": v.read_at,
        "kind": n.kind,
        "new_status": n.new_status,
        "action": n.action,
        "message": {"zh": n.message.zh, "en": n.message.en},
        "check_id": n.check_id,
        "item_index": n.item_index,
        "catalog_code": item.catalog_code if item else None,
        "order_time": v.check.order_time,
        "patient": v.check.patient,
        "result_fhir": f"/fhir/{v.resource_type}/{n.result_id}",
    }


async def mark_read(uow: ports.NoticeUnitOfWork, actor: Actor, notice_id: str) -> None:
    """Mark one of the caller's notices read; the first reading time stays."""
    async with uow:
        if not await uow.notices.mark_read(
            notice_id, actor.hospital, actor.name, datetime.now(UTC)
        ):
            raise NotFound("Unknown notice", f"you have no notice {notice_id!r}")
        await uow.commit()
