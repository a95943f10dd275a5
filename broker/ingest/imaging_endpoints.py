"""Where a study's images can be opened: ImagingStudy.endpoint and series.endpoint.

FHIR R4 ImagingStudy.endpoint (and series.endpoint) reference Endpoint resources whose
`connectionType` (http://terminology.hl7.org/CodeSystem/endpoint-connection-type) says
what the `address` is: `ihe-iid` a viewer (IHE Invoke Image Display), `dicom-wado-rs` a
DICOMweb base URL, `dicom-wado-uri`, `dicom-qido-rs`, ... An Endpoint may be contained in
the study (`#id`), sent in the same Bundle, or named by an absolute URL mrb cannot read.

mrb keeps an endpoint only when its address is an absolute http(s) URL without
credentials and without a patient identifier (query parameters such as PatientID=, or a
valid resident ID number anywhere in it): a link a doctor's browser follows must never
run script (javascript:, data:), point somewhere relative to mrb, or carry who the
patient is. Anything else is left out with a warning; the result itself is indexed.
Pure: ingest (broker.ingest.fhir_results) and the FHIR facade (broker.fhir.resources)
read the same payload through these same rules.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import parse_qsl, quote, urlsplit

from broker.domain.identifiers import InvalidIdentifier, validate_resident_id
from broker.ingest.fhir_bundle import BundleIndex
from mrb_wire.fhir import DICOM_UID_SYSTEM

Resource = dict[str, Any]
CONNECTION_TYPES = "http://terminology.hl7.org/CodeSystem/endpoint-connection-type"
# Connection types a doctor's browser can open, best first.
LINK_TYPES = ("ihe-iid", "dicom-wado-rs", "dicom-wado-uri")
MAX_ADDRESS = 2000
# Query parameter names (lower case, without - _ . and spaces) that name a patient.
_IDENTIFYING_PARAMS = frozenset(
    {
        "patientid",
        "patid",
        "pid",
        "patient",
        "patientname",
        "patientbirthdate",
        "birthdate",
        "dob",
        "mrn",
        "idcard",
        "idno",
        "idnumber",
        "identifier",
        "residentid",
        "sfzh",
        "ssn",
        "cardno",
        "issuerofpatientid",
        "otherpatientids",
        "name",
        "phone",
        "tel",
    }
)
_RESIDENT_ID = re.compile(r"(?<![0-9])[0-9]{17}[0-9Xx](?![0-9A-Za-z])")
_UID = re.compile(r"[0-9]+(\.[0-9]+)*")

Kind = Literal["contained", "bundled", "external"]


@dataclass(frozen=True)
class StudyEndpoint:
    """One usable endpoint of a study."""

    kind: Kind
    key: str  # "#<id>" (contained), the Bundle reference (bundled) or the URL (external)
    resource: Resource | None  # the Endpoint (None for an external reference)
    address: str  # the Endpoint's address, or the external reference's URL
    connection_type: str | None  # endpoint-connection-type code; None when external
    active: bool  # Endpoint.status active (or absent)


@dataclass(frozen=True)
class StudyEndpoints:
    endpoints: tuple[StudyEndpoint, ...]
    by_reference: dict[str, StudyEndpoint]  # every reference string kept -> its endpoint
    refused: frozenset[str]  # reference strings left out (the FHIR facade drops them)
    warnings: tuple[str, ...]  # why, naming the element, never quoting the URL


def address_problem(value: object) -> str | None:
    """Why `value` may not be kept as an endpoint address, or None when it may."""
    if not isinstance(value, str) or not value.strip():
        return "no address"
    if len(value) > MAX_ADDRESS:
        return f"the address is longer than {MAX_ADDRESS} characters"
    if value != value.strip() or any(ord(c) < 0x21 or ord(c) == 0x7F for c in value):
        return "the address holds spaces or control characters"
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 - raises ValueError for a malformed port
    except ValueError:
        return "the address is not a valid URL"
    if parts.scheme.lower() not in ("http", "https"):
        scheme = parts.scheme.lower()[:20]
        return (
            f"only http and https addresses are kept (scheme {scheme!r})"
            if scheme
            else ("the address is not absolute (only http and https URLs are kept)")
        )
    if not parts.hostname:
        return "the address names no host"
    if parts.username is not None or parts.password is not None:
        return "the address carries credentials (user:password@)"
    for name, _ in parse_qsl(parts.query, keep_blank_values=True):
        if re.sub(r"[-_.\s]", "", name).lower() in _IDENTIFYING_PARAMS:
            return "the address carries a patient identifier in its query"
    for run in _RESIDENT_ID.findall(value):
        try:
            validate_resident_id(run)
        except InvalidIdentifier:
            continue
        return "the address carries a resident ID number"
    return None


def study_endpoints(study: Resource, index: BundleIndex, *, where: str) -> StudyEndpoints:
    """The study's endpoints (its own, then its series'), each once, and what was left out."""
    contained = {
        f"#{c['id']}": c
        for c in _dicts(study.get("contained"))
        if isinstance(c.get("id"), str) and c["id"]
    }
    out: list[StudyEndpoint] = []
    seen: dict[int | str, StudyEndpoint] = {}
    by_reference: dict[str, StudyEndpoint] = {}
    refused: set[str] = set()
    warnings: list[str] = []
    for path, ref in _endpoint_refs(study):
        target = ref.get("reference")
        if not isinstance(target, str) or not target:
            warnings.append(f"{where}.{path}: no reference; left out")
            continue
        if target.startswith("#"):
            found, kind = contained.get(target), "contained"
        else:
            found, kind = index.resolve(target), "bundled"
        if found is None:
            if target.startswith("#") or "://" not in target:
                refused.add(target)
                warnings.append(
                    f"{where}.{path}: the Endpoint is neither contained nor in the message, "
                    "and the reference is no absolute URL; left out"
                )
                continue
            if target in seen:
                continue
            problem = address_problem(target)
            if problem is not None:
                refused.add(target)
                warnings.append(f"{where}.{path}: {problem}; left out")
                continue
            kept = StudyEndpoint("external", target, None, target, None, False)
            seen[target] = by_reference[target] = kept
            out.append(kept)
            continue
        if id(found) in seen:
            by_reference[target] = seen[id(found)]
            continue
        if found.get("resourceType") != "Endpoint":
            refused.add(target)
            warnings.append(f"{where}.{path}: refers to a {found.get('resourceType')}; left out")
            continue
        problem = address_problem(found.get("address"))
        if problem is not None:
            refused.add(target)
            warnings.append(f"{where}.{path}: {problem}; left out")
            continue
        status = found.get("status")
        kept = StudyEndpoint(
            "contained" if kind == "contained" else "bundled",
            target,
            found,
            str(found["address"]),
            _connection_type(found.get("connectionType")),
            status is None or status == "active",
        )
        seen[id(found)] = by_reference[target] = kept
        out.append(kept)
    return StudyEndpoints(tuple(out), by_reference, frozenset(refused), tuple(warnings))


def images_link(endpoints: tuple[StudyEndpoint, ...], study_uid: str | None) -> str | None:
    """The URL that opens the study's images in a browser, from its best endpoint:
    an IHE IID viewer (`?requestType=STUDY&studyUID=` added when the address has no query),
    else a WADO-RS base (`/studies/<uid>` added unless the address names a study), else a
    WADO-URI address as sent. External references and other connection types give none."""
    usable = [e for e in endpoints if e.active and e.connection_type in LINK_TYPES]
    if not usable:
        return None
    best = min(usable, key=lambda e: LINK_TYPES.index(str(e.connection_type)))
    address = best.address
    parts = urlsplit(address)
    if study_uid and best.connection_type == "ihe-iid" and not parts.query:
        return f"{address}?requestType=STUDY&studyUID={quote(study_uid)}"
    wado_base = "/studies/" not in parts.path and not parts.query and not parts.fragment
    if study_uid and best.connection_type == "dicom-wado-rs" and wado_base:
        return f"{address.rstrip('/')}/studies/{quote(study_uid)}"
    return address


def study_uid(study: Resource) -> str | None:
    """The Study Instance UID (identifier system urn:dicom:uid, value urn:oid:<uid>)."""
    for ident in _dicts(study.get("identifier")):
        value = ident.get("value")
        if ident.get("system") == DICOM_UID_SYSTEM and isinstance(value, str):
            uid = value.removeprefix("urn:oid:")
            if len(uid) <= 64 and _UID.fullmatch(uid):
                return uid
    return None


def _endpoint_refs(study: Resource) -> list[tuple[str, dict[str, Any]]]:
    refs = [(f"endpoint[{i}]", r) for i, r in enumerate(_dicts(study.get("endpoint")))]
    for s, series in enumerate(_dicts(study.get("series"))):
        refs += [
            (f"series[{s}].endpoint[{i}]", r) for i, r in enumerate(_dicts(series.get("endpoint")))
        ]
    return refs


def _connection_type(value: object) -> str | None:
    """R4 Endpoint.connectionType is a Coding (R5: a list of CodeableConcepts)."""
    codings: list[Any] = []
    if isinstance(value, dict):
        codings = [value, *_dicts(value.get("coding"))]
    elif isinstance(value, list):
        for concept in _dicts(value):
            codings += [concept, *_dicts(concept.get("coding"))]
    for c in codings:
        if isinstance(c.get("code"), str) and c.get("system") in (CONNECTION_TYPES, None):
            return str(c["code"])
    return None


def _dicts(value: object) -> list[dict[str, Any]]:
    return [v for v in value if isinstance(v, dict)] if isinstance(value, list) else []
