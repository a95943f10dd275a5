"""One audit entry as a FHIR R4 AuditEvent in the shape of IHE BALP (pure, no I/O).

IHE Basic Audit Log Patterns 1.1 (https://profiles.ihe.net/ITI/BALP/): a read of patient
data follows IHE.BasicAudit.PatientRead (type audit-event-type#rest, subtype
restful-interaction#read, action R, outcome 0; agents client = DCM 110152 Destination
Role ID and server = DCM 110153 Source Role ID, user = v3-ParticipationType#IRCP with
requestor true; entity data = the resource read, entity patient = audit-entity-type#1 /
object-role#1); a query follows IHE.BasicAudit.PatientQuery (subtype search-type, action
E, client 110153 and server 110152, entity query = audit-entity-type#2 /
object-role#24 with `query` in base64). Without a patient they are BasicAudit.Read and
.Query. IHE PIXm [ITI-83] and PDQm [ITI-119] queries are PatientQuery with subtype
restful-interaction#operation and the transaction (urn:ihe:event-type-code#ITI-83, as
IHE.PIXm.Query.Audit.Manager requires; #ITI-119). Administrative changes and other
entries have no BALP profile: their type is the mrb action.

What mrb does not record, and so cannot give: the client's network address (agent
network), the raw request (the query entity carries the parameter names only, never
their values, which can be identifiers) and X-Request-ID. The patient is named by the
mrb person id and the keyed pseudonym of the identifier searched, never an identifier.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping
from typing import Any

from broker.fhir.resources import instant

Resource = dict[str, Any]
BALP = "https://profiles.ihe.net/ITI/BALP/StructureDefinition/IHE.BasicAudit."
EVENT_TYPE = "http://terminology.hl7.org/CodeSystem/audit-event-type"
INTERACTION = "http://hl7.org/fhir/restful-interaction"
DCM = "http://dicom.nema.org/resources/ontology/DCM"
PARTICIPATION = "http://terminology.hl7.org/CodeSystem/v3-ParticipationType"
ENTITY_TYPE = "http://terminology.hl7.org/CodeSystem/audit-entity-type"
OBJECT_ROLE = "http://terminology.hl7.org/CodeSystem/object-role"
SOURCE_TYPE = "http://terminology.hl7.org/CodeSystem/security-source-type"
ACT_REASON = "http://terminology.hl7.org/CodeSystem/v3-ActReason"
# mrb's own identifier systems and codes (not identifiers of patients).
MRB_ACTION = "urn:mrb:audit-action"
MRB_ROLE = "urn:mrb:role"
MRB_ACTOR = "urn:mrb:actor"
MRB_HOSPITAL = "urn:mrb:hospital"
MRB_SYSTEM = "urn:mrb:system"
PSEUDONYM = "urn:mrb:patient-pseudonym"
CHAIN_EXTENSION = "urn:mrb:fhir:extension:audit-chain"

READ, QUERY = "read", "query"
# Which entries are reads and which are queries of patient data (BALP), by mrb action.
KINDS = {
    "fhir-read": READ,
    "safety-notice": READ,
    "fhir-search": QUERY,
    "fhir-pix-query": QUERY,
    "fhir-pdq-match": QUERY,
    "fhir-pdq-query": QUERY,
    "recognition-check": QUERY,
    "cds-patient-view": QUERY,
    "audit.read": QUERY,
}
# mrb's audit purposes as HL7 v3 PurposeOfUse (v3-ActReason) codes; the text stays mrb's.
PURPOSES = {
    "treatment": ("TREAT", "treatment"),
    "order-entry": ("TREAT", "treatment"),
    "patient-view": ("TREAT", "treatment"),
    "cds-hooks": ("TREAT", "treatment"),
    "emergency-treatment": ("ETREAT", "Emergency Treatment"),
    "care-management": ("CAREMGT", "care management"),
    "patient-request": ("PATRQT", "patient requested"),
    "patient-safety": ("PATSFTY", "patient safety"),
    "break-glass": ("BTG", "break the glass"),
    "audit": ("HCOMPL", "health compliance"),
    "administration": ("HSYSADMIN", "health system administration"),
}
_IRCP = {"system": PARTICIPATION, "code": "IRCP", "display": "information recipient"}
# IHE transactions as an extra subtype (IHE.PIXm.Query.Audit.Manager adds ITI-83; PDQm's
# $match audit adds ITI-119), with the FHIR interaction `operation`.
IHE_EVENT = "urn:ihe:event-type-code"
_TRANSACTIONS = {
    "fhir-pix-query": ("ITI-83", "Mobile Patient Identifier Cross-reference Query"),
    "fhir-pdq-match": ("ITI-119", "Patient Demographics Match"),
    "fhir-pdq-query": ("ITI-78", "Mobile Patient Demographics Query"),
}
_OPERATIONS = ("fhir-pix-query", "fhir-pdq-match")  # the others are searches
_VERBS = {"add": "C", "issue": "C", "certify": "C", "replace": "U", "close": "U", "revoke": "U"}


def audit_event(entry: Mapping[str, Any], base: str) -> Resource:
    """The AuditEvent for one audit_event row; `base` is this FHIR endpoint's URL."""
    action = str(entry["action"])
    kind = KINDS.get(action)
    raw = entry.get("detail")
    detail: Mapping[str, Any] = raw if isinstance(raw, dict) else {}
    patient = _patient(entry)
    failed = detail.get("outcome") == "gone"  # a withdrawn result: answered 410
    resource: Resource = {"resourceType": "AuditEvent", "id": str(entry["id"])}
    if kind is not None and not failed:
        name = ("Patient" if patient else "") + ("Read" if kind == READ else "Query")
        resource["meta"] = {"profile": [BALP + name]}
    chain = _chain(entry)
    if chain:
        resource["extension"] = [chain]
    mine = {"system": MRB_ACTION, "code": action}
    if kind is None:
        resource["type"] = mine
        resource["action"] = _VERBS.get(action.rsplit(".", 1)[-1], "E")
    else:
        resource["type"] = {"system": EVENT_TYPE, "code": "rest", "display": "Restful Operation"}
        code = "read" if kind == READ else "operation" if action in _OPERATIONS else "search-type"
        resource["subtype"] = [{"system": INTERACTION, "code": code, "display": code}, mine]
        if action in _TRANSACTIONS:
            iti, display = _TRANSACTIONS[action]
            resource["subtype"].append({"system": IHE_EVENT, "code": iti, "display": display})
        resource["action"] = "R" if kind == READ else "E"
    resource["recorded"] = instant(entry["at"])
    resource["outcome"] = "4" if failed else "0"
    if failed:
        resource["outcomeDesc"] = "the result was withdrawn (entered-in-error): answered 410 Gone"
    resource["agent"] = _agents(entry, kind, base)
    resource["source"] = {
        "site": "mrb",
        "observer": _mrb(),
        "type": [{"system": SOURCE_TYPE, "code": "4", "display": "Application Server"}],
    }
    entities = [_what(action, kind, detail)]
    if patient:
        entities.append(patient)
    resource["entity"] = entities
    return resource


def _mrb() -> Resource:
    return {"identifier": {"system": MRB_SYSTEM, "value": "mrb"}, "display": "mrb"}


def _agents(entry: Mapping[str, Any], kind: str | None, base: str) -> list[Resource]:
    actor, role, hospital = str(entry["actor"]), str(entry["role"]), entry.get("hospital_id")
    # BALP follows DICOM: for a query the client is the source of the request, for a
    # read the destination of the data.
    client, server = ("110152", "110153") if kind == READ else ("110153", "110152")
    names = {"110152": "Destination Role ID", "110153": "Source Role ID"}
    purpose = str(entry["purpose"])
    code = PURPOSES.get(purpose)
    purpose_of_use: Resource = {"text": purpose}
    if code is not None:
        purpose_of_use["coding"] = [{"system": ACT_REASON, "code": code[0], "display": code[1]}]
    org = str(hospital) if hospital else "*"
    return [
        {
            "type": {"coding": [_IRCP]},
            "role": [{"coding": [{"system": MRB_ROLE, "code": role}], "text": role}],
            "who": {"identifier": {"system": MRB_ACTOR, "value": actor}, "display": actor},
            "name": actor,
            "requestor": True,
            "purposeOfUse": [purpose_of_use],
        },
        {
            "type": {"coding": [{"system": DCM, "code": client, "display": names[client]}]},
            "who": {
                "type": "Organization",
                "identifier": {"system": MRB_HOSPITAL, "value": org},
                "display": "every hospital (a platform role)" if org == "*" else org,
            },
            "requestor": False,
        },
        {
            "type": {"coding": [{"system": DCM, "code": server, "display": names[server]}]},
            "who": _mrb(),
            "requestor": False,
            "network": {"address": base, "type": "5"},
        },
    ]


def _patient(entry: Mapping[str, Any]) -> Resource | None:
    person, pseudonym = entry.get("person_id"), entry.get("patient_pseudonym")
    if not person and not pseudonym:
        return None
    what: Resource = {}
    if person:
        what["reference"] = f"Patient/{person}"
    if pseudonym:
        what["identifier"] = {"system": PSEUDONYM, "value": str(pseudonym)}
    return {
        "what": what,
        "type": {"system": ENTITY_TYPE, "code": "1", "display": "Person"},
        "role": {"system": OBJECT_ROLE, "code": "1", "display": "Patient"},
    }


def _what(action: str, kind: str | None, detail: Mapping[str, Any]) -> Resource:
    """The entity acted on: the query asked, the resource read, or what was changed."""
    system_object = {"system": ENTITY_TYPE, "code": "2", "display": "System Object"}
    if kind == QUERY:
        text = _query_text(action, detail)
        return {
            "type": system_object,
            "role": {"system": OBJECT_ROLE, "code": "24", "display": "Query"},
            "description": text,
            "query": base64.b64encode(text.encode()).decode(),
        }
    if kind == READ:
        if isinstance(detail.get("resource"), str):
            what: Resource = {"reference": detail["resource"]}
        elif detail.get("notice_id"):
            what = {"identifier": {"system": "urn:mrb:safety-notice", "value": detail["notice_id"]}}
        else:
            what = {"display": action}
        return {
            "what": what,
            "type": system_object,
            "role": {"system": OBJECT_ROLE, "code": "4", "display": "Domain Resource"},
        }
    changed: Resource = {"type": system_object, "description": action}
    items = [
        {"type": str(k), "valueString": v if isinstance(v, str) else json.dumps(v)}
        for k, v in sorted(detail.items())
        if v is not None
    ]
    if items:
        changed["detail"] = items
    return changed


def _query_text(action: str, detail: Mapping[str, Any]) -> str:
    """The query as mrb recorded it: names of parameters, never their values."""
    if action in ("fhir-search", "audit.read") and detail.get("resource_type"):
        names = "&".join(str(p) for p in detail.get("parameters") or [])
        return f"GET {detail['resource_type']}" + (f"?{names}" if names else "")
    if action == "recognition-check":
        return f"recognition check {detail.get('check_id', '')} ({detail.get('items', 0)} items)"
    if action == "fhir-pix-query":
        names = "&".join(str(p) for p in detail.get("parameters") or [])
        return f"GET Patient/$ihe-pix?{names} from {detail.get('client', 'a registered client')}"
    if action == "fhir-pdq-match":
        return f"POST Patient/$match from {detail.get('client', 'a registered client')}"
    if action == "fhir-pdq-query":
        names = "&".join(str(p) for p in detail.get("parameters") or [])
        return f"GET Patient?{names} from {detail.get('client', 'a registered client')}"
    if action == "cds-patient-view":
        return f"CDS Hooks patient-view from {detail.get('client', 'a registered client')}"
    return action


def _chain(entry: Mapping[str, Any]) -> Resource | None:
    """Where the entry sits in the hash chain, once sealed (`mrb audit verify` checks it)."""
    if entry.get("seq") is None or not entry.get("hash"):
        return None
    return {
        "url": CHAIN_EXTENSION,
        "extension": [
            {"url": "seq", "valueString": str(entry["seq"])},
            {"url": "hash", "valueString": str(entry["hash"])},
        ],
    }
