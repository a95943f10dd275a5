"""The CDS Services mrb offers, as the discovery endpoint describes them."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

ORDER_SELECT = "order-select"
ORDER_SIGN = "order-sign"
PATIENT_VIEW = "patient-view"

# Only the Patient is asked for: its identifiers find the person; nothing else is needed.
PATIENT_PREFETCH: Mapping[str, str] = {"patient": "Patient/{{context.patientId}}"}


@dataclass(frozen=True)
class ServiceDefinition:
    id: str
    hook: str
    title: str
    description: str
    prefetch: Mapping[str, str] = field(default_factory=lambda: dict(PATIENT_PREFETCH))
    usage: str = (
        "The EHR registers as a CDS client with mrb (issuer, hospital, JWK Set) and signs "
        "every call (ES384 or RS384). Patients are found by the resident ID number "
        "(urn:oid:2.16.156.10011.1.3) or the hospital's own identifiers in Patient.identifier."
    )

    def discovery(self) -> dict[str, Any]:
        return {
            "hook": self.hook,
            "title": self.title,
            "description": self.description,
            "id": self.id,
            "prefetch": dict(self.prefetch),
            "usageRequirements": self.usage,
        }


ORDER_SELECT_SERVICE = ServiceDefinition(
    id="mrb-recognition-order-select",
    hook=ORDER_SELECT,
    title="检查检验结果互认 Mutual recognition of test results (order-select)",
    description=(
        "When a lab test or imaging study is selected, says whether a result the patient "
        "already has at another hospital may be recognised instead (2022 互认 rules), and "
        "suggests removing the duplicate order. Advises only on the selected ServiceRequests."
    ),
)
ORDER_SIGN_SERVICE = ServiceDefinition(
    id="mrb-recognition-order-sign",
    hook=ORDER_SIGN,
    title="检查检验结果互认 Mutual recognition of test results (order-sign)",
    description=(
        "Before draft lab and imaging orders are signed, says which ones a result from "
        "another hospital makes unnecessary. Orders already checked at order-select reuse "
        "that check; orders already accepted or declined are not raised again."
    ),
)
PATIENT_VIEW_SERVICE = ServiceDefinition(
    id="mrb-recognition-patient-view",
    hook=PATIENT_VIEW,
    title="检查检验结果互认 Prior results at other hospitals (patient-view)",
    description=(
        "When a patient's chart is opened, says (once, quietly) whether other hospitals "
        "hold recent results for the patient that may be recognised, with a link to the "
        "doctor's page. No card when there are none."
    ),
)

SERVICES: Mapping[str, ServiceDefinition] = {
    s.id: s for s in (ORDER_SELECT_SERVICE, ORDER_SIGN_SERVICE, PATIENT_VIEW_SERVICE)
}


def discovery() -> dict[str, Any]:
    """The body of `GET /cds-services`."""
    return {"services": [s.discovery() for s in SERVICES.values()]}
