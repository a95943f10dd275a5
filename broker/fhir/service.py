"""FHIR read and search: who may, which patient, what matches, what is audited."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, tzinfo
from typing import Any
from urllib.parse import unquote

from broker.domain.actors import Actor, Role
from broker.domain.errors import Invalid, NotAllowed, Refused
from broker.domain.identifier_systems import IdentifierRegistry
from broker.domain.identifiers import InvalidIdentifier, PatientIdentifier
from broker.domain.purposes import PurposeTable, UnknownPurpose, doctor_read
from broker.fhir import pdq, pdq_search, pix
from broker.fhir.consent import consent_capability, consent_resource
from broker.fhir.cursors import CursorSigner, Page, page_links, resume
from broker.fhir.documents import (
    BundleEntry,
    capability_statement,
    ignored_outcome,
    operation_outcome,
    searchset,
)
from broker.fhir.errors import forbidden, gone, invalid, not_found
from broker.fhir.params import (
    INCLUDE_PATHS,
    INCLUDES,
    PARAMS,
    READ_ONLY_TYPES,
    WITHDRAWN,
    Search,
    parse_search,
)
from broker.fhir.pix import PixQuery
from broker.fhir.resources import ResultView, instant, merge_patients, patient_identifiers
from broker.ports.fhir import Admission, FhirReindex, FhirUnitOfWork, Hit, Viewer
from broker.ports.pdq import PeopleDemographics
from broker.reference.purposes import shipped_purposes
from broker.reference.sensitive import shipped_index_codes
from broker.services.consents import ConsentService, note_break_glass

RESOURCE_TYPES = (*PARAMS, *READ_ONLY_TYPES)
CONSENT = "Consent"  # served from the consent record (broker/services/consents.py)
PURGED_TEXT = (
    "the payload it is read from was purged under the retention policy "
    "(MRB_PAYLOAD_RETENTION_DAYS); recognition checks still use the result's index entry"
)


@dataclass(frozen=True)
class Reader:
    actor: Actor
    purpose: str  # the audit purpose
    client: str | None = None  # a registered machine client's issuer (PIXm, PDQm)
    # An emergency read with a reason (X-Break-Glass-Reason): beyond consent and opt-out.
    break_glass_reason: str | None = None

    @property
    def hospital(self) -> str:
        """Whose identifiers the caller sees besides national ones (broker.fhir.visibility)."""
        return self.actor.hospital

    def viewer(self, hidden: frozenset[tuple[str, str]]) -> Viewer:
        """What the index may serve the caller: no other hospital's sensitive result."""
        return Viewer(self.actor.hospital, hidden)


@dataclass(frozen=True)
class _Patient:
    person_id: str | None  # the surviving person, if known
    identifier: PatientIdentifier | None  # when named by identifier (audited pseudonymised)


def caller(
    actor: Actor,
    purpose_header: str | None,
    reason_header: str | None = None,
    purposes: PurposeTable | None = None,
) -> Reader:
    """The caller if they may read patient data (doctors only), with their purpose.

    The purpose (X-Purpose-Of-Use, an HL7 v3 code; default TREAT) must be a doctor's
    (broker.domain.purposes). ETREAT or BTG with X-Break-Glass-Reason (percent-encoded
    UTF-8) is break-glass: the patient's opt-out and unconsented sensitive results do not
    hide results from it, and it is audited as `break-glass` with the reason.

    A doctor of any hospital reads any hospital's results: that is what mutual
    recognition is for; every read is audited with the purpose stated. The patient's
    identifiers they see are the national ones and their own hospital's
    (broker.fhir.visibility)."""
    if actor.role is not Role.DOCTOR:
        raise forbidden(
            f"FHIR reads of patient data need a doctor token; this token's role is "
            f"{actor.role.value}"
        )
    reason = unquote(reason_header) if reason_header else None
    try:
        stated = doctor_read(purposes or shipped_purposes(), purpose_header, reason=reason)
    except UnknownPurpose as exc:
        raise invalid(f"X-Purpose-Of-Use: {exc.detail}") from None
    except NotAllowed as exc:
        raise forbidden(f"X-Purpose-Of-Use: {exc.detail}") from None
    except Invalid as exc:
        raise invalid(exc.detail) from None
    return Reader(actor, stated.audit, break_glass_reason=stated.break_glass_reason)


def machine_caller(issuer: str, hospital: str, purpose_header: str | None) -> Reader:
    """A registered machine client (an EHR or MPI integration registered as a CDS client,
    authenticated by its own signed JWT) for the PIXm and PDQm $match operations.

    Audited under its issuer with the adapter role (a hospital's system, not a person);
    its hospital is its tenant: it sees what a doctor of that hospital sees."""
    return Reader(Actor(issuer[:200], Role.ADAPTER, hospital), _purpose(purpose_header), issuer)


def person_refused(actor: Actor) -> Exception:
    """PIXm and PDQm $match answer machine clients only; a person's token gets 403."""
    return forbidden(
        "Patient/$ihe-pix and Patient/$match are for registered machine clients (an EHR "
        "or MPI integration registered as a CDS client, with its own signed JWT); a "
        f"person's token ({actor.role.value}) is not accepted. Doctors search one named "
        "patient with GET Patient?identifier=system|value."
    )


def _purpose(header: str | None) -> str:
    """A machine client's purpose: any on the list (they are not doctors), not break-glass."""
    try:
        purpose = shipped_purposes().parse(header)
    except UnknownPurpose as exc:
        raise invalid(f"X-Purpose-Of-Use: {exc.detail}") from None
    if purpose.code == "break-glass":
        raise invalid("X-Purpose-Of-Use: BTG is for a doctor's emergency read with a reason")
    return purpose.code


class FhirService:
    """The `/fhir` read and search use cases, on the ports bootstrap hands them."""

    def __init__(
        self,
        *,
        uow: Callable[[], FhirUnitOfWork],
        reindex: FhirReindex,
        admission: Admission,
        signer: CursorSigner,
        zone: tzinfo,
        identifiers: IdentifierRegistry,
        version: str = "0.1.0",
        sensitive_codes: frozenset[tuple[str, str]] | None = None,
        hidden_codes: Callable[[frozenset[str]], frozenset[tuple[str, str]]] | None = None,
        consent_records: ConsentService | None = None,
        people_demographics: PeopleDemographics | None = None,
    ) -> None:
        """`sensitive_codes`: the (system, code) pairs that make a result sensitive
        (SensitivityTable.index_codes); the shipped table's unless given (the patient's
        opt-out and consents are read afresh for every request, in its unit of work:
        FhirUnitOfWork.consents); `hidden_codes`: the
        pairs still hiding a result once some categories are consented (services.consents
        .hidden_codes); `consent_records`: serves the Consent resources."""
        self._identifiers = identifiers
        self._demographics = people_demographics  # PDQm: blocks and sealed demographics
        self._hidden = shipped_index_codes() if sensitive_codes is None else sensitive_codes
        self._hidden_for = hidden_codes
        self._consent_records = consent_records
        self._uow = uow
        self._reindex = reindex
        self._admission = admission
        self._signer = signer
        self._zone = zone
        self._version = version

    def capabilities(self, base: str) -> dict[str, Any]:
        statement = capability_statement(base, datetime.now(UTC), self._version)
        if self._consent_records is not None:
            for rest in statement.get("rest") or []:
                rest.setdefault("resource", []).append(consent_capability())
        return statement

    async def _viewer(self, uow: FhirUnitOfWork, caller: Reader, person_id: str | None) -> Viewer:
        """What the index may serve this caller of this patient, as the patient's record says
        now: nothing of other hospitals after an opt-out; other hospitals' sensitive results
        unless consented; everything to a break-glass read."""
        if caller.break_glass_reason is not None:
            return Viewer(caller.hospital)
        if person_id is None:
            return caller.viewer(self._hidden)
        view = await uow.consents.view(person_id)
        hidden = self._hidden
        if view.categories and self._hidden_for is not None:
            hidden = self._hidden_for(view.categories)
        return Viewer(caller.hospital, hidden, own_only=view.opted_out)

    # -- Consent (the patient's consent record; broker/services/consents.py) ------------

    async def _consent_search(
        self, caller: Reader, pairs: Sequence[tuple[str, str]], base: str
    ) -> dict[str, Any]:
        """The patient's Consents for a doctor of a hospital holding their results; an empty
        searchset for any other, exactly as for a patient mrb does not know."""
        assert self._consent_records is not None
        identifier, person_id, status = _consent_params(pairs)
        found = await self._consent_records.of_patient(
            caller.actor,
            identifier=identifier,
            person_id=person_id,
            purpose=caller.purpose,
            action="fhir-search",
            detail=_glass(
                caller,
                {"resource_type": CONSENT, "parameters": sorted({k for k, _ in pairs})},
            ),
        )
        _broke_glass(caller)  # audited as break-glass: on the report, so counted too
        now = datetime.now(UTC)
        names = self._consent_records.category_names()
        entries = []
        if found is not None:
            for r in found.records:
                resource = consent_resource(r, found.person_id, now, names)
                if status is None or resource["status"] == status:
                    entries.append(BundleEntry(resource, "match"))
        return searchset(
            base=base,
            total=len(entries),
            entries=entries,
            links={"self": f"{base}/{CONSENT}"},
            now=now,
        )

    async def _consent_read(self, caller: Reader, rid: str) -> dict[str, Any]:
        assert self._consent_records is not None
        found = await self._consent_records.one(caller.actor, rid, purpose=caller.purpose)
        _broke_glass(caller)
        if found is None:
            raise not_found(f"no {CONSENT} with this id is known to mrb")
        record, person_id = found
        return consent_resource(
            record, person_id, datetime.now(UTC), self._consent_records.category_names()
        )

    # -- read ---------------------------------------------------------------------------

    async def read(self, caller: Reader, resource_type: str, rid: str) -> dict[str, Any]:
        if resource_type == CONSENT and self._consent_records is not None:
            return await self._consent_read(caller, rid)
        _check_type(resource_type)
        if resource_type == "Patient":
            return await self._read_patient(caller, rid)
        # Another hospital's sensitive result (or any, after the patient opted out) is not
        # found, exactly as one that never was. Whose it is is learnt first (`probe`), then
        # the patient's record decides what the caller may see.
        unknown = f"no {resource_type} with this id is known to mrb"
        probe = Viewer(caller.hospital)
        async with self._uow() as uow:
            row = await uow.index.resource(rid, resource_type, viewer=probe)
            # A result id not indexed yet (or never searched) is read by its own id.
            result_id = (
                row.result_id
                if row
                else await uow.index.result_id(rid, resource_type, viewer=probe)
            )
        if result_id is None:
            raise not_found(unknown)
        await self._reindex.results([result_id])
        async with self._uow() as uow:
            row = await uow.index.resource(rid, resource_type, viewer=probe)
            viewer = await self._viewer(uow, caller, row.person_id if row else None)
            if row is not None and viewer != probe:
                row = await uow.index.resource(rid, resource_type, viewer=viewer)
                if row is None:
                    raise not_found(unknown)
            if row is None:
                raise not_found(f"{resource_type}/{rid} is not in the current version")
            opened = await uow.payloads.open([row.version_id])
            if row.version_id in opened.unreadable:
                await uow.commit()  # its search rows, marked unreadable
                raise not_found(f"{resource_type}/{rid} cannot be read")
            view = opened.views.get(row.version_id)
            found = view.get(rid) if view is not None else None  # no view: purged
            if view is not None and found is None:
                raise not_found(f"{resource_type}/{rid} is not in the current version")
            withdrawn = row.status == WITHDRAWN
            await uow.audit.record_read(
                caller.actor,
                action="fhir-read",
                purpose=caller.purpose,
                patient=None,
                person_id=row.person_id,
                detail=_glass(
                    caller,
                    {
                        "resource": f"{resource_type}/{rid}",
                        "outcome": "purged" if view is None else "gone" if withdrawn else "read",
                    },
                ),
            )
            await uow.commit()
        _broke_glass(caller)
        if view is None or found is None:
            raise gone(f"{resource_type}/{rid}: {PURGED_TEXT}")
        if withdrawn:
            raise gone(
                f"{resource_type}/{rid} was marked entered-in-error by {view.info.hospital}: "
                "it was withdrawn and must not be used"
            )
        return view.render(found, viewer=caller.hospital)

    async def _read_patient(self, caller: Reader, pid: str) -> dict[str, Any]:
        unknown = "no Patient with this id is known to mrb"
        async with self._uow() as uow:
            record = await uow.index.person(pid)
        if record is None:
            raise not_found(unknown)
        # A person the caller's hospital may see no result of (only other hospitals'
        # sensitive ones) is unknown to it, exactly as one mrb never heard of.
        await self._reindex.person(record.merged_into or pid)
        async with self._uow() as uow:
            if not await self._sees(uow, record.merged_into or pid, caller):
                raise not_found(unknown)
            if record.merged_into:
                await self._audit(uow, caller, "fhir-read", _Patient(pid, None), {"merged": True})
                await uow.commit()
                _broke_glass(caller)
                return {
                    "resourceType": "Patient",
                    "id": pid,
                    "active": False,
                    "link": [
                        {
                            "other": {"reference": f"Patient/{record.merged_into}"},
                            "type": "replaced-by",
                        }
                    ],
                }
        async with self._uow() as uow:
            resource = await self._patient(uow, pid, caller)
            await self._audit(
                uow, caller, "fhir-read", _Patient(pid, None), {"resource": "Patient"}
            )
            await uow.commit()
        _broke_glass(caller)  # audited as break-glass: counted for the alert as well
        return resource

    # -- IHE PIXm [ITI-83] and PDQm [ITI-119] (registered machine clients) ---------------

    async def pix(self, caller: Reader, pairs: Sequence[tuple[str, str]]) -> dict[str, Any]:
        """Patient/$ihe-pix: the person's identifiers the client may see (broker.fhir.pix).

        Audited whatever the answer, the source identifier pseudonymised; a source that
        finds nobody is 404 after its audit entry is committed."""
        query = pix.parse_query(pairs)
        source = pix.source_identifier(query, hospital=caller.hospital, registry=self._identifiers)
        async with self._uow() as uow:
            person_id = await uow.people.find(source)
            if person_id is None:
                await self._audit_pix(uow, caller, query, source, None, "not-found", 0)
                await uow.commit()
        if person_id is None:
            raise pix.source_not_found()
        await self._reindex.person(person_id)
        async with self._uow() as uow:
            if not await self._sees(uow, person_id, caller):
                # Known only through other hospitals' sensitive results: not found for them.
                await self._audit_pix(uow, caller, query, source, None, "not-found", 0)
                await uow.commit()
                raise pix.source_not_found()
            views = await self._patient_views(uow, person_id, caller)
            identifiers = patient_identifiers(views, viewer=caller.hospital)
            try:
                answer = pix.answer(
                    query,
                    source,
                    identifiers,
                    person_id=person_id,
                    hospital=caller.hospital,
                    registry=self._identifiers,
                )
            except Refused:
                await self._audit_pix(uow, caller, query, source, person_id, "target-unknown", 0)
                await uow.commit()
                raise
            returned = sum(1 for p in answer["parameter"] if p["name"] == "targetIdentifier")
            await self._audit_pix(uow, caller, query, source, person_id, "found", returned)
            await uow.commit()
        return answer

    async def match(self, caller: Reader, body: object, *, base: str) -> dict[str, Any]:
        """Patient/$match: the people the Patient's identifiers and demographics lead to
        (broker.fhir.pdq decides; the blocks and sealed records are read here).

        One audit entry per person returned (IHE BALP: one patient per AuditEvent), or one
        naming the first identifier given when nobody is; no demographic is audited."""
        request = pdq.parse_match(body)
        given = pdq.normalised(request, hospital=caller.hospital, registry=self._identifiers)
        async with self._uow() as uow:
            found = [(ident, await uow.people.find(ident)) for ident in given]
        by_demographics: list[pdq.Match] = []
        blocked = False
        record = pdq.probe(request, given)
        if record is not None and self._demographics is not None:
            from broker.reference.matching_rules import shipped_matching_rules

            rules = shipped_matching_rules()
            keys = pdq.blocking_keys(record, rules)
            blocked = bool(keys)
            people = await self._demographics.blocked(keys, max_block_size=rules.max_block_size)
            by_demographics = pdq.score_people(record, people, rules)
        ranked = pdq.combine(pdq.grade(found), by_demographics)
        ranked = [m for m in ranked if not request.only_certain or m.grade == pdq.CERTAIN]
        for m in ranked[: pdq.MAX_COUNT * 2]:
            await self._reindex.person(m.person_id)
        entries: list[BundleEntry] = []
        async with self._uow() as uow:
            # People the caller's hospital may see no result of are not matches.
            seen = [
                m for m in ranked[: pdq.MAX_COUNT * 2] if await self._sees(uow, m.person_id, caller)
            ]
            matches = pdq.select(seen, request)
            for m in matches:
                patient = await self._pdq_patient(uow, m.person_id, caller)
                entries.append(BundleEntry(patient, "match", pdq.search_of(m)))
            detail = {
                "operation": "$match",
                "client": caller.client,
                "identifiers": len(given),
                "demographics": record is not None,
                "only_certain": request.only_certain,
                "returned": len(matches),
            }
            for m in matches:
                await self._audit(
                    uow,
                    caller,
                    "fhir-pdq-match",
                    _Patient(m.person_id, m.identifier),
                    {**detail, "grade": m.grade, "by": m.by, "score": m.score},
                )
            if not matches:
                first = given[0] if given else None
                await self._audit(uow, caller, "fhir-pdq-match", _Patient(None, first), detail)
            await uow.commit()
        if notes := pdq.warnings(request, blocked=blocked):
            outcome = operation_outcome(
                "informational", notes[0], severity="warning", more=notes[1:]
            )
            entries.append(BundleEntry(outcome, "outcome"))
        return searchset(
            base=base,
            total=len(matches),
            entries=entries,
            links={"self": f"{base}/Patient/$match"},
            now=datetime.now(UTC),
        )

    async def pdq_search(
        self, caller: Reader, pairs: Sequence[tuple[str, str]], *, strict: bool, base: str
    ) -> dict[str, Any]:
        """PDQm Patient search [ITI-78] by demographics (broker.fhir.pdq_search) for a
        registered machine client: blocks, sealed records, exact comparison; paged by
        sealed cursors (the search is run again and the page cut from it).

        One audit entry per person returned, or one when nobody is (the identifier given,
        pseudonymised; parameter names only, never their values). An unrecognised domain
        is 404 (pdq_search.DomainUnknown) after its audit entry is committed."""
        now = datetime.now(UTC)
        asked = resume(self._signer, pairs, "Patient", caller.actor, now)
        query = pdq_search.parse_query(asked.pairs, strict=strict and not asked.paged)
        offset = asked.offset
        named: list[str] = []
        ident: PatientIdentifier | None = None
        detail: dict[str, Any] = {
            "operation": "search-type",
            "transaction": "ITI-78",
            "client": caller.client,
            "parameters": list(query.parameters),
            "offset": offset,
        }
        if query.identifier is not None:
            system, value = query.identifier
            try:
                ident = self._identifiers.lookup(system, value, hospital=caller.hospital)
            except InvalidIdentifier as exc:
                raise invalid(f"identifier is not valid: {exc}") from None
            async with self._uow() as uow:
                person_id = await uow.people.find(ident) if ident is not None else None
                if person_id is None and not self._known_system(system, caller):
                    # ITI-78 Case 4: a domain mrb does not recognise (and nobody found in it).
                    unknown = {**detail, "outcome": "domain-unknown", "total": 0, "returned": 0}
                    await self._audit(uow, caller, "fhir-pdq-query", _Patient(None, ident), unknown)
                    await uow.commit()
                    raise pdq_search.DomainUnknown(system)
            named.append(person_id or "")
        if query.person_id is not None:
            async with self._uow() as uow:
                record = await uow.index.person(query.person_id[:64])
            named.append((record.merged_into or record.person_id) if record else "")
        people: set[str] = set()
        if named:
            people = set(named) if len(set(named)) == 1 and named[0] else set()
            if people and query.demographic:
                if self._demographics is None:  # nothing to check the demographics against
                    raise invalid("mrb cannot compare demographics here: no records store")
                records = await self._demographics.of_people(people)
                people = {
                    p
                    for p in people
                    if any(pdq_search.fits(query, d) for _, d in records.get(p, ()))
                }
        elif self._demographics is not None:
            from broker.domain import matching
            from broker.reference.matching_rules import shipped_matching_rules

            rules = shipped_matching_rules()
            keys = matching.blocking_keys(
                matching.prepare(pdq_search.probe(query), rules), rules.blocking
            )
            records = await self._demographics.blocked(keys, max_block_size=rules.max_block_size)
            people = {
                p for p, rs in records.items() if any(pdq_search.fits(query, d) for _, d in rs)
            }
        if query.active is False:
            people = set()  # mrb answers with surviving (active) people only
        checked = sorted(people)[: pdq_search.MAX_MATCHES]
        for pid in checked:
            await self._reindex.person(pid)
        entries: list[BundleEntry] = []
        async with self._uow() as uow:
            seen = [p for p in checked if await self._sees(uow, p, caller)]
            returned = seen[offset : offset + query.count]
            patients = [await self._pdq_patient(uow, pid, caller) for pid in returned]
            detail |= {"total": len(seen), "returned": len(returned)}
            unknown_domains = [
                d for d in query.domains if not self._known_system(d, caller, patients)
            ]
            if unknown_domains:
                detail |= {"outcome": "domain-unknown", "returned": 0}
                await self._audit(uow, caller, "fhir-pdq-query", _Patient(None, ident), detail)
                await uow.commit()
                raise pdq_search.DomainUnknown(unknown_domains[0])
            for pid in returned:
                await self._audit(uow, caller, "fhir-pdq-query", _Patient(pid, ident), detail)
            if not returned:
                await self._audit(uow, caller, "fhir-pdq-query", _Patient(None, ident), detail)
            await uow.commit()
        for patient in patients:
            if query.domains:
                self._only_domains(patient, query.domains, caller)
            entries.append(BundleEntry(patient, "match"))
        entries += ignored_outcome(query.ignored)
        if len(people) > len(checked):
            more = (
                f"more than {pdq_search.MAX_MATCHES} people matched: total counts the first "
                f"{pdq_search.MAX_MATCHES} checked; narrow the search"
            )
            entries.append(
                BundleEntry(operation_outcome("too-costly", more, severity="warning"), "outcome")
            )
        search = tuple(
            (k, v) for k, v in asked.pairs if k.partition(":")[0] not in pdq_search.PAGING
        )
        links = page_links(
            self._signer,
            Page("Patient", search, offset, query.count),
            total=len(seen),
            summary_count=False,
            actor=caller.actor,
            base=base,
            now=now,
            sealed=True,
        )
        return searchset(base=base, total=len(seen), entries=entries, links=links, now=now)

    def _known_system(
        self, system: str, caller: Reader, patients: Sequence[dict[str, Any]] = ()
    ) -> bool:
        """A domain mrb recognises for this client: one its identifier registry knows (the
        client hospital's own spellings included), or the system of an identifier of a
        Patient answered (mrb keeps no list of the local systems hospitals use)."""
        if self._identifiers.system_for(system, hospital=caller.hospital) is not None:
            return True
        return any(
            isinstance(i, dict) and i.get("system") == system
            for p in patients
            for i in p.get("identifier") or []
        )

    def _only_domains(
        self, patient: dict[str, Any], domains: Sequence[str], caller: Reader
    ) -> None:
        """ITI-78 Case 2: only the identifiers of the domains asked for."""

        def canonical(system: object) -> str:
            text = system if isinstance(system, str) else ""
            known = self._identifiers.system_for(text, hospital=caller.hospital)
            return known.uri if known is not None else text.strip()

        wanted = {canonical(d) for d in domains}
        kept = [
            i
            for i in patient.get("identifier") or []
            if isinstance(i, dict) and canonical(i.get("system")) in wanted
        ]
        if kept:
            patient["identifier"] = kept
        else:
            patient.pop("identifier", None)

    async def _pdq_patient(
        self, uow: FhirUnitOfWork, person_id: str, caller: Reader
    ) -> dict[str, Any]:
        """The Patient a PDQm client receives (broker.fhir.pdq.patient_for)."""
        views = await self._patient_views(uow, person_id, caller)
        return pdq.patient_for(views, person_id, hospital=caller.hospital)

    async def _audit_pix(
        self,
        uow: FhirUnitOfWork,
        caller: Reader,
        query: PixQuery,
        source: PatientIdentifier,
        person_id: str | None,
        outcome: str,
        returned: int,
    ) -> None:
        await self._audit(
            uow,
            caller,
            "fhir-pix-query",
            _Patient(person_id, source),
            {
                "operation": "$ihe-pix",
                "client": caller.client,
                "parameters": ["sourceIdentifier"] + (["targetSystem"] if query.targets else []),
                "outcome": outcome,
                "returned": returned,
            },
        )

    # -- search -------------------------------------------------------------------------

    async def search(
        self,
        caller: Reader,
        resource_type: str,
        pairs: Sequence[tuple[str, str]],
        *,
        strict: bool,
        base: str,
    ) -> dict[str, Any]:
        if resource_type == CONSENT and self._consent_records is not None:
            return await self._consent_search(caller, pairs, base)
        _check_type(resource_type)
        if resource_type in READ_ONLY_TYPES:
            raise not_found(
                f"{resource_type} is read by id only (the reference an ImagingStudy gives, "
                "or _include=ImagingStudy:endpoint on an ImagingStudy search)"
            )
        now = datetime.now(UTC)
        asked = resume(self._signer, pairs, resource_type, caller.actor, now)
        offset = asked.offset
        search = parse_search(
            resource_type, asked.pairs, strict=strict and not asked.paged, zone=self._zone, now=now
        )
        patient = await self._resolve(search, caller.actor)
        if not asked.paged:  # a paging link goes on with a patient already counted
            await self._admission.admit(
                caller.actor, patient=patient.identifier, person_id=search.patient.person_id
            )
        entries: list[BundleEntry] = []
        total = 0
        if patient.person_id is not None:
            await self._reindex.person(patient.person_id)
        shown = patient  # what the answer may tell of the patient
        async with self._uow() as uow:
            viewer = await self._viewer(uow, caller, patient.person_id)
            if patient.person_id is not None and not await self._sees(
                uow, patient.person_id, caller
            ):
                # Known only through other hospitals' sensitive results: to this caller the
                # patient is unknown, and the answer (total, links) says so.
                shown = _Patient(None, patient.identifier)
            if shown.person_id is not None:
                if resource_type == "Patient":
                    total = 1
                    if offset == 0 and search.count > 0 and not search.summary_count:
                        resource = await self._patient(uow, shown.person_id, caller)
                        entries.append(BundleEntry(resource, "match"))
                else:
                    total = await uow.index.count(search, shown.person_id, viewer=viewer)
                    if search.count > 0 and not search.summary_count:
                        hits = await uow.index.page(
                            search, shown.person_id, offset, search.count, viewer=viewer
                        )
                        entries = await self._entries(uow, hits, search, caller.hospital)
            await self._audit(
                uow,
                caller,
                "fhir-search",
                patient,
                {
                    "resource_type": resource_type,
                    "parameters": sorted({k for k, _ in asked.pairs if k != "_cursor"}),
                    "offset": offset,
                    "total": total,
                    "returned": sum(1 for e in entries if e.mode == "match"),
                },
            )
            await uow.commit()
        _broke_glass(caller)
        entries += ignored_outcome(search.ignored)
        links = self._links(search, shown, caller.actor, offset, total, base, now)
        return searchset(base=base, total=total, entries=entries, links=links, now=now)

    async def _entries(
        self, uow: FhirUnitOfWork, hits: list[Hit], search: Search, viewer: str
    ) -> list[BundleEntry]:
        opened = await uow.payloads.open(h.version_id for h in hits)
        entries: list[BundleEntry] = []
        included: set[str] = set()
        matched = {h.served_id for h in hits}
        for h in hits:
            view = opened.views.get(h.version_id)
            found = view.get(h.served_id) if view else None
            if view is None or found is None:
                continue  # purged, or the index row went stale between the query and now
            resource = view.render(found, viewer=viewer)
            entries.append(BundleEntry(resource, "match"))
            if search.include_results:
                element, target_type = INCLUDE_PATHS[INCLUDES[search.resource_type][0]]
                refs = list(resource.get(element) or [])
                for series in resource.get("series") or [] if element == "endpoint" else []:
                    refs += series.get(element) or [] if isinstance(series, dict) else []
                for ref in refs:
                    target = ref.get("reference") if isinstance(ref, dict) else None
                    if not isinstance(target, str) or not target.startswith(f"{target_type}/"):
                        continue
                    oid = target.removeprefix(f"{target_type}/")
                    member = view.get(oid)
                    if member is None or oid in included or oid in matched:
                        continue
                    included.add(oid)
                    entries.append(BundleEntry(view.render(member, viewer=viewer), "include"))
        if left_out := sum(1 for h in hits if h.version_id in opened.purged):
            text = f"{left_out} matching resource(s) not returned: {PURGED_TEXT}"
            entries.append(
                BundleEntry(operation_outcome("deleted", text, severity="warning"), "outcome")
            )
        return entries

    async def _patient(self, uow: FhirUnitOfWork, person_id: str, caller: Reader) -> dict[str, Any]:
        """One Patient from the newest payload of each hospital that sent one (of the results
        the caller may see), with the identifiers the caller's hospital may see."""
        resource = merge_patients(
            await self._patient_views(uow, person_id, caller), person_id, viewer=caller.hospital
        )
        if "meta" not in resource:
            resource["meta"] = {"lastUpdated": instant(datetime.now(UTC))}
        return resource

    async def _sees(self, uow: FhirUnitOfWork, person_id: str, caller: Reader) -> bool:
        """Whether the caller may see any of the person's results (else: unknown to them)."""
        return await uow.index.sees(person_id, viewer=await self._viewer(uow, caller, person_id))

    async def _patient_views(
        self, uow: FhirUnitOfWork, person_id: str, caller: Reader
    ) -> list[ResultView]:
        """The newest payload of each hospital that sent a Patient, newest first, among the
        results the caller may see (none: the person is unknown to the caller)."""
        versions = await uow.index.patient_versions(
            person_id, viewer=await self._viewer(uow, caller, person_id)
        )
        views = (await uow.payloads.open(versions)).views
        return sorted(
            (views[v] for v in versions if v in views),
            key=lambda v: v.info.updated_at,
            reverse=True,
        )

    async def _resolve(self, search: Search, actor: Actor) -> _Patient:
        sel = search.patient
        async with self._uow() as uow:
            if sel.identifier is not None:
                system, value = sel.identifier
                try:
                    ident = self._identifiers.lookup(system, value, hospital=actor.hospital)
                except InvalidIdentifier as exc:
                    raise invalid(f"the patient identifier is not valid: {exc}") from None
                if ident is None:
                    raise invalid("the patient identifier has no value")
                return _Patient(await uow.people.find(ident), ident)
            record = await uow.index.person(sel.person_id) if sel.person_id else None
        if record is None:
            return _Patient(None, None)
        return _Patient(record.merged_into or record.person_id, None)

    def _links(
        self,
        search: Search,
        patient: _Patient,
        actor: Actor,
        offset: int,
        total: int,
        base: str,
        now: datetime,
    ) -> dict[str, str]:
        pid = patient.person_id or "-"  # an unknown patient pages through nothing
        who = ("_id", pid) if search.resource_type == "Patient" else ("patient", f"Patient/{pid}")
        return page_links(
            self._signer,
            Page(search.resource_type, (*search.canonical, who), offset, search.count),
            total=total,
            summary_count=search.summary_count,
            actor=actor,
            base=base,
            now=now,
        )

    @staticmethod
    async def _audit(
        uow: FhirUnitOfWork,
        caller: Reader,
        action: str,
        patient: _Patient,
        detail: dict[str, Any],
    ) -> None:
        await uow.audit.record_read(
            caller.actor,
            action=action,
            purpose=caller.purpose,
            patient=patient.identifier,
            person_id=patient.person_id,
            detail=_glass(caller, detail),
        )


def _broke_glass(caller: Reader) -> None:
    if caller.break_glass_reason is not None:
        note_break_glass(caller.actor, "fhir")


def _consent_params(
    pairs: Sequence[tuple[str, str]],
) -> tuple[tuple[str, str] | None, str | None, str | None]:
    """Consent search: `patient` (Patient/{id} or {id}) or `patient:identifier`
    (system|value), and `status`; exactly one patient."""
    identifier: tuple[str, str] | None = None
    person_id: str | None = None
    status: str | None = None
    for key, value in pairs:
        if key in ("patient", "subject"):
            person_id = value.removeprefix("Patient/").strip()[:64] or None
        elif key in ("patient:identifier", "patient.identifier", "subject:identifier"):
            system, bar, code = value.partition("|")
            if not bar or not code:
                raise invalid("patient:identifier takes system|value")
            identifier = (system, code)
        elif key == "status":
            if value not in ("active", "inactive"):
                raise invalid("status is active or inactive")
            status = value
        elif key not in ("_count", "_format", "_summary"):
            raise invalid(
                f"Consent search takes patient, patient:identifier and status, not {key[:40]!r}"
            )
    if (identifier is None) == (person_id is None):
        raise invalid("Consent search names one patient: patient or patient:identifier")
    return identifier, person_id, status


def _glass(caller: Reader, detail: dict[str, Any]) -> dict[str, Any]:
    """The audit detail, with the reason when the read broke the glass."""
    if caller.break_glass_reason is None:
        return detail
    return {**detail, "break_glass_reason": caller.break_glass_reason}


def _check_type(resource_type: str) -> None:
    if resource_type not in RESOURCE_TYPES:
        raise not_found(
            f"mrb serves no {resource_type[:40]!r} resources: it serves "
            + ", ".join(RESOURCE_TYPES)
        )
