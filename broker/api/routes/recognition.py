"""The recognition check, and the doctor's outcome for each item."""

from __future__ import annotations

from fastapi import APIRouter, Depends

from broker.api.deps import ContainerDep, DoctorDep, require
from broker.api.limits import admit_check
from broker.api.schemas import (
    CheckIn,
    CheckOut,
    ItemIn,
    ItemOut,
    OutcomeIn,
    OutcomeItemOut,
    OutcomeOut,
    ReasonOut,
    ResultRef,
    Text,
    WarningOut,
)
from broker.domain.actors import Duty
from broker.domain.ledger import REASON_DISPLAY, DeclineReason, OutcomeInput, OutcomeKind
from broker.domain.recognition import Order, PatientContext, Verdict, Warning
from broker.services.checks import CheckRequest, ItemAnswer, run_check
from broker.services.outcomes import OutcomeRequest, RecordedOutcome, record_outcomes

router = APIRouter(prefix="/api/v1/recognition", tags=["recognition"])


@router.post("/check", response_model=CheckOut)
async def check(body: CheckIn, container: ContainerDep, actor: DoctorDep) -> CheckOut:
    """Decide, per ordered item, whether a prior result from any hospital may be recognised."""
    await admit_check(
        container, actor, body.patient.system, body.patient.value, emergency=body.emergency
    )
    request = CheckRequest(
        patient_system=body.patient.system,
        patient_value=body.patient.value,
        ordering_hospital=body.ordering_hospital,
        order_time=body.order_time,
        emergency=body.emergency,
        items=tuple(_order(i) for i in body.items),
        patient=PatientContext(body.birth_date, body.pregnant),
        purpose=body.purpose,
        break_glass_reason=body.break_glass_reason,
    )
    answer = await run_check(
        container.check_uow(),
        container.rules_provider(),
        request,
        actor,
    )
    return CheckOut(check_id=answer.check_id, items=[_item(a) for a in answer.items])


@router.post("/{check_id}/outcome", response_model=OutcomeOut)
async def outcome(
    check_id: str, body: OutcomeIn, container: ContainerDep, actor: DoctorDep
) -> OutcomeOut:
    """Record per item `accepted` (the saving is booked) or `declined` with a reason.

    Idempotent: sending the same outcome again returns what was recorded (`replayed`).
    """
    recorded = await record_outcomes(
        container.outcome_uow(),
        container.reference_rules().catalog,
        check_id,
        [
            OutcomeRequest(i.index, OutcomeInput(OutcomeKind(i.outcome), i.reason, i.reason_text))
            for i in body.items
        ],
        actor,
    )
    return OutcomeOut(check_id=check_id, items=[_outcome(o) for o in recorded])


@router.get(
    "/decline-reasons",
    response_model=list[ReasonOut],
    dependencies=[Depends(require(Duty.REFERENCE))],
)
async def decline_reasons(include_unknown: bool = False) -> list[ReasonOut]:
    """The regulation's grounds for testing again, for order-entry screens; reports add
    `include_unknown=true` for the label of declines recorded without a reason."""
    return [
        ReasonOut(code=r.value, display=Text(zh=d.zh, en=d.en), needs_text=r is DeclineReason.OTHER)
        for r, d in REASON_DISPLAY.items()
        if include_unknown or r is not DeclineReason.UNKNOWN
    ]


def _outcome(o: RecordedOutcome) -> OutcomeItemOut:
    display = REASON_DISPLAY.get(DeclineReason(o.reason)) if o.reason else None
    return OutcomeItemOut(
        index=o.index,
        catalog_code=o.catalog_code,
        outcome=o.outcome.value,
        reason=o.reason,
        reason_display=Text(zh=display.zh, en=display.en) if display else None,
        reason_text=o.reason_text,
        fee_saved=f"{o.saved:.2f}" if o.saved is not None else None,
        recorded_by=o.recorded_by,
        recorded_at=o.recorded_at,
        replayed=o.replayed,
    )


def _order(i: ItemIn) -> Order:
    return Order(
        system=i.system,
        code=i.code,
        modality=i.modality.upper() if i.modality else None,
        body_site=i.body_site.code if i.body_site else None,
        laterality=i.laterality.code if i.laterality else None,
        contrast=i.contrast,
        protocol=i.protocol,
    )


def _item(a: ItemAnswer) -> ItemOut:
    d = a.decision
    name = (
        Text(zh=d.item.name_zh, en=d.item.name_en)
        if d.item
        else Text(zh=_label(a.requested), en=_label(a.requested))
    )
    return ItemOut(
        requested=_requested(a.requested),
        catalog_code=d.item.code if d.item else None,
        name=name,
        decision=d.decision.value,
        explanation=Text(zh=d.explanation.zh, en=d.explanation.en),
        valid_until=d.valid_until.isoformat() if d.valid_until else None,
        candidate=_ref(d.candidate) if d.candidate else None,
        other_results=[_ref(o) for o in d.others],
        warnings=[_warning(w) for w in d.warnings],
        fee_saved=f"{d.fee_saved:.2f}" if d.fee_saved is not None else None,
        notes=[Text(zh=n.zh, en=n.en) for n in d.notes],
    )


def _requested(r: Order) -> dict[str, object]:
    if r.modality is None:
        return {"system": r.system, "code": r.code}
    out: dict[str, object] = {"modality": r.modality}
    if r.body_site:
        out["body_site"] = {"system": "http://snomed.info/sct", "code": r.body_site}
    if r.laterality:
        out["laterality"] = {"system": "http://snomed.info/sct", "code": r.laterality}
    if r.contrast is not None:
        out["contrast"] = r.contrast
    if r.protocol is not None:
        out["protocol"] = r.protocol
    return out


def _label(r: Order) -> str:
    return f"{r.modality} {r.body_site or ''}".strip() if r.modality else f"{r.system}|{r.code}"


def _ref(v: Verdict) -> ResultRef:
    return ResultRef(
        hospital=v.hospital,
        result_id=v.result_id,
        effective=v.effective,
        status=v.status,
        summary=v.summary,
        fhir=_fhir(v.fhir_ref, v.resource_type, v.result_id),
        recognition_mark=v.mark,
        decision=v.decision.value,
        reason=Text(zh=v.reason.zh, en=v.reason.en),
        valid_until=v.valid_until.isoformat() if v.valid_until else None,
        value=v.value,
        unit=v.unit,
        flags=list(v.flags),
        images=v.images,
    )


def _warning(w: Warning) -> WarningOut:
    return WarningOut(
        kind=w.kind,
        hospital=w.hospital,
        effective=w.effective,
        status=w.status,
        value=w.value,
        unit=w.unit,
        flags=list(w.flags),
        fhir=_fhir(w.fhir_ref, w.resource_type, w.result_id),
        message=Text(zh=w.message.zh, en=w.message.en),
    )


def _fhir(ref: str | None, resource_type: str, result_id: str) -> str:
    """The item's /fhir URL: where storage says it is served, else the result's report."""
    return f"/fhir/{ref}" if ref else f"/fhir/{resource_type or 'DiagnosticReport'}/{result_id}"
