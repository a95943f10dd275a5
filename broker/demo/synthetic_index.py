"""Synthetic people and lab results for `mrb bench load`, at any index size.

Everything follows from a person's number and the reference time, so a load generator
can name the people it checks (and know which checks should find a recent result)
without reading the database. Each person has results at two hospitals, one FHIR
Bundle per hospital (its Patient and lone Observations), and exactly one result from
yesterday: a check for that item finds it, a check for `missing_code` finds nothing.

The messages are built as dictionaries and their `ParsedMessage` alongside, with the
fields ingest derives from such a Bundle (broker/ingest/fhir_results.py); the bench
smoke test parses a sample with `parse_message` and compares.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from datetime import date, datetime, timedelta

from broker.demo.catalog_sample import LAB_PANELS, LOINC, Analyte
from broker.domain.identifiers import RESIDENT_ID_SYSTEM, normalise, patient_resource_key
from broker.domain.results import (
    Coding,
    ExtractedResult,
    ParsedMessage,
    PatientRef,
    ResultItem,
    ResultKind,
)
from broker.domain.versions import VersionKey
from broker.ingest.fhir_results import content_hash
from mrb_wire import resident_id
from mrb_wire.fhir import RECOGNITION_MARK_URL

FHIR_R4_JSON = "application/fhir+json; fhirVersion=4.0"
# Quantitative analytes of the demo's lab catalog (real LOINC codes, catalog items).
ANALYTES: tuple[Analyte, ...] = tuple(
    a for p in LAB_PANELS for a in p.analytes if not a.qualitative and a.unit
)
# Where results come from: H001 (三级, marks 全国HR, certified for every lab group in the
# demo registry) holds the recent result; H003 (二级) holds half of the older ones.
RECENT_HOSPITAL = "H001"
OTHER_HOSPITAL = "H003"
ORDERING_HOSPITAL = "H002"  # the doctor who checks (三级, same city)
MARKS = {"H001": "全国HR", "H003": "泸州HR"}
REGION = "510502"  # GB/T 2260 prefix of every synthetic resident ID
_NS = uuid.UUID("6f1c4d1e-7a53-4b8e-9a7e-2f0b5d6c8e91")
_BORN_FROM = date(1940, 1, 1)


@dataclass(frozen=True)
class SyntheticMessage:
    message_id: str
    hospital: str
    value: bytes
    parsed: ParsedMessage
    content_type: str = FHIR_R4_JSON


def national_id(number: int) -> str:
    """A valid 18-character resident ID, unique per person number (up to 30 million)."""
    born = birth_date(number)
    first17 = f"{REGION}{born:%Y%m%d}{number % 1000:03d}"
    return first17 + resident_id.check_character(first17)


def birth_date(number: int) -> date:
    return _BORN_FROM + timedelta(days=number // 1000)


def _code_index(number: int, j: int) -> int:
    return (number * 7 + j) % len(ANALYTES)


def recent_code(number: int) -> str:
    """The LOINC code of the person's result from yesterday (a check for it is a hit)."""
    return ANALYTES[_code_index(number, 0)].loinc


def missing_code(number: int, results: int) -> str:
    """A LOINC code of which the person has no result at all (a check for it is a miss)."""
    if results >= len(ANALYTES):
        raise ValueError(f"a person with {results} results may hold every code")
    return ANALYTES[_code_index(number, results)].loinc


def person_messages(number: int, results: int, now: datetime) -> list[SyntheticMessage]:
    """The person's `results` results as one message per hospital."""
    pid = f"bench-{number}"
    nid = national_id(number)
    observations: dict[str, list[tuple[int, Analyte, datetime]]] = {}
    for j in range(results):
        if j == 0:
            hospital, days = RECENT_HOSPITAL, 1
        else:
            hospital = RECENT_HOSPITAL if j % 2 else OTHER_HOSPITAL
            days = 30 + (number * 31 + j * 97) % 700  # older than any validity window
        when = (now - timedelta(days=days)).replace(microsecond=0)
        observations.setdefault(hospital, []).append((j, ANALYTES[_code_index(number, j)], when))
    return [
        _message(number, pid, nid, hospital, obs, now) for hospital, obs in observations.items()
    ]


def _message(
    number: int,
    pid: str,
    nid: str,
    hospital: str,
    observations: list[tuple[int, Analyte, datetime]],
    now: datetime,
) -> SyntheticMessage:
    born = birth_date(number)
    patient = {
        "resourceType": "Patient",
        "id": pid,
        "identifier": [{"system": RESIDENT_ID_SYSTEM, "value": nid}],
        "birthDate": born.isoformat(),
    }
    identifier = normalise(RESIDENT_ID_SYSTEM, nid, hospital=hospital)
    assert identifier is not None  # a valid resident ID by construction
    ref = PatientRef((identifier,), patient_resource_key(pid, hospital=hospital), born)
    entries: list[dict[str, object]] = [{"fullUrl": "urn:uuid:patient", "resource": patient}]
    extracted = []
    for j, analyte, when in observations:
        obs, result = _observation(number, j, hospital, analyte, when, ref)
        entries.append({"fullUrl": f"urn:uuid:{obs['id']}", "resource": obs})
        extracted.append(result)
    doc = {"resourceType": "Bundle", "type": "collection", "entry": entries}
    message_id = str(uuid.uuid5(_NS, f"message|{number}|{hospital}|{now.date()}"))
    return SyntheticMessage(
        message_id,
        hospital,
        json.dumps(doc, ensure_ascii=False).encode(),
        ParsedMessage(tuple(extracted)),
    )


def _observation(
    number: int, j: int, hospital: str, a: Analyte, when: datetime, ref: PatientRef
) -> tuple[dict[str, object], ExtractedResult]:
    oid = str(uuid.uuid5(_NS, f"obs|{number}|{j}"))
    accession_system = f"urn:mrb:hospital:{hospital}:accession"
    accession = f"B{number}-{j}"
    span = a.high - a.low
    value = round(a.low + span * ((number * 13 + j * 7) % 100) / 100, a.decimals)
    stamp = when.isoformat()
    mark = MARKS[hospital]
    obs: dict[str, object] = {
        "resourceType": "Observation",
        "id": oid,
        "meta": {"versionId": "1", "lastUpdated": stamp},
        "extension": [{"url": RECOGNITION_MARK_URL, "valueString": mark}],
        "identifier": [{"system": accession_system, "value": accession}],
        "status": "final",
        "category": [
            {
                "coding": [
                    {
                        "system": "http://terminology.hl7.org/CodeSystem/observation-category",
                        "code": "laboratory",
                    }
                ]
            }
        ],
        "code": {"coding": [{"system": LOINC, "code": a.loinc, "display": a.display}]},
        "subject": {"reference": "urn:uuid:patient"},
        "effectiveDateTime": stamp,
        "issued": stamp,
        "valueQuantity": {"value": value, "unit": a.unit},
    }
    item = ResultItem(
        resource_type="Observation",
        resource_id=oid,
        codings=(Coding(LOINC, a.loinc, a.display),),
        status="final",
        effective=when,
        summary=f"{a.display}: {value} {a.unit}",
        recognition_mark=mark,
        value=str(value),
        unit=a.unit,
    )
    result = ExtractedResult(
        kind=ResultKind.LAB,
        resource_type="Observation",
        business_id=f"Observation|{accession_system}|{accession}",
        status="final",
        effective=when,
        issued=when,
        version=VersionKey.of(when, "1"),
        version_label="1",
        content_hash=content_hash([obs]),  # as ingest computes it
        patient=ref,
        summary=item.summary,
        items=(item,),
    )
    return obs, result
