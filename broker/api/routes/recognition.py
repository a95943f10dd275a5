"""POST /api/v1/recognition/check."""

from __future__ import annotations

from fastapi import APIRouter

from broker.api.deps import ContainerDep
from broker.api.schemas import CheckIn, CheckOut, ItemOut, ResultRef, Text
from broker.domain.prior_results import OrderedItem, PriorResult
from broker.domain.results import Coding
from broker.services.audit import Actor
from broker.services.checks import CheckRequest, ItemAnswer, run_check

router = APIRouter(prefix="/api/v1/recognition", tags=["recognition"])


@router.post("/check", response_model=CheckOut)
async def check(body: CheckIn, container: ContainerDep) -> CheckOut:
    """Find the patient's prior results for each ordered item, from every hospital."""
    request = CheckRequest(
        patient_system=body.patient.system,
        patient_value=body.patient.value,
        ordering_hospital=body.ordering_hospital,
        order_time=body.order_time,
        emergency=body.emergency,
        items=tuple(
            OrderedItem(
                system=i.system,
                code=i.code,
                modality=i.modality.upper() if i.modality else None,
                body_site=Coding(i.body_site.system, i.body_site.code) if i.body_site else None,
            )
            for i in body.items
        ),
    )
    answer = await run_check(
        container.sessions,
        container.pseudonyms,
        request,
        Actor(hospital=body.ordering_hospital),
    )
    return CheckOut(check_id=answer.check_id, items=[_item(a) for a in answer.items])


def _item(a: ItemAnswer) -> ItemOut:
    r = a.requested
    requested: dict[str, object] = (
        {
            "modality": r.modality,
            "body_site": {"system": r.body_site.system, "code": r.body_site.code}
            if r.body_site
            else None,
        }
        if r.is_imaging
        else {"system": r.system, "code": r.code}
    )
    best = a.answer.candidate
    label = (best.display if best and best.display else None) or (
        f"{r.modality} {r.body_site.code if r.body_site else ''}".strip()
        if r.is_imaging
        else f"{r.system}|{r.code}"
    )
    return ItemOut(
        requested=requested,
        catalog_code=None,
        name=Text(zh=label, en=label),
        decision=a.answer.decision,
        explanation=Text(zh=a.answer.zh, en=a.answer.en),
        valid_until=None,
        candidate=_ref(best) if best else None,
        other_results=[_ref(o) for o in a.answer.others],
        fee_saved=None,
    )


def _ref(p: PriorResult) -> ResultRef:
    return ResultRef(
        hospital=p.hospital,
        result_id=p.result_id,
        effective=p.effective,
        status=p.item_status,
        summary=p.summary,
        recognition_mark=p.recognition_mark,
        fhir=f"/fhir/{p.resource_type}/{p.result_id}",
    )
