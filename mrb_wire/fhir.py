"""FHIR identifier systems and extension URLs the adapters write and the broker reads."""

from __future__ import annotations

from urllib.parse import quote

from mrb_wire import resident_id

RESIDENT_ID_SYSTEM = resident_id.SYSTEM
DICOM_UID_SYSTEM = "urn:dicom:uid"  # ImagingStudy.identifier: value "urn:oid:<Study Instance UID>"

# Extensions (valueX as noted); DESIGN.md and docs/adapters.md say what each carries.
RECOGNITION_MARK_URL = "urn:mrb:fhir:extension:recognition-mark"  # valueString: HR mark
CONTRAST_URL = "urn:mrb:fhir:extension:contrast"  # valueBoolean; absent means plain (平扫)
PROTOCOL_URL = "urn:mrb:fhir:extension:protocol"  # valueString: imaging protocol as sent
REJECT_REASON_URL = "urn:mrb:fhir:extension:specimen-reject-reason"  # on Specimen


def hospital_system(hospital: str, kind: str) -> str:
    """A system scoped to one hospital, e.g. its MRNs, accession numbers or local lab codes:
    `urn:mrb:hospital:<H>:<kind>`. Values under it never link across hospitals."""
    return f"urn:mrb:hospital:{hospital}:{kind}"


def hospital_subsystem(hospital: str, kind: str, name: str) -> str:
    """`urn:mrb:hospital:<H>:<kind>:<name>`, the name percent-encoded (an issuer, a code system)."""
    return f"{hospital_system(hospital, kind)}:{quote(name, safe='')}"
