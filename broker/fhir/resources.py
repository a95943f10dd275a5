"""A result's FHIR resources, found in the payload its hospital sent, as mrb serves them.

A result is one DiagnosticReport with its Observations, one ImagingStudy with its
report (and that report's Observations), or one Observation with its members — the
same grouping ingest uses (broker.ingest.fhir_results). Each is served as the
hospital's own JSON with:

- `id`: the result id for the result's main resource (the id a recognition check links
  to), else a UUID v5 of the result id, the resource type and the resource's own id
  (or fullUrl, or Bundle position), stable across versions of the result;
- references rewritten to what mrb serves (`subject` -> `Patient/<mrb person id>`,
  `result`/`hasMember` -> `Observation/<id>`, `imagingStudy` -> `ImagingStudy/<id>`); a
  reference to anything mrb does not serve (Practitioner, Specimen, ...) keeps its
  `display` and `identifier` but loses `reference`, which would point nowhere here;
- `meta.source` = the hospital id and `meta.lastUpdated` = when mrb indexed it.
"""

from __future__ import annotations

import copy
import functools
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime, tzinfo
from typing import Any

from broker.domain.rejections import Rejected
from broker.fhir.dates import Range, effective_range, value_range
from broker.fhir.visibility import national, visible
from broker.ingest.fhir_bundle import BundleIndex, Entry
from broker.ingest.fhir_results import _business_id, _members
from broker.ingest.imaging_endpoints import StudyEndpoints, study_endpoints

Resource = dict[str, Any]
# Fixed forever: served ids are uuid5(NAMESPACE, "<result id>/<type>/<local key>").
NAMESPACE = uuid.UUID("5d1b6a40-64f4-4b6e-9a0e-2b8f0c7e4a11")
TOKEN_SYSTEM_MAX = 300
TOKEN_CODE_MAX = 200


@dataclass(frozen=True)
class ResultInfo:
    """What mrb knows of a result, from its row."""

    result_id: str
    resource_type: str
    business_id: str
    hospital: str
    person_id: str
    updated_at: datetime


@dataclass(frozen=True)
class Found:
    """One resource of a result: where it is in the payload and the id it is served as."""

    resource: Resource
    entry: int  # position in Bundle.entry; -1 when the payload is the resource itself
    served_id: str
    full_url: str | None


@dataclass(frozen=True)
class IndexRow:
    """What the search index holds of one served resource."""

    served_id: str
    resource_type: str
    entry: int | None
    status: str | None
    dates: Range | None
    tokens: frozenset[tuple[str, str, str]]  # (param, system, code)


class ResultView:
    """The served resources of one result, read from one payload document."""

    def __init__(self, doc: Resource, info: ResultInfo) -> None:
        self.info = info
        self._doc = doc
        entries, positions = _entries(doc)
        self._index = BundleIndex(entries)
        self._position = positions
        self._urls = {id(e.resource): e.full_url for e in entries}
        self.main = self._find_main()
        self.patient: Found | None = None
        self.members: list[Found] = []
        if self.main is not None:
            self.members = [self._found(r) for r in self._member_resources(self.main.resource)]
            subject = self.main.resource.get("subject")
            ref = subject.get("reference") if isinstance(subject, dict) else None
            target = self._index.resolve(ref)
            if target is not None and target.get("resourceType") == "Patient":
                self.patient = self._found(target)
        # A study's usable endpoints (broker.ingest.imaging_endpoints), each served as
        # Endpoint/<id>: those in the Bundle and those contained in the study alike.
        self._endpoints: StudyEndpoints | None = None
        self.endpoints: list[Found] = []
        self._endpoint_ids: dict[int, str] = {}  # id(Endpoint resource) -> served id
        self._contained: set[int] = set()  # ids of the study's contained Endpoints
        if self.main is not None and self.main.resource.get("resourceType") == "ImagingStudy":
            self._endpoints = study_endpoints(self.main.resource, self._index, where="ImagingStudy")
            for ep in self._endpoints.endpoints:
                if ep.resource is None:
                    continue  # an external reference: kept as its URL, nothing to serve
                found = (
                    Found(
                        ep.resource,
                        self.main.entry,
                        served_id(self.info.result_id, "Endpoint", ep.key),
                        None,
                    )
                    if ep.kind == "contained"
                    else self._found(ep.resource)
                )
                if ep.kind == "contained":
                    self._contained.add(id(ep.resource))
                self.endpoints.append(found)
                self._endpoint_ids[id(ep.resource)] = found.served_id

    def served(self) -> list[Found]:
        """The resources of this result that mrb serves (main first, endpoints last)."""
        return ([self.main] if self.main is not None else []) + self.members + self.endpoints

    def get(self, served_id: str) -> Found | None:
        return self._by_served.get(served_id)

    # Built on first use: ingest builds a view per result only for its index rows.
    @functools.cached_property
    def _by_served(self) -> dict[str, Found]:
        return {f.served_id: f for f in self.served()}

    @functools.cached_property
    def _refs(self) -> dict[str, str]:
        """The references the payload may use for a served resource -> as mrb serves it."""
        refs: dict[str, str] = {}
        for f in self.served():
            if id(f.resource) in self._contained:
                continue  # a contained Endpoint is no Endpoint/<its own id> of the Bundle
            rtype, rid = f.resource.get("resourceType"), f.resource.get("id")
            served = f"{rtype}/{f.served_id}"
            if f.full_url:
                refs[f.full_url] = served
            if isinstance(rid, str) and rid:
                refs[f"{rtype}/{rid}"] = served
        return refs

    def index_rows(self, zone: tzinfo) -> list[IndexRow]:
        """The search index rows of this result (its served resources and its Patient)."""
        rows = [_index_row(f, zone) for f in self.served()]
        if (
            self.endpoints
            and self.main is not None
            and self.main.resource.get("status") == ("entered-in-error")
        ):
            # A withdrawn study's endpoints are withdrawn with it (a read answers 410).
            withdrawn = {f.served_id for f in self.endpoints}
            rows = [
                replace(r, status="entered-in-error") if r.served_id in withdrawn else r
                for r in rows
            ]
        if self.main is None:  # never expected: ingest read this result from this payload
            rows.append(
                IndexRow(
                    self.info.result_id, self.info.resource_type, None, None, None, frozenset()
                )
            )
        rows.append(
            IndexRow(
                served_id(self.info.result_id, "Patient", "subject"),
                "Patient",
                self.patient.entry if self.patient else None,
                None,
                None,
                frozenset(),
            )
        )
        return rows

    def render(self, found: Found, *, viewer: str | None = None) -> Resource:
        """The resource as mrb serves it to a caller of hospital `viewer` (a deep copy; the
        payload is not changed): the patient's identifiers in its subject, in any other
        reference to the patient and in a contained Patient are those `viewer` may see
        (broker.fhir.visibility). None: as the sending hospital sees it."""
        res = copy.deepcopy(found.resource)
        res["id"] = found.served_id
        kept: set[str] = set()
        if found is self.main and self._endpoints is not None:
            kept = self._rewrite_endpoints(res, self._endpoints)
        if res.get("resourceType") == "Endpoint":
            res.pop("header", None)  # request headers the archive wants may hold credentials
        self._rewrite(res, top=True, viewer=viewer, kept=kept)
        if self._foreign(viewer):
            self._redact(res, top=True, viewer=viewer)
        _stamp(res, self.info)
        return res

    def patient_resource(self, *, viewer: str | None = None) -> Resource:
        """The Patient as this payload describes it (or as the subject names it), mrb's id,
        with the identifiers a caller of hospital `viewer` may see."""
        if self.patient is not None:
            res = copy.deepcopy(self.patient.resource)
            res.pop("link", None)  # links to the hospital's other records point nowhere here
            self._rewrite(res, top=False, viewer=viewer)
            if self._foreign(viewer):
                # The hospital's narrative may spell out its MRN: not another hospital's.
                res.pop("text", None)
                self._redact(res, top=False, viewer=viewer)
                res["identifier"] = self._visible(res.get("identifier"), viewer)
                if not res["identifier"]:
                    del res["identifier"]
        else:
            res = {"resourceType": "Patient"}
            subject = self.main.resource.get("subject") if self.main else None
            ident = subject.get("identifier") if isinstance(subject, dict) else None
            if isinstance(ident, dict) and visible(ident, source=self.info.hospital, viewer=viewer):
                res["identifier"] = [copy.deepcopy(ident)]
        res["id"] = self.info.person_id
        _stamp(res, self.info)
        return res

    def identifiers(self, *, viewer: str | None) -> list[dict[str, Any]]:
        """The patient's identifiers in this payload that a caller of `viewer` may see."""
        found = self.patient_resource(viewer=viewer).get("identifier")
        return [i for i in found if isinstance(i, dict)] if isinstance(found, list) else []

    # -- who sees what (broker.fhir.visibility) ------------------------------------------

    def _foreign(self, viewer: str | None) -> bool:
        return viewer is not None and viewer != self.info.hospital

    def _visible(self, idents: object, viewer: str | None) -> list[Any]:
        if not isinstance(idents, list):
            return []
        return [i for i in idents if visible(i, source=self.info.hospital, viewer=viewer)]

    def _redact(self, res: Resource, *, top: bool, viewer: str | None) -> None:
        """Drop the identifiers `viewer` may not see from every reference to the patient
        (the subject, `Patient/<person id>`, a contained Patient, a `type` Patient) and
        from contained Patients."""
        contained = {
            f"#{c['id']}"
            for c in _dicts(res.get("contained"))
            if c.get("resourceType") == "Patient" and isinstance(c.get("id"), str)
        }
        ours = f"Patient/{self.info.person_id}"
        subject = res.get("subject") if top else None
        stack: list[object] = [res]
        while stack:
            cur = stack.pop()
            if isinstance(cur, list):
                stack.extend(cur)
                continue
            if not isinstance(cur, dict):
                continue
            if cur is not res and cur.get("resourceType") == "Patient":
                cur.pop("text", None)
                kept = self._visible(cur.get("identifier"), viewer)
                if kept:
                    cur["identifier"] = kept
                else:
                    cur.pop("identifier", None)
            ref = cur.get("reference")
            to_patient = (
                cur is subject or ref == ours or ref in contained or cur.get("type") == "Patient"
            )
            ident = cur.get("identifier")
            if (
                to_patient
                and isinstance(ident, dict)
                and not visible(ident, source=self.info.hospital, viewer=viewer)
            ):
                del cur["identifier"]
            stack.extend(v for v in cur.values() if isinstance(v, dict | list))

    # -- finding ------------------------------------------------------------------------

    def _find_main(self) -> Found | None:
        for res in self._index.of_type(self.info.resource_type):
            try:
                if _business_id(res) == self.info.business_id:
                    return Found(
                        res,
                        self._position[id(res)],
                        self.info.result_id,
                        self._urls.get(id(res)),
                    )
            except Rejected:
                continue
        return None

    def _member_resources(self, main: Resource) -> list[Resource]:
        """The report and Observations that belong to the main resource (as ingest groups)."""
        if main.get("resourceType") != "ImagingStudy":
            return _members(main, self._index)
        out: list[Resource] = []
        for report in self._index.of_type("DiagnosticReport"):
            refs = [r.get("reference") for r in report.get("imagingStudy") or [] if _is_dict(r)]
            if any(self._index.resolve(ref) is main for ref in refs):
                out.append(report)
                out.extend(_members(report, self._index))
                break  # ingest keeps one report per study
        return out

    def _found(self, res: Resource) -> Found:
        rtype = str(res.get("resourceType"))
        full_url = self._urls.get(id(res))
        local = res.get("id") if isinstance(res.get("id"), str) and res.get("id") else None
        key = local or full_url or f"entry{self._position[id(res)]}"
        return Found(
            res, self._position[id(res)], served_id(self.info.result_id, rtype, key), full_url
        )

    # -- rewriting ----------------------------------------------------------------------

    def _rewrite_endpoints(self, res: Resource, endpoints: StudyEndpoints) -> set[str]:
        """ImagingStudy.endpoint and series.endpoint as mrb serves them: `Endpoint/<id>`
        for an Endpoint in the Bundle or contained (contained ones move out of `contained`),
        the URL of an external one, nothing for one left out. Returns the references set."""
        kept: set[str] = set()
        for holder in [res, *_dicts(res.get("series"))]:
            refs = holder.get("endpoint")
            if not isinstance(refs, list):
                continue
            out = []
            for ref in _dicts(refs):
                ep = endpoints.by_reference.get(str(ref.get("reference")))
                if ep is None:
                    continue
                shown = {k: v for k, v in ref.items() if k in ("display", "type")}
                if ep.resource is None:
                    shown["reference"] = ep.address
                else:
                    shown["reference"] = f"Endpoint/{self._endpoint_ids[id(ep.resource)]}"
                kept.add(shown["reference"])
                out.append(shown)
            if out:
                holder["endpoint"] = out
            else:
                del holder["endpoint"]
        if isinstance(res.get("contained"), list):
            rest = [
                c
                for c in res["contained"]
                if not (isinstance(c, dict) and c.get("resourceType") == "Endpoint")
            ]
            if rest:
                res["contained"] = rest
            else:
                del res["contained"]
        return kept

    def _rewrite(
        self, res: Resource, *, top: bool, viewer: str | None, kept: set[str] | None = None
    ) -> None:
        if top and isinstance(res.get("subject"), dict):
            res["subject"]["reference"] = f"Patient/{self.info.person_id}"
        for ref in _references(res, skip_top_subject=top):
            target = ref.get("reference")
            if not isinstance(target, str) or target.startswith("#") or target in (kept or ()):
                continue  # a contained resource, or an endpoint already as served
            served = self._served_ref(target)
            if served is not None:
                ref["reference"] = served
                continue
            del ref["reference"]
            if not ref.get("display") and not ref.get("identifier"):
                # Another hospital's own Patient id is one of its identifiers, too.
                shown = "a Patient" if self._foreign(viewer) and _is_patient(target) else target
                ref["display"] = f"{shown} (held by {self.info.hospital}; not served by mrb)"

    def _served_ref(self, target: str) -> str | None:
        if target in self._refs:
            return self._refs[target]
        resolved = self._index.resolve(target)
        if resolved is None:
            return None
        if self.patient is not None and resolved is self.patient.resource:
            return f"Patient/{self.info.person_id}"
        for f in self.served():
            if f.resource is resolved:
                return f"{resolved.get('resourceType')}/{f.served_id}"
        return None


def served_id(result_id: str, resource_type: str, local_key: str) -> str:
    """The stable id of a resource that is not its result's main resource."""
    return str(uuid.uuid5(NAMESPACE, f"{result_id}/{resource_type}/{local_key}"))


def merge_patients(
    views: list[ResultView], person_id: str, *, viewer: str | None = None
) -> Resource:
    """One Patient from the newest payload of each hospital: the newest as the base, with
    the identifiers a caller of hospital `viewer` may see (each once;
    broker.fhir.visibility). None: every hospital's identifiers."""
    parts = [v.patient_resource(viewer=viewer) for v in views]
    if not parts:
        return {"resourceType": "Patient", "id": person_id}
    base = copy.deepcopy(parts[0])
    base.pop("identifier", None)
    identifiers = patient_identifiers(views, viewer=viewer)
    if identifiers:
        base["identifier"] = identifiers
    base["id"] = person_id
    return base


def patient_identifiers(views: list[ResultView], *, viewer: str | None) -> list[dict[str, Any]]:
    """The person's identifiers `viewer` may see, newest payload first, each once: a
    national identifier once however each hospital spelled its system."""
    seen: set[tuple[str, ...]] = set()
    out: list[dict[str, Any]] = []
    for view in views:
        for ident in view.identifiers(viewer=viewer):
            linked = national(ident, hospital=view.info.hospital)
            key: tuple[str, ...] = (
                (linked.link_key,)
                if linked is not None
                else (str(ident.get("system") or ""), str(ident.get("value") or ""))
            )
            if key not in seen:
                seen.add(key)
                out.append(ident)
    return out


def instant(moment: datetime) -> str:
    """A FHIR instant in UTC with milliseconds."""
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _stamp(res: Resource, info: ResultInfo) -> None:
    """Set meta.lastUpdated and meta.source; resourceType, id and meta lead, as is usual."""
    meta = res.get("meta")
    meta = dict(meta) if isinstance(meta, dict) else {}
    meta["lastUpdated"] = instant(info.updated_at)
    meta["source"] = info.hospital
    rest = {k: v for k, v in res.items() if k not in ("resourceType", "id", "meta")}
    head = {"resourceType": res.get("resourceType"), "id": res.get("id"), "meta": meta}
    res.clear()
    res.update(head)
    res.update(rest)


def _index_row(f: Found, zone: tzinfo) -> IndexRow:
    res = f.resource
    rtype = str(res.get("resourceType"))
    tokens: set[tuple[str, str, str]] = set()
    for ident in _dicts(res.get("identifier")):
        if isinstance(ident.get("value"), str):
            tokens.add(_token("identifier", ident.get("system"), ident["value"]))
    if rtype == "ImagingStudy":
        dates = value_range(res.get("started"), zone)
        for coding in _dicts(res.get("modality")):
            tokens |= _coding_tokens("modality", coding)
        for series in _dicts(res.get("series")):
            tokens |= _coding_tokens("modality", series.get("modality"))
            tokens |= _coding_tokens("bodysite", series.get("bodySite"))
    else:
        dates = effective_range(res, zone)
        tokens |= _concept_tokens("code", res.get("code"))
        for concept in _dicts(res.get("category")):
            tokens |= _concept_tokens("category", concept)
    status = res.get("status")
    return IndexRow(
        f.served_id,
        rtype,
        f.entry,
        str(status)[:32] if isinstance(status, str) else None,
        dates,
        frozenset(tokens),
    )


def _concept_tokens(param: str, concept: object) -> set[tuple[str, str, str]]:
    if not isinstance(concept, dict):
        return set()
    out: set[tuple[str, str, str]] = set()
    for coding in _dicts(concept.get("coding")):
        out |= _coding_tokens(param, coding)
    return out


def _coding_tokens(param: str, coding: object) -> set[tuple[str, str, str]]:
    if isinstance(coding, dict) and isinstance(coding.get("code"), str) and coding["code"]:
        return {_token(param, coding.get("system"), coding["code"])}
    return set()


def _token(param: str, system: object, code: str) -> tuple[str, str, str]:
    return (param, clip_system(system if isinstance(system, str) else ""), clip_code(code))


def clip_system(system: str) -> str:
    return system[:TOKEN_SYSTEM_MAX]


def clip_code(code: str) -> str:
    return code[:TOKEN_CODE_MAX]


def _entries(doc: Resource) -> tuple[list[Entry], dict[int, int]]:
    if doc.get("resourceType") != "Bundle":
        return [Entry(doc, None)], {id(doc): -1}
    entries: list[Entry] = []
    positions: dict[int, int] = {}
    raw = doc.get("entry")
    for i, e in enumerate(raw if isinstance(raw, list) else []):
        if isinstance(e, dict) and isinstance(e.get("resource"), dict):
            url = e.get("fullUrl") if isinstance(e.get("fullUrl"), str) else None
            entries.append(Entry(e["resource"], url))
            positions[id(e["resource"])] = i
    return entries, positions


def _references(node: object, *, skip_top_subject: bool) -> Iterator[dict[str, Any]]:
    """Every Reference (a dict with a string `reference`) inside a resource."""
    stack: list[object] = [node]
    top = node
    while stack:
        cur = stack.pop()
        if isinstance(cur, dict):
            if cur is not top and isinstance(cur.get("reference"), str):
                yield cur
            for key, value in cur.items():
                if cur is top and key == "subject" and skip_top_subject:
                    continue
                if isinstance(value, dict | list):
                    stack.append(value)
        elif isinstance(cur, list):
            stack.extend(cur)


def _dicts(value: object) -> list[dict[str, Any]]:
    return [v for v in value if isinstance(v, dict)] if isinstance(value, list) else []


def _is_dict(value: object) -> bool:
    return isinstance(value, dict)


def _is_patient(target: str) -> bool:
    """A literal reference to a Patient (relative or absolute)."""
    return target.startswith("Patient/") or "/Patient/" in target
