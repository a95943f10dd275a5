"""Small FHIR R4 messages built in code, for tests that need a precise shape."""

from __future__ import annotations

import hashlib
import json
import uuid
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from adapters.common.envelope import OutgoingMessage
from adapters.common.receipts import RECEIPT_KEYS_FILE, ReceiptTrust
from adapters.common.signing import public_key_b64, sign
from broker.domain.identifiers import resident_id_check_digit
from broker.ingest.service import InboundMessage
from broker.security.receipt_signing import load_receipt_signer, published_entries

NATIONAL = "urn:oid:2.16.156.10011.1.3"
PATIENT_A = "11010519491231002X"  # a woman born 1949-12-31 (GB 11643: digits 7-14, 17)
PATIENT_A_BORN = "1949-12-31"
PATIENT_B = "440524188001010014"


def resident_id(born: str, *, female: bool = True, seq: int = 0) -> str:
    """A valid synthetic resident ID for someone born on `born` (YYYY-MM-DD): what a
    record with that birth date and sex may carry and still link across hospitals."""
    first17 = f"110105{born.replace('-', '')}{seq % 100:02d}{(seq % 5) * 2 + (0 if female else 1)}"
    return first17 + resident_id_check_digit(first17)


LOINC = "http://loinc.org"
SNOMED = "http://snomed.info/sct"


def patient(
    national_id: str | None = PATIENT_A,
    mrn: str | None = "MRN-1",
    pid: str = "p1",
    mrn_system: str = "urn:oid:2.16.156.10011.0.1.mrn",
) -> dict[str, Any]:
    identifiers = []
    if national_id:
        identifiers.append({"system": NATIONAL, "value": national_id})
    if mrn:
        identifiers.append({"system": mrn_system, "value": mrn})
    return {
        "resourceType": "Patient",
        "id": pid,
        "identifier": identifiers,
        "name": [{"text": "张三"}],
    }


def observation(
    oid: str,
    code: str,
    value: float,
    unit: str = "g/dL",
    *,
    status: str = "final",
    effective: str = "2026-05-18T08:30:00+08:00",
    subject: dict[str, Any] | None = None,
) -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "id": oid,
        "status": status,
        "code": {"coding": [{"system": LOINC, "code": code, "display": f"LOINC {code}"}]},
        "subject": subject or {"reference": "urn:uuid:patient"},
        "effectiveDateTime": effective,
        "valueQuantity": {"value": value, "unit": unit},
    }


def lab_bundle(
    *,
    accession: str = "ACC-1",
    status: str = "final",
    last_updated: str | None = "2026-05-18T12:00:00+08:00",
    version: str | None = "1",
    hb: float = 13.2,
    pat: dict[str, Any] | None = None,
    effective: str = "2026-05-18T08:30:00+08:00",
) -> bytes:
    meta: dict[str, Any] = {}
    if last_updated:
        meta["lastUpdated"] = last_updated
    if version:
        meta["versionId"] = version
    report = {
        "resourceType": "DiagnosticReport",
        "id": f"dr-{accession}",
        "meta": meta,
        "identifier": [{"system": "urn:lab:H001", "value": accession}],
        "status": status,
        "category": [
            {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0074", "code": "LAB"}]}
        ],
        "code": {"coding": [{"system": LOINC, "code": "58410-2", "display": "CBC panel"}]},
        "subject": {"reference": "urn:uuid:patient"},
        "effectiveDateTime": effective,
        "issued": "2026-05-18T11:00:00+08:00",
        "result": [{"reference": "urn:uuid:hb"}, {"reference": "urn:uuid:plt"}],
    }
    return bundle(
        [
            ("urn:uuid:patient", pat or patient()),
            ("urn:uuid:dr", report),
            ("urn:uuid:hb", observation("hb", "718-7", hb, status=status, effective=effective)),
            ("urn:uuid:plt", observation("plt", "777-3", 250, "10*9/L", effective=effective)),
        ]
    )


def imaging_bundle(
    *,
    uid: str = "1.2.3.4",
    modality: str = "CT",
    site: str = "51185008",
    laterality: str | None = None,
    started: str = "2026-05-10T09:00:00+08:00",
    status: str = "available",
    pat: dict[str, Any] | None = None,
    contrast: bool | None = False,
) -> bytes:
    series: dict[str, Any] = {
        "uid": uid + ".1",
        "modality": {"system": "http://dicom.nema.org/resources/ontology/DCM", "code": modality},
        "bodySite": {"system": SNOMED, "code": site, "display": "Thorax"},
        "numberOfInstances": 120,
    }
    if laterality:
        series["laterality"] = {"system": SNOMED, "code": laterality}
    study = {
        "resourceType": "ImagingStudy",
        "id": "study1",
        "status": status,
        "identifier": [{"system": "urn:dicom:uid", "value": f"urn:oid:{uid}"}],
        "subject": {"reference": "urn:uuid:patient"},
        "started": started,
        "modality": [series["modality"]],
        "series": [series],
        "meta": {"lastUpdated": "2026-05-10T10:00:00+08:00"},
    }
    if contrast is not None:  # the protocol, as the DICOM adapter always states it
        study["extension"] = [{"url": "urn:mrb:fhir:extension:contrast", "valueBoolean": contrast}]
    report = {
        "resourceType": "DiagnosticReport",
        "id": "rad1",
        "status": "final",
        "category": [
            {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0074", "code": "RAD"}]}
        ],
        "code": {"coding": [{"system": LOINC, "code": "24627-2", "display": "CT Chest"}]},
        "subject": {"reference": "urn:uuid:patient"},
        "imagingStudy": [{"reference": "urn:uuid:study"}],
        "conclusion": "normal",
    }
    return bundle(
        [
            ("urn:uuid:patient", pat or patient()),
            ("urn:uuid:study", study),
            ("urn:uuid:report", report),
        ]
    )


def bundle(entries: list[tuple[str, dict[str, Any]]], btype: str = "collection") -> bytes:
    doc = {
        "resourceType": "Bundle",
        "type": btype,
        "entry": [{"fullUrl": u, "resource": r} for u, r in entries],
    }
    return json.dumps(doc, ensure_ascii=False).encode()


# -- signing: each test hospital has a fixed Ed25519 key ---------------------------------


def private_key(hospital: str) -> Ed25519PrivateKey:
    return Ed25519PrivateKey.from_private_bytes(hashlib.sha256(hospital.encode()).digest())


def key_id(hospital: str) -> str:
    return f"{hospital}-test"


def public_b64(hospital: str) -> str:
    return public_key_b64(private_key(hospital))


def outgoing(value: bytes, hospital: str = "H001", key: bytes = b"k1") -> OutgoingMessage:
    """A message as a hospital's adapter sends it: signed with that hospital's test key."""
    return OutgoingMessage(hospital, value, key).signed(key_id(hospital), private_key(hospital))


def inbound(
    value: bytes, hospital: str = "H001", message_id: str | None = None, signer: str | None = None
) -> InboundMessage:
    """A consumed message with the headers an adapter sets, signed by `signer` (or hospital)."""
    mid = message_id or str(uuid.uuid4())
    who = signer or hospital
    return InboundMessage(
        value,
        {
            "mrb-hospital": hospital.encode(),
            "mrb-message-id": mid.encode(),
            "mrb-key-id": key_id(who).encode(),
            "mrb-signature": sign(private_key(who), hospital, mid, value).encode(),
        },
    )


# -- receipts: the broker signs them, adapters trust its published key -------------------


def receipt_trust(keys_dir: Path) -> ReceiptTrust:
    """What an adapter sharing the broker's data dir trusts (the embedded set-up): the
    receipt key the broker's workers sign with there (created now if no worker ran yet)."""
    load_receipt_signer(keys_dir, create=True)
    return ReceiptTrust.configured(file=keys_dir / RECEIPT_KEYS_FILE)


def receipt_public_keys(keys_dir: Path) -> str:
    """MRB_RECEIPT_PUBLIC_KEYS for an adapter with its own data dir: the broker's keys."""
    load_receipt_signer(keys_dir, create=True)
    return ",".join(published_entries(keys_dir))


def business_id_of(container: Any, row: Any) -> str:
    """A stored result's business identifier, opened from its sealed copy (the column
    itself holds a keyed hash)."""
    from broker.storage.protect import Protector

    protector = Protector(container.cipher, container.pseudonyms)
    return protector.open_business_id(row.id, row.business_id_sealed)
