"""The audit trail of reads of patient data (who, role, hospital, pseudonym, purpose)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from broker.storage.tables import audit_event


@dataclass(frozen=True)
class Actor:
    """Who is asking. Until API authentication lands every caller is 'unauthenticated'."""

    name: str = "unauthenticated"
    role: str = "doctor"
    hospital: str | None = None


async def record_read(
    session: AsyncSession,
    actor: Actor,
    *,
    action: str,
    purpose: str,
    patient_pseudonym: str | None,
    person_id: str | None,
    detail: dict[str, Any] | None = None,
) -> None:
    await session.execute(
        audit_event.insert().values(
            at=datetime.now(UTC),
            actor=actor.name,
            role=actor.role,
            hospital_id=actor.hospital,
            action=action,
            purpose=purpose,
            patient_pseudonym=patient_pseudonym,
            person_id=person_id,
            detail=detail,
        )
    )
