"""The recognition check: resolve the patient, run the rules per item, store, audit."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any, Protocol

from broker import ports
from broker.domain.actors import Actor
from broker.domain.catalog import Catalog
from broker.domain.check_items import StoredCheckItem
from broker.domain.consent import ConsentView
from broker.domain.errors import Invalid, NotAllowed, NotFound
from broker.domain.identifier_systems import IdentifierRegistry
from broker.domain.identifiers import InvalidIdentifier
from broker.domain.purposes import TREATMENT, PurposeTable, doctor_read
from broker.domain.recognition import (
    ItemDecision,
    Order,
    PatientContext,
    Policy,
    decide,
    local_date,
    needs_age,
    resolve_order,
    results_that_matter,
    rows_that_matter,
)
from broker.domain.sensitivity import SensitivityTable
from broker.observability import CHECKS
from broker.ports.consent import ConsentReader
from broker.reference.identifier_systems import shipped_identifier_registry
from broker.reference.purposes import shipped_purposes
from broker.reference.sensitive import shipped_sensitivity
from broker.services.consents import note_break_glass


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
    # The purpose of use (broker.domain.purposes: an audit word or an HL7 v3 code; None:
    # treatment, or emergency treatment for an emergency) and, for an emergency read
    # beyond the patient's consent or opt-out, the reason (break-glass).
    purpose: str | None = None
    break_glass_reason: str | None = None


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
    # Tests and tools get the shipped systems; the container loads its schemas' own.
    identifiers: IdentifierRegistry = field(default_factory=shipped_identifier_registry)
    # Sensitive result categories (schemas/catalog/sensitive.yaml): the shipped table unless
    # given, so that no way of building Rules leaves them shared.
    sensitivity: SensitivityTable = field(default_factory=shipped_sensitivity)

    async def current_rules(self, mappings: ports.Mappings) -> Rules:
        """Fixed rules (tests, tools); RulesProvider adds run-time mappings."""
        return self


class RulesSource(Protocol):
    async def current_rules(self, mappings: ports.Mappings) -> Rules: ...


def _seen(
    view: ConsentView, sensitivity: SensitivityTable, *, break_glass: bool
) -> tuple[bool, frozenset[str]]:
    """(own hospital's results only, categories shared) for this read: break-glass sees
    every category and ignores an opt-out; an opt-out leaves the issuer its own only."""
    if break_glass:
        return False, frozenset(c.code for c in sensitivity.categories)
    return view.opted_out, view.categories


async def run_check(
    uow: ports.CheckUnitOfWork,
    rules_source: RulesSource,
    request: CheckRequest,
    actor: Actor,
    *,
    now: datetime | None = None,
    consents: ConsentReader | None = None,
    purposes: PurposeTable | None = None,
) -> CheckAnswer:
    """Answer a check, store it and its event, and audit the read of the patient's results:
    one unit of work, committed once. Other hospitals' sensitive results are not read
    (their values stay sealed) nor used, unless the patient's consent records (`consents`,
    else the unit of work's own) say they agreed; a
    patient who opted out of sharing has no results at other hospitals (every item answered
    as if none existed); an emergency with a reason reads beyond both (break-glass)."""
    stated = doctor_read(
        purposes or shipped_purposes(),
        request.purpose,
        emergency=request.emergency,
        reason=request.break_glass_reason,
    )
    if actor.hospital != request.ordering_hospital:
        raise NotAllowed(
            "Not your hospital",
            f"ordering_hospital must be the caller's own ({actor.hospital}), "
            f"not {request.ordering_hospital}",
        )
    async with uow:
        # The reference data (hospital profiles, mappings) may come from the process's
        # cache; the person lookup confirms it was current, else it is read again (at most
        # once more: after a move the unit of work reads it afresh).
        while True:
            rules = await rules_source.current_rules(uow.mappings)
            registry = await uow.hospitals.profiles()
            ordering = registry.get(request.ordering_hospital)
            if ordering is None:
                if await uow.reference_moved():
                    continue
                raise NotFound(
                    "Unknown ordering hospital",
                    f"hospital {request.ordering_hospital!r} is not registered",
                )
            try:
                ident = rules.identifiers.lookup(
                    request.patient_system,
                    request.patient_value,
                    hospital=request.ordering_hospital,
                )
            except InvalidIdentifier as exc:
                raise Invalid("Invalid patient identifier", str(exc)) from None
            if ident is None:
                raise Invalid("Invalid patient identifier", "patient.value is empty")
            catalog = rules.catalog.for_region(ordering.region, local_date(request.order_time))
            wanted = [resolve_order(o, catalog, ordering.id) for o in request.items]
            rows = rows_that_matter(wanted, catalog)
            person_id = await uow.people.find(ident, rows)
            if not await uow.reference_moved():
                break
        # Consent comes from its record only (read afresh: a withdrawal counts at once),
        # never from what the caller sent.
        own_only, consented = _seen(
            await (consents or uow.consents).view(person_id),
            rules.sensitivity,
            break_glass=stated.break_glass,
        )
        viewer = ordering.id
        prior = (
            await uow.results.prior_items(
                person_id,
                lambda items: results_that_matter(
                    wanted,
                    [i for i in items if i.hospital == viewer] if own_only else items,
                    catalog,
                    sensitivity=rules.sensitivity,
                    viewer=ordering.id,
                    consented=consented,
                ),
                rows,
            )
            if person_id
            else []
        )
        if own_only:  # opted out: as if no other hospital had ever sent a result
            prior = [p for p in prior if p.hospital == viewer]
        context = replace(request.patient, consented=consented)
        if context.birth_date is None and person_id and needs_age(wanted, catalog):
            context = replace(context, birth_date=await uow.people.birth_date(person_id))
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
                sensitivity=rules.sensitivity,
            )
            CHECKS.labels(decision.decision.value).inc()
            answers.append(ItemAnswer(order, decision))
        check_id = str(uuid.uuid4())
        now = now or datetime.now(UTC)
        stored = [StoredCheckItem.of(a.requested, a.decision) for a in answers]
        # Which version each candidate was, so an outcome can tell it changed since.
        stamps = {p.result_id: p.result_version for p in prior if p.result_version}
        stored = [
            replace(i, candidate_version=stamps[i.candidate]) if i.candidate in stamps else i
            for i in stored
        ]
        await uow.checks.add(
            ports.RecordedCheck(
                check_id=check_id,
                created_at=now,
                ordering_hospital=request.ordering_hospital,
                person_id=person_id,
                patient=ident,
                order_time=request.order_time,
                emergency=request.emergency,
                items=tuple(stored),
                catalog_version=catalog.version_label,
                policy_version=rules.policy.version,
            )
        )
        await uow.events.append(
            "check", request.ordering_hospital, _event(check_id, request, stored), now
        )
        detail: dict[str, Any] = {"check_id": check_id, "items": len(answers)}
        if stated.break_glass:
            detail["break_glass_reason"] = stated.break_glass_reason
        await uow.audit.record_read(
            actor,
            action="recognition-check",
            # A check for treatment is audited as order entry, as it always was.
            purpose="order-entry" if stated.audit == TREATMENT else stated.audit,
            patient=ident,
            person_id=person_id,
            detail=detail,
        )
        await uow.commit()
    if stated.break_glass:
        note_break_glass(actor, "recognition-check")
    return CheckAnswer(check_id, tuple(answers))


def _event(check_id: str, request: CheckRequest, stored: list[StoredCheckItem]) -> dict[str, Any]:
    """The `check` event of mrb.recognition.v1 (DESIGN.md): no identifier, no person id."""
    return {
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
    }
