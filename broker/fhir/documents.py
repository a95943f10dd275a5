"""The FHIR documents the service answers with: Bundle, OperationOutcome, CapabilityStatement.

The CapabilityStatement is generated from the parameter table (broker.fhir.params), so
it states exactly what the code supports.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from broker.fhir.balp import BALP
from broker.fhir.params import INCLUDES, MAX_COUNT, PARAMS, READ_ONLY_TYPES, SORTS
from broker.fhir.pdq_search import SEARCH_PARAMS
from broker.fhir.resources import instant

FHIR_VERSION = "4.0.1"
FHIR_JSON = "application/fhir+json"
Resource = dict[str, Any]


@dataclass(frozen=True)
class BundleEntry:
    resource: Resource
    mode: str  # match | include | outcome
    search: Resource | None = None  # the whole entry.search when it says more than mode


def operation_outcome(
    code: str, diagnostics: str, *, severity: str = "error", more: list[str] | None = None
) -> Resource:
    """An OperationOutcome with one issue per message (R4 issue-type `code`)."""
    issues = [{"severity": severity, "code": code, "diagnostics": diagnostics}]
    issues += [{"severity": severity, "code": code, "diagnostics": m} for m in more or []]
    return {"resourceType": "OperationOutcome", "issue": issues}


def ignored_outcome(ignored: tuple[str, ...]) -> list[BundleEntry]:
    """What lenient handling left out of a search, as one warning entry (none if nothing)."""
    if not ignored:
        return []
    outcome = operation_outcome(
        "not-supported",
        ignored[0] + "; ignored",
        severity="warning",
        more=[m + "; ignored" for m in ignored[1:]],
    )
    return [BundleEntry(outcome, "outcome")]


def searchset(
    *,
    base: str,
    total: int,
    entries: list[BundleEntry],
    links: dict[str, str],
    now: datetime,
) -> Resource:
    """A searchset Bundle; `links` maps relation (self, first, previous, next, last) to URL."""
    bundle: Resource = {
        "resourceType": "Bundle",
        "id": str(uuid.uuid4()),
        "meta": {"lastUpdated": instant(now)},
        "type": "searchset",
        "total": total,
        "link": [{"relation": rel, "url": url} for rel, url in links.items()],
    }
    out = []
    for e in entries:
        item: Resource = {"resource": e.resource, "search": e.search or {"mode": e.mode}}
        if "id" in e.resource:
            item = {"fullUrl": f"{base}/{e.resource['resourceType']}/{e.resource['id']}", **item}
        out.append(item)
    if out:
        bundle["entry"] = out
    return bundle


def capability_statement(base: str, now: datetime, version: str) -> Resource:
    """What mrb's FHIR endpoint does, and nothing more."""
    resources = []
    for rtype, params in PARAMS.items():
        entry: Resource = {
            "type": rtype,
            "profile": f"http://hl7.org/fhir/StructureDefinition/{rtype}",
            "interaction": [
                {"code": "read", "documentation": _READ_DOC[rtype]},
                {"code": "search-type", "documentation": _SEARCH_DOC[rtype]},
            ],
            **_READ_ONLY_FLAGS,
            "searchParam": [
                {
                    "name": p.name,
                    "definition": p.definition,
                    "type": p.type,
                    "documentation": p.documentation,
                }
                for p in params
            ],
        }
        if INCLUDES.get(rtype):
            entry["searchInclude"] = list(INCLUDES[rtype])
        if rtype == "Patient":
            entry["operation"] = [dict(o) for o in _PATIENT_OPERATIONS]
            entry["searchParam"] = _patient_params(entry["searchParam"])
        if SORTS[rtype]:
            entry["extension"] = [
                {
                    "url": "urn:mrb:fhir:extension:sort-keys",
                    "valueString": ", ".join(SORTS[rtype]) + " (prefix - for descending)",
                }
            ]
        resources.append(entry)
    resources.extend(_read_only_capability(rtype) for rtype in READ_ONLY_TYPES)
    resources.append(_audit_event_capability())
    return {
        "resourceType": "CapabilityStatement",
        "id": "mrb",
        "url": f"{base}/metadata",
        "version": version,
        "name": "MrbFhirServer",
        "title": "mrb: cross-hospital lab and imaging results (FHIR R4, read and search)",
        "status": "active",
        "experimental": False,
        "date": instant(now),
        "publisher": "mrb",
        "description": (
            "Read-only FHIR R4 access to the lab and imaging results hospitals publish to "
            "mrb. Every search names one patient; every read is audited."
        ),
        "kind": "instance",
        "software": {"name": "mrb", "version": version},
        "implementation": {"description": "mrb result broker", "url": base},
        "fhirVersion": FHIR_VERSION,
        "format": [FHIR_JSON, "json"],
        "rest": [
            {
                "mode": "server",
                "documentation": _REST_DOC.format(max=MAX_COUNT),
                "security": {
                    "cors": False,
                    "service": [
                        {
                            "coding": [
                                {
                                    "system": "http://terminology.hl7.org/CodeSystem/"
                                    "restful-security-service",
                                    "code": "OAuth",
                                }
                            ],
                            "text": "Bearer token (JWT) from `mrb token issue --role doctor`",
                        }
                    ],
                    "description": (
                        "Send `Authorization: Bearer <token>`; only the doctor role reads "
                        "patient data, one named patient at a time. An optional "
                        "`X-Purpose-Of-Use` header (TREAT, ETREAT or BTG; default "
                        "TREAT) is recorded in the audit trail. Only the audit role reads "
                        "AuditEvent, and nothing else. Patient/$ihe-pix and Patient/$match "
                        "are for registered machine clients (an EHR or MPI registered as a "
                        "CDS client) only, with their own signed JWT whose `aud` is the "
                        "operation's URL, as for CDS Hooks calls. A caller sees the "
                        "national identifiers of a patient and those its own hospital "
                        "sent, never another hospital's."
                    ),
                },
                "resource": resources,
                "interaction": [],
            }
        ],
    }


def _patient_params(doctors: list[Resource]) -> list[Resource]:
    """Patient's searchParam: the doctor's (identifier, _id) and IHE PDQm [ITI-78]'s for
    registered machine clients (broker.fhir.pdq_search.SEARCH_PARAMS), one entry a name."""
    out = {p["name"]: dict(p) for p in doctors}
    for name, kind, definition, doc in SEARCH_PARAMS:
        pdqm = f"PDQm [ITI-78] (registered machine clients): {doc}"
        if name in out:
            out[name]["documentation"] = f"Doctors: {out[name]['documentation']} {pdqm}"
        else:
            out[name] = {
                "name": name,
                "definition": definition,
                "type": kind,
                "documentation": pdqm,
            }
    return list(out.values())


def _read_only_capability(rtype: str) -> Resource:
    """A type served by id only (Endpoint: where a study's images are)."""
    return {
        "type": rtype,
        "profile": f"http://hl7.org/fhir/StructureDefinition/{rtype}",
        "interaction": [{"code": "read", "documentation": _READ_DOC[rtype]}],
        **_READ_ONLY_FLAGS,
    }


# What every served type says of versions and writes: none of either (a read-only facade).
_READ_ONLY_FLAGS: Resource = {
    "versioning": "no-version",
    "readHistory": False,
    "updateCreate": False,
    "conditionalCreate": False,
    "conditionalRead": "not-supported",
    "conditionalUpdate": False,
    "conditionalDelete": "not-supported",
}


def _audit_event_capability() -> Resource:
    """AuditEvent: the audit trail in IHE BALP's shape (broker.fhir.balp), for auditors."""
    return {
        "type": "AuditEvent",
        "profile": "http://hl7.org/fhir/StructureDefinition/AuditEvent",
        "supportedProfile": [
            BALP + name for name in ("PatientRead", "PatientQuery", "Read", "Query")
        ],
        "interaction": [
            {"code": "read", "documentation": "By audit id (the audit role only)."},
            {
                "code": "search-type",
                "documentation": "Every entry the auditor may see, newest first (the audit "
                "role only); each search and read of the trail is itself audited.",
            },
        ],
        "versioning": "no-version",
        "readHistory": False,
        "updateCreate": False,
        "conditionalCreate": False,
        "conditionalRead": "not-supported",
        "conditionalUpdate": False,
        "conditionalDelete": "not-supported",
        "searchParam": [
            {
                "name": "date",
                "definition": "http://hl7.org/fhir/SearchParameter/AuditEvent-date",
                "type": "date",
                "documentation": "When the entry was recorded; every prefix (ge and le for a "
                "range); a value without a zone is in the server's zone.",
            }
        ],
        "extension": [
            {
                "url": "urn:mrb:fhir:extension:sort-keys",
                "valueString": "date (prefix - for descending; -date is the default)",
            }
        ],
    }


_PATIENT_OPERATIONS = [
    {
        "name": "ihe-pix",
        "definition": "https://profiles.ihe.net/ITI/PIXm/OperationDefinition/IHE.PIXm.pix",
        "documentation": "IHE PIXm [ITI-83]: GET Patient/$ihe-pix?sourceIdentifier="
        "system|value{&targetSystem=uri}. The person's identifiers the client may see and "
        "targetId Patient/<mrb person id>; 404 source identifier not found, 400 no source "
        "domain, 403 targetSystem not recognised (as ITI-83 2:3.83.4.2.2). Registered "
        "machine clients only.",
    },
    {
        "name": "match",
        "definition": "https://profiles.ihe.net/ITI/PDQm/OperationDefinition/PDQmMatch",
        "documentation": "IHE PDQm [ITI-119], FHIR Patient $match: POST a Parameters "
        "(resource, onlyCertainMatches, count: default and at most 10). Matches on "
        "identifiers (exact, normalised: certain) and on demographics (name, birthDate, "
        "gender, telecom, address) through mrb's probabilistic engine: an engine MATCH is "
        "certain, a POSSIBLE_MATCH probable or possible (docs/patient-matching.md). "
        "Answers with search.score and the match-grade extension. Registered machine "
        "clients only.",
    },
]

_READ_DOC = {
    "Patient": "By mrb person id. Assembled from the Patient resources hospitals sent "
    "with their results (newest hospital's as the base) with the identifiers the caller "
    "may see: national identifiers and those of the caller's own hospital.",
    "DiagnosticReport": "By the result id a recognition check links to, or the id a search "
    "returned. 410 when its hospital marked it entered-in-error.",
    "Observation": "By the id a search or a DiagnosticReport.result returned.",
    "ImagingStudy": "By the result id a recognition check links to. `endpoint` names "
    "the study's Endpoints as mrb serves them (those the hospital sent in the Bundle or "
    "contained in the study), or an external Endpoint's absolute URL; an endpoint whose "
    "address is not an http(s) URL, or carries credentials or a patient identifier, is "
    "left out.",
    "Endpoint": "By the id an ImagingStudy.endpoint (or _include=ImagingStudy:endpoint) "
    "returned: where the issuing hospital serves the study's images (connectionType "
    "ihe-iid, dicom-wado-rs, ...; address an http(s) URL). No search; the same access "
    "rules and audit as the study; 410 when the study was marked entered-in-error.",
}
_SEARCH_DOC = {
    "Patient": "Doctors: by identifier (system|value) or _id, exactly one patient. "
    "Registered machine clients (IHE PDQm [ITI-78]): family, given, birthdate, gender, "
    "telecom, identifier, _id, address, address-city, address-state, active (exact after "
    "normalisation; _count default 10, at most 50; next links carry sealed cursors). "
    "address-postalcode and address-country are not stored (ignored with a warning, 400 "
    "with Prefer: handling=strict); mothersMaidenName is not stored (always 400).",
    "DiagnosticReport": "Within one patient (patient or subject:identifier required).",
    "Observation": "Within one patient (patient or subject:identifier required).",
    "ImagingStudy": "Within one patient (patient or subject:identifier required).",
}
_REST_DOC = (
    "Read and search only (GET, or POST [type]/_search with a form body). Result "
    "parameters: _count (default 20, at most {max}; 0 gives the total only), _sort, "
    "_include (DiagnosticReport:result, ImagingStudy:endpoint), _summary=count, _total "
    "(always accurate). "
    "Paging links carry signed cursors bound to the user who searched. Unknown "
    "parameters are ignored and reported in an OperationOutcome entry, or refused with "
    "`Prefer: handling=strict`; unknown modifiers are always refused. Searches leave out "
    "entered-in-error resources unless status asks for them. JSON only."
)
