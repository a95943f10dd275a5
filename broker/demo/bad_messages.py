"""The demo's deliberately bad messages: one per dead-letter code worth showing.

Each must fail for exactly its own reason, so everything else about it is valid: the
truncated JSON is still valid UTF-8, the unknown hospital's Bundle is good FHIR, the
oversized Bundle is well-formed, and so on.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

from broker.demo.catalog_sample import LAB_PANELS, SNOMED, LabPanel
from broker.demo.fhir_build import (
    DCM,
    Person,
    ResultPlan,
    Site,
    Version,
    det_uuid,
    dicom_uid,
    dump,
    render,
    routing_key,
    ts,
)

MakeLab = Callable[[Person, Site, LabPanel], ResultPlan]

TOO_LARGE_BYTES = 2 * 1024 * 1024 + 4096  # past 2 MiB; the broker's default limit is 1 MiB
NESTING = 5000
STU3_CONTENT_TYPE = "application/fhir+json; fhirVersion=3.0"
INVALID_UTF8 = b'{"resourceType": "Bundle", "type": "collection", "entry": [], "note": "\xff\xfe"}'
UNKNOWN_HOSPITAL = Site("H999", "未登记医院", 999, None, False)


@dataclass(frozen=True)
class BadMessage:
    hospital: str
    key: bytes
    value: bytes
    code: str
    note: str
    content_type: str = "application/fhir+json; fhirVersion=4.0"


def build(
    seed: int,
    base: datetime,
    people: Sequence[Person],
    sites: Mapping[str, Site],
    make_lab: MakeLab,
) -> list[BadMessage]:
    """Ten messages, each rejected for its own reason (BadMessage.code)."""
    panels = {p.key: p for p in LAB_PANELS}

    def home(person: Person) -> Site:
        return sites[next(iter(person.mrns))]  # mrns are in visiting order, home first

    def lab(person: Person, panel: str, code: str, site: Site | None = None) -> Version:
        site = site or home(person)
        plan = make_lab(person, site, panels[panel])
        plan = dataclasses.replace(plan, key=f"bad-{code}", accession="X" + plan.accession)
        return Version(plan, 1, "final", plan.recorded, plan.values)

    def message(
        person: Person | None,
        code: str,
        value: bytes,
        note: str,
        site: Site | None = None,
        content_type: str | None = None,
    ) -> BadMessage:
        hospital = (site or home(person or people[0])).id
        key = routing_key(seed, hospital, person.index if person else f"bad-{code}")
        extra = {"content_type": content_type} if content_type else {}
        return BadMessage(hospital, key, value, code, note, **extra)

    p = list(people[:6])
    truncated = render(lab(p[0], "cbc", "MALFORMED_JSON"), seed).decode()
    # Cut on a character boundary: a split multi-byte character would be INVALID_ENCODING.
    truncated = truncated[: len(truncated) * 2 // 3]
    h999 = dataclasses.replace(
        p[4],
        mrns={**p[4].mrns, "H999": "H999-000001"},
        registered={**p[4].registered, "H999": base},
    )
    wrong = _wrong_check_digit(p[5])
    return [
        message(p[0], "MALFORMED_JSON", truncated.encode(), "truncated JSON"),
        message(
            None,
            "NOT_FHIR",
            json.dumps({"patient": p[1].mrns[home(p[1]).id], "hb": 13.2, "unit": "g/dL"}).encode(),
            "JSON object without resourceType",
        ),
        message(
            None, "UNSUPPORTED_RESOURCE_TYPE", dump(_medication(seed)), "single Medication resource"
        ),
        message(
            p[2],
            "PATIENT_NOT_IDENTIFIED",
            render(
                lab(p[2], "glucose", "PATIENT_NOT_IDENTIFIED"), seed, subject="Patient/unknown-123"
            ),
            "glucose report whose subject is not in the Bundle",
        ),
        message(
            h999,
            "UNKNOWN_HOSPITAL",
            render(lab(h999, "cbc", "UNKNOWN_HOSPITAL", UNKNOWN_HOSPITAL), seed),
            "valid CBC panel from an unregistered hospital",
            UNKNOWN_HOSPITAL,
        ),
        message(None, "INVALID_ENCODING", INVALID_UTF8, "invalid UTF-8 bytes"),
        message(None, "NESTING_TOO_DEEP", _deeply_nested(), f"arrays nested {NESTING} deep"),
        message(
            p[3],
            "MESSAGE_TOO_LARGE",
            _oversized(lab(p[3], "liver", "MESSAGE_TOO_LARGE"), seed),
            "liver panel padded past 2 MiB",
        ),
        message(
            p[1],
            "UNSUPPORTED_FHIR_VERSION",
            dump(_stu3_study(seed, p[1], home(p[1]), base)),
            "STU3 ImagingStudy",
            content_type=STU3_CONTENT_TYPE,
        ),
        message(
            wrong,
            "INVALID_PATIENT_IDENTIFIER",
            render(lab(wrong, "renal", "INVALID_PATIENT_IDENTIFIER"), seed, mrn=False),
            "renal panel, ID number with a wrong check digit",
        ),
    ]


def _wrong_check_digit(person: Person) -> Person:
    # A typo in the last character: the shape is right, the checksum is not.
    right = person.national_id[-1]
    wrong = "0" if right != "0" else "1"
    return dataclasses.replace(person, national_id=person.national_id[:17] + wrong)


def _deeply_nested() -> bytes:
    head = b'{"resourceType":"Bundle","type":"collection","x":'
    return head + b"[" * NESTING + b"]" * NESTING + b"}"


def _oversized(version: Version, seed: int) -> bytes:
    body = json.loads(render(version, seed))
    patient = body["entry"][0]["resource"]
    filler = "检验结果附注。" * (TOO_LARGE_BYTES // len("检验结果附注。".encode()) + 1)
    patient["text"] = {
        "status": "generated",
        "div": f'<div xmlns="http://www.w3.org/1999/xhtml"><p>{filler}</p></div>',
    }
    return dump(body)


def _medication(seed: int) -> dict[str, object]:
    return {
        "resourceType": "Medication",
        "id": det_uuid(seed, "medication"),
        "code": {
            "coding": [
                {"system": "http://www.whocc.no/atc", "code": "C10AA05", "display": "atorvastatin"}
            ],
            "text": "阿托伐他汀钙片",
        },
        "status": "active",
    }


def _stu3_study(seed: int, person: Person, site: Site, base: datetime) -> dict[str, object]:
    """An STU3 ImagingStudy: uid and sopClass are strings, `patient` instead of `subject`."""
    return {
        "resourceType": "ImagingStudy",
        "id": det_uuid(seed, "stu3-study"),
        "uid": "urn:oid:" + dicom_uid(seed, "stu3-study"),
        "accession": {"system": f"urn:mrb:hospital:{site.id}:accession", "value": "XR0000001"},
        "availability": "ONLINE",
        "modalityList": [{"system": DCM, "code": "CT"}],
        "patient": {"reference": f"Patient/{det_uuid(seed, 'patient', person.index, site.id)}"},
        "started": ts(base),
        "numberOfSeries": 1,
        "numberOfInstances": 2,
        "series": [
            {
                "uid": "urn:oid:" + dicom_uid(seed, "stu3-series"),
                "number": 1,
                "modality": {"system": DCM, "code": "CT"},
                "numberOfInstances": 2,
                "bodySite": {"system": SNOMED, "code": "69536005", "display": "Head"},
                "instance": [
                    {
                        "uid": "urn:oid:" + dicom_uid(seed, "stu3-instance", n),
                        "number": n,
                        "sopClass": "urn:oid:1.2.840.10008.5.1.4.1.1.2",
                    }
                    for n in (1, 2)
                ],
            }
        ],
    }
