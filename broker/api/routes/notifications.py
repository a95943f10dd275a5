"""Safety notices: results a doctor recognised that were later corrected or withdrawn, or
found through a patient link that was later undone (kind `link-undone`)."""

from __future__ import annotations

from fastapi import APIRouter, status

from broker.api.deps import ContainerDep, DoctorDep
from broker.api.schemas import NotificationOut
from broker.services import notifications

router = APIRouter(prefix="/api/v1/notifications", tags=["notifications"])


@router.get("", response_model=list[NotificationOut])
async def list_notices(
    container: ContainerDep, actor: DoctorDep, unread: bool = False
) -> list[dict[str, object]]:
    """The caller's notices, newest first; each names the patient, so each read is audited."""
    return await notifications.notices_for(container.notice_uow(), actor, unread_only=unread)


@router.post("/{notice_id}/read", status_code=status.HTTP_204_NO_CONTENT)
async def mark_read(notice_id: str, container: ContainerDep, actor: DoctorDep) -> None:
    await notifications.mark_read(container.notice_uow(), actor, notice_id)
