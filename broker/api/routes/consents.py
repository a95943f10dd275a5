"""A patient's consent and opt-out (PIPL Arts. 29, 44; 艾滋病防治条例 Art. 39), recorded by
a doctor of a hospital holding their results, and the break-glass report reviewed by the
security administrator (and the auditor). The same records are FHIR `Consent` resources at
/fhir/Consent (broker/fhir/consent.py)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from broker.api.deps import ContainerDep, require
from broker.api.schemas import PatientIn
from broker.domain.actors import Actor, Duty
from broker.domain.consent import ConsentKind, ConsentRecord
from broker.domain.errors import NotFound
from broker.services.access_report import parse_day, parse_identifier
from broker.services.consents import NOT_YOURS, NewConsent, report_period

router = APIRouter(tags=["patients"])
ConsentsDep = Annotated[Actor, Depends(require(Duty.CONSENTS))]
BreakGlassDep = Annotated[Actor, Depends(require(Duty.BREAK_GLASS_REPORT))]


class ConsentIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    patient: PatientIn
    kind: Literal["opt-out", "sensitive"]
    category: str | None = Field(
        default=None, max_length=32, description="the sensitive category (kind sensitive)"
    )
    evidence: str = Field(
        min_length=1,
        max_length=200,
        description="a reference to the signed form your hospital keeps (never its content)",
    )
    expires: AwareDatetime | None = Field(
        default=None, description="required for a consent; an opt-out may run until withdrawn"
    )


class ConsentOut(BaseModel):
    id: str
    kind: str
    category: str | None
    status: str
    recorded_by: str
    recorded_hospital: str
    recorded_at: datetime
    evidence: str
    expires: datetime | None
    withdrawn_at: datetime | None
    withdrawn_by: str | None
    fhir: str


class BreakGlassOut(BaseModel):
    at: datetime
    actor: str
    role: str
    hospital: str | None
    action: str
    person_id: str | None
    reason: str | None
    detail: dict[str, Any]


def _out(r: ConsentRecord) -> ConsentOut:
    return ConsentOut(
        id=r.id,
        kind=r.kind.value,
        category=r.category,
        status=r.status(datetime.now(r.recorded_at.tzinfo)),
        recorded_by=r.recorded_by,
        recorded_hospital=r.recorded_hospital,
        recorded_at=r.recorded_at,
        evidence=r.evidence,
        expires=r.expires_at,
        withdrawn_at=r.withdrawn_at,
        withdrawn_by=r.withdrawn_by,
        fhir=f"/fhir/Consent/{r.id}",
    )


@router.post("/api/v1/patients/consents", response_model=ConsentOut, status_code=201)
async def record(body: ConsentIn, container: ContainerDep, actor: ConsentsDep) -> ConsentOut:
    """Record an opt-out of cross-hospital sharing, or a consent to share one sensitive
    category, as the patient signed it at your hospital. Effective from the next request."""
    new = NewConsent(
        body.patient.system,
        body.patient.value,
        ConsentKind(body.kind),
        body.evidence,
        body.category,
        body.expires,
    )
    return _out(await container.consent_service().record(actor, new))


@router.get("/api/v1/patients/consents", response_model=list[ConsentOut])
async def list_consents(
    container: ContainerDep,
    actor: ConsentsDep,
    identifier: Annotated[str, Query(description="the patient's identifier, system|value")],
) -> list[ConsentOut]:
    """The patient's consents and opt-outs (withdrawn and expired included), oldest first."""
    found = await container.consent_service().of_patient(
        actor, identifier=parse_identifier(identifier)
    )
    if found is None:
        raise NotFound("Patient not found", NOT_YOURS)
    return [_out(r) for r in found.records]


@router.post("/api/v1/patients/consents/{consent_id}/withdraw", response_model=ConsentOut)
async def withdraw(consent_id: str, container: ContainerDep, actor: ConsentsDep) -> ConsentOut:
    """Withdraw a consent or an opt-out (idempotent): it counts for nothing from the next
    request on."""
    return _out(await container.consent_service().withdraw(actor, consent_id))


@router.get("/api/v1/audit/break-glass", response_model=list[BreakGlassOut], tags=["audit"])
async def break_glass_report(
    container: ContainerDep,
    actor: BreakGlassDep,
    from_: Annotated[
        str | None, Query(alias="from", description="first day, YYYY-MM-DD (Asia/Shanghai)")
    ] = None,
    to: Annotated[str | None, Query(description="day after the last, YYYY-MM-DD")] = None,
) -> list[BreakGlassOut]:
    """Every break-glass read over [from, to) (default: the last 30 days), oldest first,
    with who, where, which person and the reason given; producing it is audited."""
    start, end = report_period(parse_day(from_, "from"), parse_day(to, "to"))
    rows = await container.consent_service().break_glass_report(actor, start, end)
    return [
        BreakGlassOut(
            at=r.at,
            actor=r.actor,
            role=r.role,
            hospital=r.hospital,
            action=r.action,
            person_id=r.person_id,
            reason=r.detail.get("break_glass_reason"),
            detail=r.detail,
        )
        for r in rows
    ]
