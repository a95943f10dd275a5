"""The recognition check: who is the patient, what did other hospitals already find."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from broker.domain.identifiers import InvalidIdentifier, normalise
from broker.domain.prior_results import Interim, OrderedItem, PriorResult, interim_decision
from broker.observability import CHECKS
from broker.security.pseudonyms import Pseudonymiser
from broker.services.audit import Actor, record_read
from broker.storage import hospitals
from broker.storage.lookup import prior_results
from broker.storage.people import People
from broker.storage.tables import recognition_check


class CheckRefused(Exception):
    """The check cannot be answered as asked (the message says what to fix)."""

    def __init__(self, status: int, title: str, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.title = title
        self.detail = detail


@dataclass(frozen=True)
class CheckRequest:
    patient_system: str
    patient_value: str
    ordering_hospital: str
    order_time: datetime
    items: tuple[OrderedItem, ...]
    emergency: bool = False


@dataclass(frozen=True)
class ItemAnswer:
    requested: OrderedItem
    answer: Interim


@dataclass(frozen=True)
class CheckAnswer:
    check_id: str
    items: tuple[ItemAnswer, ...]


async def run_check(
    sessions: async_sessionmaker[AsyncSession],
    pseudonyms: Pseudonymiser,
    request: CheckRequest,
    actor: Actor,
) -> CheckAnswer:
    """Answer a check, store it and audit the read of the patient's results."""
    async with sessions() as session, session.begin():
        if await hospitals.get(session, request.ordering_hospital) is None:
            raise CheckRefused(
                404,
                "Unknown ordering hospital",
                f"hospital {request.ordering_hospital!r} is not registered",
            )
        try:
            ident = normalise(
                request.patient_system, request.patient_value, hospital=request.ordering_hospital
            )
        except InvalidIdentifier as exc:
            raise CheckRefused(422, "Invalid patient identifier", str(exc)) from None
        if ident is None:
            raise CheckRefused(422, "Invalid patient identifier", "patient.value is empty")
        pseudonym = pseudonyms.of(ident)
        person_id = await People(session, pseudonyms).find(ident)
        answers = []
        for item in request.items:
            found: list[PriorResult] = (
                await prior_results(session, person_id, item) if person_id else []
            )
            answer = interim_decision(found)
            CHECKS.labels(answer.decision).inc()
            answers.append(ItemAnswer(item, answer))
        check_id = str(uuid.uuid4())
        await session.execute(
            recognition_check.insert().values(
                id=check_id,
                created_at=datetime.now(UTC),
                ordering_hospital=request.ordering_hospital,
                person_id=person_id,
                order_time=request.order_time,
                emergency=request.emergency,
                items=[_stored(a) for a in answers],
            )
        )
        await record_read(
            session,
            actor,
            action="recognition-check",
            purpose="order-entry",
            patient_pseudonym=pseudonym,
            person_id=person_id,
            detail={"check_id": check_id, "items": len(answers)},
        )
    return CheckAnswer(check_id, tuple(answers))


def _stored(a: ItemAnswer) -> dict[str, Any]:
    r = a.requested
    return {
        "requested": {
            "system": r.system,
            "code": r.code,
            "modality": r.modality,
            "body_site": r.body_site.code if r.body_site else None,
        },
        "decision": a.answer.decision,
        "candidate": a.answer.candidate.result_id if a.answer.candidate else None,
        "others": [o.result_id for o in a.answer.others],
    }
