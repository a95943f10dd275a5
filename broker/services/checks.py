"""The recognition check: resolve the patient, run the rules per item, store, audit."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Protocol

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from broker.domain.actors import Actor
from broker.domain.catalog import Catalog
from broker.domain.check_items import StoredCheckItem
from broker.domain.errors import Invalid, NotAllowed, NotFound
from broker.domain.identifiers import InvalidIdentifier, normalise
from broker.domain.recognition import (
    ItemDecision,
    Order,
    PatientContext,
    Policy,
    decide,
    local_date,
)
from broker.observability import CHECKS
from broker.security.payload_cipher import PayloadCipher
from broker.security.pseudonyms import Pseudonymiser
from broker.services.audit import record_read
from broker.storage import events, hospitals
from broker.storage.lookup import person_items
from broker.storage.people import People, birth_date
from broker.storage.protect import Protector
from broker.storage.tables import recognition_check, result


@dataclass(frozen=True)
class CheckRequest:
    patient_system: str
    patient_value: str
    ordering_hospital: str
    order_time: datetime
    items: tuple[Order, ...]
    emergency: bool = False
    # age and pregnancy, when the caller knows them
    patient: PatientContext = field(default_factory=PatientContext)


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

    async def current(self, session: AsyncSession) -> Rules:
        """Fixed rules (tests, tools); RulesProvider adds run-time mappings."""
        return self


class RulesSource(Protocol):
    async def current(self, session: AsyncSession) -> Rules: ...


async def run_check(
    sessions: async_sessionmaker[AsyncSession],
    pseudonyms: Pseudonymiser,
    cipher: PayloadCipher,
    rules_source: RulesSource,
    request: CheckRequest,
    actor: Actor,
    *,
    now: datetime | None = None,
) -> CheckAnswer:
    """Answer a check, store it and its event, and audit the read of the patient's results."""
    if actor.hospital != request.ordering_hospital:
        raise NotAllowed(
            "Not your hospital",
            f"ordering_hospital must be the caller's own ({actor.hospital}), "
            f"not {request.ordering_hospital}",
        )
    async with sessions() as session, session.begin():
        rules = await rules_source.current(session)
        registry = await hospitals.profiles(session)
        ordering = registry.get(request.ordering_hospital)
        if ordering is None:
            raise NotFound(
                "Unknown ordering hospital",
                f"hospital {request.ordering_hospital!r} is not registered",
            )
        try:
            ident = normalise(
                request.patient_system, request.patient_value, hospital=request.ordering_hospital
            )
        except InvalidIdentifier as exc:
            raise Invalid("Invalid patient identifier", str(exc)) from None
        if ident is None:
            raise Invalid("Invalid patient identifier", "patient.value is empty")
        person_id = await People(session, pseudonyms).find(ident)
        protector = Protector(cipher, pseudonyms)
        prior = await person_items(session, person_id, protector) if person_id else []
        context = request.patient
        if context.birth_date is None and person_id:
            born = await birth_date(session, cipher, person_id)
            context = replace(context, birth_date=born)
        catalog = rules.catalog.for_region(ordering.region, local_date(request.order_time))
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
                patient=context,
            )
            CHECKS.labels(decision.decision.value).inc()
            answers.append(ItemAnswer(order, decision))
        check_id = str(uuid.uuid4())
        now = now or datetime.now(UTC)
        stored = [StoredCheckItem.of(a.requested, a.decision) for a in answers]
        # Which version each candidate was, so an outcome can tell it changed since.
        candidates = {i.candidate for i in stored if i.candidate}
        if candidates:
            rows = await session.execute(
                select(result.c.id, result.c.updated_at).where(result.c.id.in_(candidates))
            )
            stamps = {r.id: r.updated_at.isoformat() for r in rows.all()}
            stored = [
                replace(i, candidate_version=stamps[i.candidate]) if i.candidate in stamps else i
                for i in stored
            ]
        patient = cipher.seal(
            json.dumps({"system": ident.system, "value": ident.value}).encode(),
            associated=check_id.encode(),
        )
        await session.execute(
            recognition_check.insert(),
            {
                "id": check_id,
                "created_at": now,
                "ordering_hospital": request.ordering_hospital,
                "person_id": person_id,
                "order_time": request.order_time,
                "emergency": request.emergency,
                "items": [i.as_json() for i in stored],
                "patient_sealed": patient.ciphertext,
                "patient_nonce": patient.nonce,
                "patient_key_id": patient.key_id,
                "catalog_version": catalog.version_label[:200],
                "policy_version": rules.policy.version[:64],
            },
        )
        await events.append(
            session,
            "check",
            request.ordering_hospital,
            {
                "check_id": check_id,
                "ordering_hospital": request.ordering_hospital,
                "order_time": request.order_time.isoformat(),
                "emergency": request.emergency,
                "items": [
                    {
                        "catalog_code": i.catalog_code,
                        "category": i.category,
                        "decision": i.decision,
                        "candidate_hospital": i.candidate_hospital,
                        "fee": i.fee_saved,
                    }
                    for i in stored
                ],
            },
            now,
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
