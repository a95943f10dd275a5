"""The audit trail's writes: reads of patient data (who, role, hospital, pseudonym, purpose) and
administrative changes (who, with which token, what changed). An entry written while
serving an HTTP request stores that request's id (its `X-Request-ID`, in the access log
too), so a log line leads to its audit entry and back."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from broker.correlation import current_request_id
from broker.domain.actors import Actor
from broker.storage.tables import audit_event


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
    await _append(session, actor, action, purpose, patient_pseudonym, person_id, detail)


ADMINISTRATION = "administration"


async def record_change(
    session: AsyncSession,
    actor: Actor,
    *,
    action: str,
    hospital: str | None,
    detail: dict[str, Any],
) -> None:
    """An administrative write (registry, certification, ledger month, mapping, token), in
    the transaction that makes it: who (and with which token; none = the CLI), what, on
    which hospital, and what changed."""
    detail = {"hospital": hospital, "token": actor.token_id, **detail}
    await _append(session, actor, action, ADMINISTRATION, None, None, detail)


async def _append(
    session: AsyncSession,
    actor: Actor,
    action: str,
    purpose: str,
    patient_pseudonym: str | None,
    person_id: str | None,
    detail: dict[str, Any] | None,
) -> None:
    """One audit entry; an entry written while serving an HTTP request keeps its id."""
    await session.execute(
        audit_event.insert().values(
            entry_row(actor, action, purpose, patient_pseudonym, person_id, detail)
        )
    )


def entry_row(
    actor: Actor,
    action: str,
    purpose: str,
    patient_pseudonym: str | None,
    person_id: str | None,
    detail: dict[str, Any] | None,
) -> dict[str, Any]:
    """One audit entry's values (for broker/storage/write_batch.py)."""
    return {
        "at": datetime.now(UTC),
        "actor": actor.name,
        "role": actor.role.value,
        "hospital_id": actor.hospital,
        "action": action,
        "purpose": purpose,
        "patient_pseudonym": patient_pseudonym,
        "person_id": person_id,
        "detail": detail,
        "request_id": current_request_id(),
    }
