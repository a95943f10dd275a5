"""Request and response bodies of the API (DESIGN.md shapes)."""

from __future__ import annotations

from datetime import date, datetime
from typing import Literal, Self

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, model_validator

from broker.domain.ledger import DeclineReason


class PatientIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    system: str = Field(min_length=1, max_length=300)
    value: str = Field(min_length=1, max_length=100)


class CodingIn(BaseModel):
    system: str = Field(min_length=1, max_length=300)
    code: str = Field(min_length=1, max_length=64)


class ItemIn(BaseModel):
    """A code ({system, code}) or, for imaging, {modality, body_site[, laterality, contrast]}.

    Codes: LOINC (http://loinc.org), the catalog's own (urn:mrb:catalog), or a local code
    system the catalog maps. Imaging: body_site in SNOMED CT; laterality (SNOMED 7771000
    left, 24028007 right) for paired organs; contrast true for 增强, false/absent for 平扫.
    """

    model_config = ConfigDict(extra="forbid")
    system: str | None = Field(default=None, max_length=300)
    code: str | None = Field(default=None, max_length=100)
    modality: str | None = Field(default=None, max_length=16, pattern=r"^[A-Za-z]{2,4}$")
    body_site: CodingIn | None = None
    laterality: CodingIn | None = None
    contrast: bool | None = None
    protocol: str | None = Field(
        default=None,
        max_length=32,
        pattern=r"^[a-z][a-z0-9-]{1,31}$",
        description="plain (平扫), enhanced (增强), angiography, low-dose, perfusion, pet-ct …;"
        " wins over contrast",
    )

    @model_validator(mode="after")
    def _one_kind(self) -> Self:
        coded = self.system is not None or self.code is not None
        imaging = (
            self.modality is not None
            or self.body_site is not None
            or (self.laterality is not None or self.contrast is not None)
            or self.protocol is not None
        )
        if coded == imaging:
            raise ValueError("give either system and code, or modality (with body_site)")
        if coded and not (self.system and self.code):
            raise ValueError("a coded item needs both system and code")
        if imaging and not self.modality:
            raise ValueError("an imaging item needs a modality")
        return self


class CheckIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    patient: PatientIn
    ordering_hospital: str = Field(min_length=1, max_length=32)
    order_time: AwareDatetime
    items: list[ItemIn] = Field(min_length=1, max_length=50)
    emergency: bool = False
    birth_date: date | None = Field(
        default=None, description="the patient's; else the birth date hospitals sent is used"
    )
    pregnant: bool | None = None
    purpose: str | None = Field(
        default=None,
        max_length=40,
        description="purpose of use: TREAT (default), ETREAT (default when emergency), BTG, "
        "or mrb's word for them (schemas/policy/purposes.yaml); an unknown one is 400",
    )
    break_glass_reason: str | None = Field(
        default=None,
        max_length=500,
        description="with emergency: true (or ETREAT/BTG), reads beyond the patient's consent "
        "and opt-out as break-glass: audited with this reason and reviewed",
    )


class Text(BaseModel):
    zh: str
    en: str


class ResultRef(BaseModel):
    hospital: str
    result_id: str
    effective: datetime | None
    status: str
    summary: str
    fhir: str
    recognition_mark: str | None = None
    decision: str  # what the rules say about this result for the ordered item
    reason: Text
    valid_until: str | None = None
    value: str | None = None
    unit: str | None = None
    flags: list[str] = []  # interpretation codes: H, L, A; HH, LL, AA are critical
    # Imaging: the URL that opens the study's images at the issuing hospital (its viewer or
    # DICOMweb archive, from ImagingStudy.endpoint); None when it sent no usable endpoint.
    images: str | None = None


class WarningOut(BaseModel):
    """Beside a recognisable candidate: a newer result, or the candidate's own flags."""

    kind: str  # newer-result | candidate-critical | candidate-abnormal
    hospital: str
    effective: datetime | None
    status: str
    value: str | None
    unit: str | None
    flags: list[str]
    fhir: str
    message: Text


class ItemOut(BaseModel):
    requested: dict[str, object]
    catalog_code: str | None
    name: Text
    decision: str
    explanation: Text
    valid_until: str | None
    candidate: ResultRef | None
    other_results: list[ResultRef]
    warnings: list[WarningOut] = []
    fee_saved: str | None  # yuan, decimal string, when recognised
    notes: list[Text] = []


class CheckOut(BaseModel):
    check_id: str
    items: list[ItemOut]


class OutcomeItemIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    index: int = Field(ge=0, description="the item's position in the check's answer")
    outcome: Literal["accepted", "declined"]
    reason: DeclineReason | None = Field(
        default=None, description="for declines; OTHER needs reason_text; none = UNKNOWN"
    )
    reason_text: str | None = Field(default=None, max_length=500)


class OutcomeIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    items: list[OutcomeItemIn] = Field(min_length=1, max_length=50)


class OutcomeItemOut(BaseModel):
    index: int
    catalog_code: str | None
    outcome: str
    reason: str | None
    reason_display: Text | None
    reason_text: str | None
    fee_saved: str | None
    recorded_by: str
    recorded_at: datetime
    replayed: bool


class OutcomeOut(BaseModel):
    check_id: str
    items: list[OutcomeItemOut]


class ReasonOut(BaseModel):
    code: str
    display: Text
    needs_text: bool


class NotificationOut(BaseModel):
    notice_id: str
    created_at: datetime
    read_at: datetime | None
    kind: str  # corrected | withdrawn | link-undone (the patient link was undone)
    new_status: str  # the result's new status; "unlinked" for link-undone
    action: str  # reverse | flag (link-undone: always reverse)
    message: Text
    check_id: str
    item_index: int
    catalog_code: str | None
    order_time: datetime | None
    patient: dict[str, str] | None  # the identifier the check was made with
    result_fhir: str
