"""The recognition check: resolve the patient, run the rules per item, store, audit."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from broker.domain.catalog import Catalog
from broker.domain.identifiers import InvalidIdentifier, normalise
from broker.domain.recognition import ItemDecision, Order, Policy, decide
from broker.observability import CHECKS
from broker.security.pseudonyms import Pseudonymiser
from broker.services.audit import Actor, record_read
from broker.storage import hospitals
from broker.storage.lookup import person_items
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
    items: tuple[Order, ...]
    emergency: bool = False


@dataclass(frozen=True)
class ItemAnswer:
    requested: Order
    decision: ItemDecision


@dataclass(frozen=True)
class CheckAnswer:
    check_id: str
    items: tuple[ItemAnswer, ...]


@dataclass(frozen=True)
class Rules:
    catalog: Catalog
    policy: Policy


async def run_check(
    sessions: async_sessionmaker[AsyncSession],
    pseudonyms: Pseudonymiser,
    rules: Rules,
    request: CheckRequest,
    actor: Actor,
) -> CheckAnswer:
    """Answer a check, store it and audit the read of the patient's results."""
    async with sessions() as session, session.begin():
        registry = await hospitals.profiles(session)
        ordering = registry.get(request.ordering_hospital)
        if ordering is None:
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
        person_id = await People(session, pseudonyms).find(ident)
        prior = await person_items(session, person_id) if person_id else []
        catalog = rules.catalog.for_region(ordering.region)
        answers = []
        for order in request.items:
            decision = decide(
                order,
                order_time=request.order_time,
                ordering=ordering,
                hospitals=registry,
                catalog=catalog,
                policy=rules.policy,
                prior=prior,
                emergency=request.emergency,
            )
            CHECKS.labels(decision.decision.value).inc()
            answers.append(ItemAnswer(order, decision))
        check_id = str(uuid.uuid4())
        await session.execute(
            recognition_check.insert(),
            {
                "id": check_id,
                "created_at": datetime.now(UTC),
                "ordering_hospital": request.ordering_hospital,
                "person_id": person_id,
                "order_time": request.order_time,
                "emergency": request.emergency,
                "items": [_stored(a) for a in answers],
            },
        )
        await record_read(
            session,
            actor,
            action="recognition-check",
            purpose="order-entry",
            patient_pseudonym=pseudonyms.of(ident),
            person_id=person_id,
            detail={"check_id": check_id, "items": len(answers)},
        )
    return CheckAnswer(check_id, tuple(answers))


def _stored(a: ItemAnswer) -> dict[str, Any]:
    """What later steps (outcomes, savings, safety notices) need; no identifiers."""
    r, d = a.requested, a.decision
    return {
        "requested": {
            "system": r.system,
            "code": r.code,
            "modality": r.modality,
            "body_site": r.body_site,
            "laterality": r.laterality,
            "contrast": r.contrast,
        },
        "catalog_code": d.item.code if d.item else None,
        "decision": d.decision.value,
        "candidate": d.candidate.result_id if d.candidate else None,
        "others": [o.result_id for o in d.others],
        "valid_until": d.valid_until.isoformat() if d.valid_until else None,
        "fee_saved": str(d.fee_saved) if d.fee_saved is not None else None,
    }
