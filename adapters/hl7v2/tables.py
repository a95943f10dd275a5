"""HL7 v2 tables mapped to FHIR R4 codes, after the HL7 v2-to-FHIR IG ConceptMaps.

Where the IG's ConceptMap leaves a code unmapped, the choice made here is marked
"(not in the ConceptMap)"; docs/adapters.md explains each one.
"""

from __future__ import annotations

# Table 0123 (OBR-25 result status) -> DiagnosticReport.status
# (ConceptMap table-hl70123-queries-to-diagnostic-report-status).
REPORT_STATUS: dict[str, str] = {
    "O": "registered",
    "I": "registered",
    "S": "registered",
    "A": "partial",  # (not in the ConceptMap) some, but not all, results available
    "P": "preliminary",
    "C": "corrected",
    "R": "partial",
    "F": "final",
    "X": "cancelled",
    "M": "partial",  # (not in the ConceptMap) corrected, not final
    "N": "registered",  # (not in the ConceptMap) procedure completed, results pending
}
# Y (no order on record) and Z (no record of this patient) answer queries: the
# ConceptMap says "if not mapped, error", so they are refused as invalid values.
REPORT_STATUS_ERRORS = frozenset({"Y", "Z"})

# Table 0085 (OBX-11 observation result status) -> Observation.status
# (ConceptMap table-hl70085-to-observation-status).
OBSERVATION_STATUS: dict[str, str] = {
    "A": "amended",
    "B": "amended",  # (not in the ConceptMap) appended: R4 Observation has no "appended"
    "C": "corrected",
    "D": "entered-in-error",
    "F": "final",
    "I": "registered",  # (not in the ConceptMap) specimen in lab, results pending
    "N": "cancelled",  # (not in the ConceptMap) not asked: the test was not performed
    "O": "registered",  # (not in the ConceptMap) order detail only, no result
    "P": "preliminary",
    "R": "preliminary",  # (not in the ConceptMap) entered, not verified: an interim value
    "S": "preliminary",  # (not in the ConceptMap) partial results (deprecated in 2.6)
    "U": "final",  # (not in the ConceptMap) status changed to final, value not resent
    "V": "final",  # (not in the ConceptMap) verified: final, reviewed
    "W": "entered-in-error",
    "X": "cancelled",
}

# OBX-11 codes that say the observation has no value, -> Observation.dataAbsentReason
# (http://terminology.hl7.org/CodeSystem/data-absent-reason). N: the IG's OBX segment map
# assigns "not-asked". X: the 0085 ConceptMap maps it to status "cancelled" and asks for a
# data-absent reason "cannot-be-obtained", which that code system lacks; "not-performed"
# (the procedure was not performed) is the code that matches "cancelled" (not started or
# not completed). "error" would claim a system fault, which X does not say.
OBSERVATION_ABSENT_REASON: dict[str, str] = {
    "N": "not-asked",
    "X": "not-performed",
}

# Table 0136 (SPM-20 specimen availability) -> Specimen.status
# (ConceptMap YesNoIndicator[AvailabilityStatus]).
SPECIMEN_AVAILABILITY: dict[str, str] = {"Y": "available", "N": "unavailable"}

# Table 0490 (SPM-21 specimen reject reason), codes and displays as in HL7 terminology.
SPECIMEN_REJECT_REASON: dict[str, str] = {
    "EX": "Expired",
    "QS": "Quantity not sufficient",
    "RA": "Missing patient ID number",
    "RB": "Broken container",
    "RC": "Clotting",
    "RD": "Missing collection date",
    "RE": "Missing patient name",
    "RH": "Hemolysis",
    "RI": "Identification problem",
    "RM": "Labeling",
    "RN": "Contamination",
    "RP": "Missing phlebotomist ID",
    "RR": "Improper storage",
    "RS": "Name misspelling",
}

# Table 0493 (SPM-24 specimen condition).
SPECIMEN_CONDITION: dict[str, str] = {
    "AUT": "Autolyzed",
    "CFU": "Centrifuged",
    "CLOT": "Clotted",
    "CON": "Contaminated",
    "COOL": "Cool",
    "FROZ": "Frozen",
    "HEM": "Hemolyzed",
    "LIVE": "Live",
    "ROOM": "Room temperature",
    "SNR": "Sample not received",
}

# Table 0001 (PID-8 administrative sex) -> Patient.gender.
GENDER: dict[str, str] = {
    "M": "male",
    "F": "female",
    "O": "other",
    "A": "other",
    "U": "unknown",
    "N": "unknown",
}

# Table 0200 (XPN.7 name type) -> HumanName.use.
NAME_USE: dict[str, str] = {
    "L": "official",
    "D": "usual",
    "M": "maiden",
    "N": "nickname",
    "A": "anonymous",
}

# DiagnosticReport.status -> Observation.status, for an OBX whose OBX-11 is empty.
REPORT_TO_OBSERVATION_STATUS: dict[str, str] = {
    "registered": "registered",
    "partial": "preliminary",
    "preliminary": "preliminary",
    "final": "final",
    "corrected": "corrected",
    "cancelled": "cancelled",
    "entered-in-error": "entered-in-error",
}


def report_status_from_observations(statuses: list[str]) -> str:
    """DiagnosticReport.status when OBR-25 is empty, from its observations' statuses."""
    found = set(statuses)
    if not found:
        return "unknown"
    for single in ("final", "preliminary", "registered", "cancelled", "entered-in-error"):
        if found == {single}:
            return single
    if found <= {"final", "corrected", "amended"}:
        return "corrected" if "corrected" in found else "amended"
    if found & {"final", "corrected", "amended", "preliminary"}:
        return "partial"
    return "unknown"
