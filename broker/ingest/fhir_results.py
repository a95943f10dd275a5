"""Turn a validated FHIR message into results indexed by patient and item.

Element paths follow FHIR R4: DiagnosticReport.result -> Observation,
DiagnosticReport.imagingStudy -> ImagingStudy, Observation.hasMember for panels,
ImagingStudy.series.bodySite/laterality for imaging items.
"""

from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import Iterable
from dataclasses import replace
from datetime import UTC, date, datetime, tzinfo
from typing import Any, cast

import orjson

from broker.domain.demographics import Demographics, of_fhir_patient
from broker.domain.identifier_systems import IdentifierRegistry
from broker.domain.identifiers import (
    IdentifierScope,
    InvalidIdentifier,
    PatientIdentifier,
    patient_resource_key,
)
from broker.domain.rejections import RejectCode, Rejected
from broker.domain.results import (
    Coding,
    ExtractedResult,
    ParsedMessage,
    PatientRef,
    ResultItem,
    ResultKind,
)
from broker.domain.versions import HASH_MARK, VersionKey
from broker.ingest.fhir_bundle import BundleIndex, Resource
from broker.ingest.fhir_time import FhirTimeError, parse_fhir_datetime
from broker.ingest.fhir_validation import IN_SCOPE
from broker.ingest.imaging_endpoints import images_link, study_endpoints, study_uid
from broker.observability import NOT_LINKED
from broker.reference.identifier_systems import shipped_identifier_registry
from mrb_wire.fhir import (
    CONTRAST_URL,
    DICOM_UID_SYSTEM,
    PROTOCOL_URL,
    RECOGNITION_MARK_URL,
    REJECT_REASON_URL,
)

V2_0493 = "http://terminology.hl7.org/CodeSystem/v2-0493"
# Specimen conditions (HL7 table 0493) that make a result unusable: haemolysed, clotted,
# contaminated, autolysed, not received. Storage conditions (COOL, FROZ, ROOM) do not.
UNUSABLE_CONDITIONS = frozenset({"HEM", "CLOT", "CON", "AUT", "SNR"})
_HAEMOLYSIS_WORDS = ("溶血", "HEMOLY", "HAEMOLY")
ANIMAL_URL = "http://hl7.org/fhir/StructureDefinition/patient-animal"
_UNSET = object()  # not worked out yet
_IMAGING_CATEGORIES = frozenset({"RAD", "CT", "MR", "US", "XRC", "NMR", "NMS", "RUS", "VUS", "OUS"})


class _Times:
    """The hospital's zone and the message's timestamps parsed so far: a message repeats
    them (a report's members share its effective time, lastUpdated recurs), about half of
    its parses were of a string parsed before."""

    def __init__(self, zone: tzinfo) -> None:
        self.zone = zone
        self.parsed: dict[str, tuple[datetime | None, bool]] = {}


class _Clock:
    """Collects whether any timestamp of a result needed the hospital's zone."""

    def __init__(self, times: _Times) -> None:
        self._times = times
        self.assumed = False

    def at(self, value: object, where: str) -> datetime | None:
        known = self._times.parsed.get(value) if isinstance(value, str) else None
        if known is None:
            try:
                known = parse_fhir_datetime(value, self._times.zone)
            except FhirTimeError as exc:
                raise Rejected(RejectCode.INVALID_FHIR, f"{where}: {exc}") from None
            if isinstance(value, str):
                self._times.parsed[value] = known
        parsed, assumed = known
        self.assumed |= assumed
        return parsed


def extract_results(
    index: BundleIndex,
    *,
    hospital: str,
    zone: tzinfo,
    registry: IdentifierRegistry | None = None,
) -> ParsedMessage:
    """Return every result in the message, or raise Rejected for the whole message."""
    registry = registry or shipped_identifier_registry()
    reports = index.of_type("DiagnosticReport")
    studies = index.of_type("ImagingStudy")
    observations = index.of_type("Observation")
    times = _Times(zone)

    study_reports: dict[int, Resource] = {}
    for report in reports:
        for ref in report.get("imagingStudy") or []:
            study = index.resolve(_ref(ref))
            if study is not None and study.get("resourceType") == "ImagingStudy":
                study_reports[id(study)] = report

    claimed: set[int] = set()
    for holder in reports + observations:
        for ref in (holder.get("result") or []) + (holder.get("hasMember") or []):
            target = index.resolve(_ref(ref))
            if target is not None:
                claimed.add(id(target))

    results: list[ExtractedResult] = []
    for study in studies:
        results.append(
            _imaging(study, study_reports.get(id(study)), index, hospital, times, registry)
        )
    attached = {id(r) for r in study_reports.values()}
    for report in reports:
        if id(report) not in attached:
            results.append(_report(report, index, hospital, times, registry))
    for obs in observations:
        if id(obs) not in claimed:
            results.append(_lone_observation(obs, index, hospital, times, registry))

    linked = {id(p) for p in _subjects(index)}
    # A Patient on its own links its identifiers to its id for later references.
    patients = tuple(
        ref
        for p in index.of_type("Patient")
        if id(p) not in linked
        and (ref := patient_ref(p, hospital, registry, required=False)).identifiers
    )
    if not results and not patients:
        present = sorted({str(e.resource.get("resourceType")) for e in index.entries})
        raise Rejected(
            RejectCode.NO_RESULT,
            "message holds no DiagnosticReport, Observation or ImagingStudy "
            f"(found: {', '.join(present) or 'nothing'})",
        )
    ignored = sorted({str(e.resource.get("resourceType")) for e in index.entries} - IN_SCOPE)
    warnings = tuple(w for r in results for w in r.warnings)
    return ParsedMessage(tuple(results), patients, tuple(ignored), warnings=warnings)


def _subjects(index: BundleIndex) -> list[Resource]:
    """Patients that results in the message point at (linked through those results)."""
    return [
        p
        for holder in index.of_type("DiagnosticReport")
        + index.of_type("Observation")
        + index.of_type("ImagingStudy")
        if isinstance(holder.get("subject"), dict)
        and (p := index.resolve(holder["subject"].get("reference"))) is not None
    ]


def _report(
    report: Resource, index: BundleIndex, hospital: str, times: _Times, registry: IdentifierRegistry
) -> ExtractedResult:
    clock = _Clock(times)
    members = _members(report, index)
    where = _where(report)
    categories = {c.code for c in _codings_of_list(report.get("category"))}
    kind = (
        ResultKind.REPORT
        if categories & _IMAGING_CATEGORIES or report.get("imagingStudy")
        else ResultKind.LAB
    )
    parent = _Parent(report, index)
    observed = [_observation_item(o, clock, index, parent) for o in members]
    head = _report_item(report, clock, where, parent.mark())
    if kind is ResultKind.LAB and not any(o.no_value is None for o in observed):
        # A lab report none of whose observations has a value carries nothing to recognise.
        head = replace(head, no_value="report-empty")
    return _result(kind, report, members, [head, *observed], clock, index, hospital, registry)


def _lone_observation(
    obs: Resource, index: BundleIndex, hospital: str, times: _Times, registry: IdentifierRegistry
) -> ExtractedResult:
    clock = _Clock(times)
    members = _members(obs, index)
    parent = _Parent(obs, index)
    observed = [_observation_item(m, clock, index, parent) for m in members]
    head = _observation_item(obs, clock, index, None)
    if observed and head.no_value == "no-value":  # a grouping: its members carry the values
        if any(o.no_value is None for o in observed):
            head = replace(head, no_value=None)
        else:
            head = replace(head, no_value="report-empty")
    items = [head, *observed]
    return _result(ResultKind.LAB, obs, members, items, clock, index, hospital, registry)


def _imaging(
    study: Resource,
    report: Resource | None,
    index: BundleIndex,
    hospital: str,
    times: _Times,
    registry: IdentifierRegistry,
) -> ExtractedResult:
    clock = _Clock(times)
    where = _where(study)
    started = clock.at(study.get("started"), f"{where}.started")
    mark = _extension(study, RECOGNITION_MARK_URL, "valueString")
    contrast = _extension(study, CONTRAST_URL, "valueBoolean")
    protocol = _extension(study, PROTOCOL_URL, "valueCode") or _extension(
        study, PROTOCOL_URL, "valueString"
    )
    status = str(study.get("status", "unknown"))
    # Warnings name the element, not the hospital's resource id (it may embed an accession).
    endpoints = study_endpoints(study, index, where="ImagingStudy")
    images = images_link(endpoints.endpoints, study_uid(study))
    procedure = _codings_of_list(study.get("procedureCode"))
    summary = _text_of_list(study.get("procedureCode")) or str(study.get("description") or "")
    # One item per distinct (modality, body site, laterality) among the series; a study
    # announced before its series arrive still says its modality.
    parts: list[tuple[str | None, Coding | None, Coding | None]] = []
    for series in study.get("series") or []:
        modality = _coding(series.get("modality"))
        part = (
            modality.code if modality else None,
            _coding(series.get("bodySite")),
            _first_coding(series.get("laterality")),
        )
        if part not in parts:
            parts.append(part)
    if not parts:
        modalities = [c.code for c in _codings_of_list(study.get("modality"))]
        parts = [(m, None, None) for m in modalities] or [(None, None, None)]
    items = [
        ResultItem(
            resource_type="ImagingStudy",
            resource_id=study.get("id"),
            codings=procedure,
            status=status,
            effective=started,
            summary=summary or _imaging_summary(*part),
            modality=part[0],
            body_site=part[1],
            laterality=part[2],
            contrast=contrast if isinstance(contrast, bool) else None,
            recognition_mark=mark,
            protocol=protocol if isinstance(protocol, str) and protocol else None,
            images=images,
        )
        for part in parts
    ]
    members: list[Resource] = []
    if report is not None:
        members = [report]
        rep = _report_item(
            report, clock, _where(report), _extension(report, RECOGNITION_MARK_URL, "valueString")
        )
        items.append(
            ResultItem(
                resource_type="DiagnosticReport",
                resource_id=rep.resource_id,
                codings=rep.codings,
                status=rep.status,
                effective=started or rep.effective,
                summary=rep.summary,
                modality=items[0].modality,
                body_site=items[0].body_site,
                laterality=items[0].laterality,
                contrast=contrast,
                recognition_mark=rep.recognition_mark or mark,
                images=images,
            )
        )
    extracted = _result(
        ResultKind.IMAGING,
        study,
        members,
        items,
        clock,
        index,
        hospital,
        registry,
        effective=started,
        issued=clock.at(report.get("issued"), _where(report)) if report else None,
    )
    return replace(extracted, warnings=endpoints.warnings) if endpoints.warnings else extracted


def content_hash(content: list[Resource]) -> str:
    """What tells a replay from a new version: a SHA-256 of the result's resources as JSON
    with sorted keys, marked as this form (broker.domain.versions.HASH_MARK). orjson writes
    it in a tenth of the standard library's time; an integer past 64 bits, which orjson
    does not write, falls back to the standard library (deterministic either way)."""
    try:
        canonical = orjson.dumps(content, option=orjson.OPT_SORT_KEYS)
    except TypeError:  # orjson.JSONEncodeError
        canonical = json.dumps(content, sort_keys=True, separators=(",", ":")).encode()
    return HASH_MARK + hashlib.sha256(canonical).hexdigest()[: 64 - len(HASH_MARK)]


def legacy_content_hash(content: list[Resource]) -> str:
    """The hash versions were stored under before `content_hash` (ASCII-escaped JSON)."""
    canonical = json.dumps(content, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def _result(
    kind: ResultKind,
    main: Resource,
    members: list[Resource],
    items: list[ResultItem],
    clock: _Clock,
    index: BundleIndex,
    hospital: str,
    registry: IdentifierRegistry,
    *,
    effective: datetime | None = None,
    issued: datetime | None = None,
) -> ExtractedResult:
    where = _where(main)
    if main["resourceType"] != "ImagingStudy":  # reports and observations say it themselves
        effective = _effective(main, clock, where)
        issued = clock.at(main.get("issued"), where)
    meta = main.get("meta") or {}
    last_updated = clock.at(meta.get("lastUpdated"), f"{where}.meta.lastUpdated")
    version_id = meta.get("versionId") if isinstance(meta.get("versionId"), str) else None
    content = [main, *members]
    return ExtractedResult(
        kind=kind,
        resource_type=str(main["resourceType"]),
        business_id=_business_id(main),
        status=str(main.get("status", "unknown")),
        effective=effective,
        issued=issued,
        version=VersionKey.of(last_updated or issued, version_id),
        version_label=version_id,
        content_hash=content_hash(content),
        legacy_hash=functools.partial(legacy_content_hash, content),
        patient=_patient(main, index, hospital, registry),
        summary=items[0].summary if items else "",
        items=tuple(items),
        timezone_assumed=clock.assumed,
    )


def _patient(
    main: Resource, index: BundleIndex, hospital: str, registry: IdentifierRegistry
) -> PatientRef:
    where = _where(main)
    subject = main.get("subject")
    if not isinstance(subject, dict):
        raise Rejected(RejectCode.PATIENT_NOT_IDENTIFIED, f"{where} has no subject")
    ref = subject.get("reference")
    patient = index.resolve(ref)
    if patient is not None:
        if patient.get("resourceType") != "Patient":
            raise Rejected(
                RejectCode.PATIENT_NOT_IDENTIFIED,
                f"{where}.subject is a {patient.get('resourceType')}, not a Patient",
            )
        found = patient_ref(patient, hospital, registry, required=False)
        identifiers, key, born = found.identifiers, found.resource_key, found.birth_date
        demographics = found.demographics
    else:
        identifiers, key, born = (), _reference_key(ref, hospital), None
        demographics = None
    if isinstance(subject.get("identifier"), dict):
        extra = _identifiers([subject["identifier"]], hospital, registry, where)
        identifiers = identifiers + tuple(i for i in extra if i not in identifiers)
    if identifiers or key is not None:
        return PatientRef(identifiers, key, born, demographics)
    raise Rejected(
        RejectCode.PATIENT_NOT_IDENTIFIED,
        f"{where}.subject {ref!r} names no identifier: include the Patient with its "
        "identifiers in the Bundle, or send subject.identifier",
    )


def patient_ref(
    patient: Resource, hospital: str, registry: IdentifierRegistry, *, required: bool = True
) -> PatientRef:
    """The identifiers of a Patient resource; with `required`, refuse one with none."""
    where = _where(patient)
    if _extension(patient, ANIMAL_URL, "extension") is not None:
        raise Rejected(RejectCode.NON_HUMAN_PATIENT, f"{where} is an animal (patient-animal)")
    identifiers = _identifiers(
        list(patient.get("identifier") or []), hospital, registry, where, patient
    )
    rid = patient.get("id")
    key = patient_resource_key(rid, hospital=hospital) if isinstance(rid, str) and rid else None
    if required and not identifiers:
        raise Rejected(RejectCode.PATIENT_NOT_IDENTIFIED, f"{where} has no usable identifier")
    born = _birth_date(patient.get("birthDate"))
    return PatientRef(identifiers, key, born, _demographics(patient, born, identifiers))


def _demographics(
    patient: Resource, born: date | None, identifiers: tuple[PatientIdentifier, ...]
) -> Demographics | None:
    national = tuple(
        (i.system, i.value) for i in identifiers if i.scope is IdentifierScope.NATIONAL
    )
    return of_fhir_patient(patient, born, national)


def _birth_date(value: object) -> date | None:
    """A full birth date (YYYY-MM-DD); a year or year-month gives no age in days."""
    if not isinstance(value, str) or len(value) != 10:
        return None
    try:
        return date.fromisoformat(value)
    except ValueError:
        return None


def _identifiers(
    raw: list[Any],
    hospital: str,
    registry: IdentifierRegistry,
    where: str,
    patient: Resource | None = None,
) -> tuple[PatientIdentifier, ...]:
    """The message's identifiers as they link: a national number links across hospitals
    only when its system is trusted and the Patient's birth date and sex do not contradict
    it (a newborn under a parent's number stays with this hospital's record)."""
    born = _birth_date(patient.get("birthDate")) if patient is not None else None
    sex = patient.get("gender") if patient is not None else None
    today = datetime.now(UTC).date()
    found: list[PatientIdentifier] = []
    invalid: list[str] = []
    for ident in raw:
        if not isinstance(ident, dict):
            continue
        try:
            norm = registry.normalise(ident.get("system"), ident.get("value"), hospital=hospital)
        except InvalidIdentifier as exc:
            invalid.append(f"{ident.get('system')}: {exc}")
            continue
        if norm is None:
            continue
        agrees = registry.consistency(
            norm, birth_date=born, sex=sex if isinstance(sex, str) else None, today=today
        )
        linked = registry.scoped(norm, hospital=hospital, consistency=agrees)
        if linked is not norm:
            NOT_LINKED.labels(agrees.reason.value).inc()
        if linked not in found:
            found.append(linked)
    if invalid and not found:
        raise Rejected(RejectCode.INVALID_PATIENT_IDENTIFIER, f"{where}: {'; '.join(invalid)}")
    return tuple(found)


def _reference_key(ref: object, hospital: str) -> PatientIdentifier | None:
    """A Patient reference to outside the message: usable only if the hospital sent it."""
    if not isinstance(ref, str) or ref.startswith(("urn:uuid:", "urn:oid:", "#")):
        return None
    ref = ref.split("/_history/")[0]
    parts = ref.split("/")
    if len(parts) == 2 and parts[0] == "Patient" and parts[1]:
        return patient_resource_key(parts[1], hospital=hospital)
    if "://" in ref and len(parts) >= 2 and parts[-2] == "Patient":
        return patient_resource_key(ref, hospital=hospital)
    return None


def _business_id(main: Resource) -> str:
    rtype = main["resourceType"]
    idents = [i for i in main.get("identifier") or [] if isinstance(i, dict) and i.get("value")]
    if rtype == "ImagingStudy":
        idents.sort(key=lambda i: i.get("system") != DICOM_UID_SYSTEM)
    if idents:
        return f"{rtype}|{idents[0].get('system') or ''}|{idents[0]['value']}"
    if isinstance(main.get("id"), str) and main["id"]:
        return f"{rtype}|id|{main['id']}"
    raise Rejected(
        RejectCode.RESULT_NOT_IDENTIFIED,
        f"{rtype} has neither identifier nor id, so later corrections could not find it",
    )


def _members(holder: Resource, index: BundleIndex) -> list[Resource]:
    """Observations under a report or panel, depth first, each once."""
    out: list[Resource] = []
    seen = {id(holder)}
    stack = list(reversed((holder.get("result") or []) + (holder.get("hasMember") or [])))
    while stack:
        target = index.resolve(_ref(stack.pop()))
        if target is None or id(target) in seen or target.get("resourceType") != "Observation":
            continue
        seen.add(id(target))
        out.append(target)
        stack.extend(reversed(target.get("hasMember") or []))
    return out


def _report_item(report: Resource, clock: _Clock, where: str, mark: Any) -> ResultItem:
    code = report.get("code")
    codings = _codings(code)
    return ResultItem(
        resource_type="DiagnosticReport",
        resource_id=report.get("id"),
        codings=codings,
        status=str(report.get("status", "unknown")),
        effective=_effective(report, clock, where),
        summary=_text(code, codings) or "report",
        recognition_mark=mark,
    )


class _Parent:
    """The report or panel observations sit under: what each member would otherwise look
    up in it again (its recognition mark, its specimens), worked out once, when asked
    (plain attributes: functools.cached_property takes a lock on each first use)."""

    __slots__ = ("_index", "_mark", "_specimen_problem", "resource")

    def __init__(self, resource: Resource, index: BundleIndex) -> None:
        self.resource = resource
        self._index = index
        self._mark: Any = _UNSET
        self._specimen_problem: str | object | None = _UNSET

    def mark(self) -> Any:
        if self._mark is _UNSET:
            self._mark = _extension(self.resource, RECOGNITION_MARK_URL, "valueString")
        return self._mark

    def specimen_problem(self) -> str | None:
        if self._specimen_problem is _UNSET:
            refs = _list(self.resource.get("specimen"))
            self._specimen_problem = _specimens_problem(self._index, refs)
        return cast("str | None", self._specimen_problem)


def _observation_item(
    obs: Resource, clock: _Clock, index: BundleIndex, parent: _Parent | None
) -> ResultItem:
    where = _where(obs)
    mark = _extension(obs, RECOGNITION_MARK_URL, "valueString")
    if mark is None and parent is not None:
        mark = parent.mark()
    code = obs.get("code")
    codings = _codings(code)
    name = _text(code, codings) or "observation"
    value, unit = _value(obs)
    return ResultItem(
        resource_type="Observation",
        resource_id=obs.get("id"),
        codings=codings,
        status=str(obs.get("status", "unknown")),
        effective=_effective(obs, clock, where),
        summary=f"{name}: {_value_text(obs)}",
        recognition_mark=mark,
        value=value,
        unit=unit,
        flags=_flags(obs),
        no_value=_content_problem(obs, index, parent),
    )


def _content_problem(obs: Resource, index: BundleIndex, parent: _Parent | None) -> str | None:
    """Why an observation has no usable content (see recognition.content_problem), or None."""
    if isinstance(dar := obs.get("dataAbsentReason"), dict):
        code = next((c.code for c in _codings(dar)), None) or _text(dar) or "unknown"
        return f"data-absent:{code}"
    # An observation naming no specimen of its own is judged by its parent's.
    if refs := _list(obs.get("specimen")):
        if problem := _specimens_problem(index, refs):
            return problem
    elif parent is not None and (problem := parent.specimen_problem()):
        return problem
    for concept in _list(obs.get("interpretation")):
        if problem := _condition_problem(concept):
            return problem
    has_value = _has_value(obs) or any(
        isinstance(c, dict) and _has_value(c) for c in _list(obs.get("component"))
    )
    return None if has_value else "no-value"


def _specimens_problem(index: BundleIndex, refs: list[Any]) -> str | None:
    """The first problem among the referenced specimens found in the message."""
    for ref in refs:
        specimen = index.resolve(_ref(ref))
        if specimen is not None and (problem := _specimen_problem(specimen)):
            return problem
    return None


def _has_value(element: Resource) -> bool:
    """A value[x] that says something: a Quantity with its number, a concept with a code
    or text, non-empty text; an empty valueQuantity is no value."""
    for key, value in element.items():
        if not key.startswith("value"):
            continue
        if key == "valueQuantity":
            if isinstance(value, dict) and value.get("value") is not None:
                return True
        elif key == "valueCodeableConcept":
            if isinstance(value, dict) and (_codings(value) or value.get("text")):
                return True
        elif key == "valueString":
            if isinstance(value, str) and value.strip():
                return True
        elif value is not None and value != {} and value != []:
            return True
    return False


def _specimen_problem(specimen: Resource) -> str | None:
    if specimen.get("resourceType") != "Specimen":
        return None
    reject = _extension(specimen, REJECT_REASON_URL, "valueCodeableConcept")
    if reject is not None or specimen.get("status") == "unsatisfactory":
        code = next((c.code for c in _codings(reject)), None) or _text(reject) or "unsatisfactory"
        return f"specimen-rejected:{code}"
    for concept in _list(specimen.get("condition")):
        if problem := _condition_problem(concept):
            return problem
    return None


def _condition_problem(concept: object) -> str | None:
    """HEM, CLOT … from v2-0493 codings, or haemolysis named in text (溶血, hemolyzed)."""
    codings = _codings(concept)
    for c in codings:
        if c.system == V2_0493 and c.code.upper() in UNUSABLE_CONDITIONS:
            return f"specimen-condition:{c.code.upper()}"
    words = " ".join(
        str(x)
        for x in (
            concept.get("text") if isinstance(concept, dict) else None,
            *(c.display for c in codings),
        )
        if x
    ).upper()
    if any(w in words for w in _HAEMOLYSIS_WORDS):
        return "specimen-condition:HEM"
    return None


def _flags(obs: Resource) -> tuple[str, ...]:
    out: list[str] = []
    for concept in _list(obs.get("interpretation")):
        for c in _codings(concept):
            if c.code not in out and len(c.code) <= 8:
                out.append(c.code)
    return tuple(out)


def _value(obs: Resource) -> tuple[str | None, str | None]:
    """The value as shown to a doctor and its unit (None when there is none)."""
    if isinstance(q := obs.get("valueQuantity"), dict):
        if q.get("value") is None:
            return None, None
        unit = q.get("unit") or q.get("code")
        return f"{q.get('comparator', '')}{q.get('value')}", str(unit) if unit else None
    if isinstance(cc := obs.get("valueCodeableConcept"), dict):
        return _text(cc), None
    for key in ("valueString", "valueBoolean", "valueInteger", "valueDateTime", "valueTime"):
        if key in obs:
            return str(obs[key]), None
    if isinstance(r := obs.get("valueRange"), dict):
        low, high = (r.get(k) or {} for k in ("low", "high"))
        unit = low.get("unit") or high.get("unit")
        return f"{low.get('value', '')}-{high.get('value', '')}", unit
    if obs.get("component"):
        return f"{len(obs['component'])} components", None
    return None, None


def _list(value: object) -> list[Any]:
    """A repeating element as a list; a single one (Observation.specimen) as one item."""
    if isinstance(value, list):
        return value
    return [value] if isinstance(value, dict) else []


def _effective(res: Resource, clock: _Clock, where: str) -> datetime | None:
    if "effectiveDateTime" in res:
        return clock.at(res["effectiveDateTime"], f"{where}.effectiveDateTime")
    period = res.get("effectivePeriod")
    if isinstance(period, dict):
        return clock.at(period.get("start") or period.get("end"), f"{where}.effectivePeriod")
    if "effectiveInstant" in res:
        return clock.at(res["effectiveInstant"], f"{where}.effectiveInstant")
    return None


def _value_text(obs: Resource) -> str:
    if isinstance(q := obs.get("valueQuantity"), dict):
        unit = q.get("unit") or q.get("code") or ""
        return f"{q.get('comparator', '')}{q.get('value')} {unit}".strip()
    if isinstance(cc := obs.get("valueCodeableConcept"), dict):
        return _text(cc) or "coded"
    for key in ("valueString", "valueBoolean", "valueInteger", "valueDateTime"):
        if key in obs:
            return str(obs[key])
    if obs.get("component"):
        return f"{len(obs['component'])} components"
    if isinstance(dar := obs.get("dataAbsentReason"), dict):
        return f"no value ({_text(dar) or 'absent'})"
    return "no value"


def _codings(concept: object) -> tuple[Coding, ...]:
    if not isinstance(concept, dict):
        return ()
    out = []
    for c in concept.get("coding") or []:
        if isinstance(c, dict) and isinstance(c.get("code"), str) and c["code"]:
            out.append(Coding(str(c.get("system") or ""), c["code"], c.get("display")))
    return tuple(out)


def _codings_of_list(concepts: object) -> tuple[Coding, ...]:
    if isinstance(concepts, list):
        return tuple(c for concept in concepts for c in _codings(concept))
    return ()


def _coding(value: object) -> Coding | None:
    if isinstance(value, dict) and isinstance(value.get("code"), str) and value["code"]:
        return Coding(str(value.get("system") or ""), value["code"], value.get("display"))
    return None


def _first_coding(concept: object) -> Coding | None:
    """ImagingStudy.series.laterality is a Coding in R4 but a CodeableConcept in R5."""
    if isinstance(concept, dict) and "coding" in concept:
        codings = _codings(concept)
        return codings[0] if codings else None
    return _coding(concept)


def _text(concept: object, codings: tuple[Coding, ...] | None = None) -> str | None:
    """The concept's text, else a coding's display, else its first system|code;
    `codings`: the concept's, when the caller has them already."""
    if not isinstance(concept, dict):
        return None
    if isinstance(concept.get("text"), str) and concept["text"]:
        return str(concept["text"])
    if codings is None:
        codings = _codings(concept)
    for c in codings:
        if c.display:
            return c.display
    return f"{codings[0].system}|{codings[0].code}" if codings else None


def _text_of_list(concepts: object) -> str | None:
    if isinstance(concepts, list):
        return next((t for t in (_text(c) for c in concepts) if t), None)
    return None


def _imaging_summary(modality: str | None, site: Coding | None, side: Coding | None) -> str:
    parts: Iterable[str | None] = (
        modality,
        site.display or site.code if site else None,
        side.display if side else None,
    )
    return " ".join(p for p in parts if p) or "study"


def _extension(res: Resource, url: str, value_key: str) -> Any:
    for ext in res.get("extension") or []:
        if isinstance(ext, dict) and ext.get("url") == url:
            return ext.get(value_key)
    return None


def _ref(value: object) -> object:
    return value.get("reference") if isinstance(value, dict) else None


def _where(res: Resource) -> str:
    return f"{res.get('resourceType')}/{res.get('id') or '?'}"
