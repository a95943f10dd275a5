"""FHIR read and search: who may, which patient, what matches, what is audited."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from broker.bootstrap import Container
from broker.domain.actors import Actor, Role
from broker.domain.identifiers import InvalidIdentifier, normalise
from broker.fhir import index, query
from broker.fhir.cursors import CursorSigner, Page, page_links
from broker.fhir.documents import BundleEntry, capability_statement, operation_outcome, searchset
from broker.fhir.errors import FhirError, forbidden, invalid, not_found
from broker.fhir.params import PARAMS, WITHDRAWN, Search, parse_search
from broker.fhir.resources import ResultView, instant, merge_patients
from broker.security.keys import MissingKey, load_key
from broker.services.audit import record_read
from broker.services.rate_limits import RateLimited, admit
from broker.storage.fhir_tables import fhir_resource
from broker.storage.people import People
from broker.storage.tables import person, result

RESOURCE_TYPES = tuple(PARAMS)
CURSOR_KEY_FILE = "fhir-cursor.key"
# HL7 v3 PurposeOfUse codes a doctor may state (header X-Purpose-Of-Use) -> audit purpose.
PURPOSES = {
    "TREAT": "treatment",
    "ETREAT": "emergency-treatment",
    "CAREMGT": "care-management",
    "PATRQT": "patient-request",
}
_PAGING_EXTRAS = frozenset({"_format", "_pretty"})
PURGED_TEXT = (
    "the payload it is read from was purged under the retention policy "
    "(MRB_PAYLOAD_RETENTION_DAYS); recognition checks still use the result's index entry"
)


@dataclass(frozen=True)
class Caller:
    actor: Actor
    purpose: str  # the audit purpose


@dataclass(frozen=True)
class _Patient:
    person_id: str | None  # the surviving person, if known
    pseudonym: str | None  # when named by identifier


class FhirService:
    """The `/fhir` use cases over one container's database and keys."""

    def __init__(self, container: Container, *, version: str = "0.1.0") -> None:
        self._c = container
        self._signer = CursorSigner(cursor_key(container))
        self._version = version
        self._zone = ZoneInfo(container.settings.default_timezone)

    def _identifier(self, value: str) -> str:
        """Identifier tokens are found by a keyed hash: the index never holds the value."""
        return self._c.pseudonyms.of_text(index.IDENTIFIER_DOMAIN, value)

    def capabilities(self, base: str) -> dict[str, Any]:
        return capability_statement(base, datetime.now(UTC), self._version)

    @staticmethod
    def caller(actor: Actor, purpose_header: str | None) -> Caller:
        """The caller if they may read patient data (doctors only), with their purpose."""
        if actor.role is not Role.DOCTOR:
            raise forbidden(
                f"FHIR reads of patient data need a doctor token; this token's role is "
                f"{actor.role.value}"
            )
        code = (purpose_header or "TREAT").strip().upper()
        if code not in PURPOSES:
            raise invalid(
                f"X-Purpose-Of-Use {code[:20]!r} is not accepted: use one of " + ", ".join(PURPOSES)
            )
        return Caller(actor, PURPOSES[code])

    # -- read ---------------------------------------------------------------------------

    async def read(self, caller: Caller, resource_type: str, rid: str) -> dict[str, Any]:
        _check_type(resource_type)
        if resource_type == "Patient":
            return await self._read_patient(caller, rid)
        sessions, cipher = self._c.sessions, self._c.cipher
        async with sessions() as s:
            row = (await s.execute(_resource_row(rid, resource_type))).first()
            result_id = row.result_id if row is not None else None
            if result_id is None:  # a result id not indexed yet (or never searched)
                main = (
                    await s.execute(
                        select(result.c.id).where(
                            result.c.id == rid, result.c.resource_type == resource_type
                        )
                    )
                ).first()
                result_id = main.id if main is not None else None
        if result_id is None:
            raise not_found(f"no {resource_type} with this id is known to mrb")
        await index.refresh_results(sessions, cipher, [result_id], identifiers=self._identifier)
        async with sessions() as s, s.begin():
            row = (await s.execute(_resource_row(rid, resource_type))).first()
            if row is None:
                raise not_found(f"{resource_type}/{rid} is not in the current version")
            views = await index.load_views(s, cipher, [row.version_id])
            view = views.get(row.version_id)  # None: its payload was purged
            found = view.get(rid) if view is not None else None
            if view is not None and found is None:
                raise not_found(f"{resource_type}/{rid} is not in the current version")
            gone = row.status == WITHDRAWN
            await record_read(
                s,
                caller.actor,
                action="fhir-read",
                purpose=caller.purpose,
                patient_pseudonym=None,
                person_id=row.person_id,
                detail={
                    "resource": f"{resource_type}/{rid}",
                    "outcome": "purged" if view is None else "gone" if gone else "read",
                },
            )
        if view is None or found is None:
            raise FhirError(410, "deleted", f"{resource_type}/{rid}: {PURGED_TEXT}")
        if gone:
            raise FhirError(
                410,
                "deleted",
                f"{resource_type}/{rid} was marked entered-in-error by {view.info.hospital}: "
                "it was withdrawn and must not be used",
            )
        return view.render(found)

    async def _read_patient(self, caller: Caller, pid: str) -> dict[str, Any]:
        async with self._c.sessions() as s:
            row = (
                await s.execute(select(person.c.id, person.c.merged_into).where(person.c.id == pid))
            ).first()
        if row is None:
            raise not_found("no Patient with this id is known to mrb")
        async with self._c.sessions() as s, s.begin():
            if row.merged_into:
                await self._audit(s, caller, "fhir-read", _Patient(pid, None), {"merged": True})
                return {
                    "resourceType": "Patient",
                    "id": pid,
                    "active": False,
                    "link": [
                        {
                            "other": {"reference": f"Patient/{row.merged_into}"},
                            "type": "replaced-by",
                        }
                    ],
                }
        await index.refresh_person(
            self._c.sessions, self._c.cipher, pid, identifiers=self._identifier
        )
        async with self._c.sessions() as s, s.begin():
            resource = await self._patient(s, pid)
            await self._audit(s, caller, "fhir-read", _Patient(pid, None), {"resource": "Patient"})
        return resource

    # -- search -------------------------------------------------------------------------

    async def search(
        self,
        caller: Caller,
        resource_type: str,
        pairs: Sequence[tuple[str, str]],
        *,
        strict: bool,
        base: str,
    ) -> dict[str, Any]:
        _check_type(resource_type)
        now = datetime.now(UTC)
        offset = 0
        cursors = [v for k, v in pairs if k == "_cursor"]
        if cursors:
            others = [k for k, _ in pairs if k != "_cursor" and k not in _PAGING_EXTRAS]
            if len(cursors) > 1 or others:
                raise invalid(
                    "a paging link carries its whole search: send it as given, without "
                    f"other parameters ({', '.join(others) or '_cursor twice'})"
                )
            page = self._signer.open(cursors[0], resource_type, caller.actor, now)
            pairs = [*page.params, ("_count", str(page.count))]
            offset, strict = page.offset, False
        search = parse_search(resource_type, pairs, strict=strict, zone=self._zone, now=now)
        search = _hashed_identifiers(search, self._identifier)
        patient = await self._resolve(search, caller.actor)
        if not cursors:  # a paging link goes on with a patient already counted
            await self._admit(caller, search, patient)
        entries: list[BundleEntry] = []
        total = 0
        if patient.person_id is not None:
            await index.refresh_person(
                self._c.sessions, self._c.cipher, patient.person_id, identifiers=self._identifier
            )
        async with self._c.sessions() as s, s.begin():
            if patient.person_id is not None:
                if resource_type == "Patient":
                    total = 1
                    if offset == 0 and search.count > 0 and not search.summary_count:
                        resource = await self._patient(s, patient.person_id)
                        entries.append(BundleEntry(resource, "match"))
                else:
                    total = await query.count(s, search, patient.person_id)
                    if search.count > 0 and not search.summary_count:
                        hits = await query.page(s, search, patient.person_id, offset, search.count)
                        entries = await self._entries(s, hits, search)
            await self._audit(
                s,
                caller,
                "fhir-search",
                patient,
                {
                    "resource_type": resource_type,
                    "parameters": sorted({k for k, _ in pairs if k != "_cursor"}),
                    "offset": offset,
                    "total": total,
                    "returned": sum(1 for e in entries if e.mode == "match"),
                },
            )
        if search.ignored:
            entries.append(
                BundleEntry(
                    operation_outcome(
                        "not-supported",
                        search.ignored[0] + "; ignored",
                        severity="warning",
                        more=[m + "; ignored" for m in search.ignored[1:]],
                    ),
                    "outcome",
                )
            )
        links = self._links(search, patient, caller.actor, offset, total, base, now)
        return searchset(base=base, total=total, entries=entries, links=links, now=now)

    async def _entries(
        self, s: AsyncSession, hits: list[query.Hit], search: Search
    ) -> list[BundleEntry]:
        purged: set[int] = set()
        views = await index.load_views(
            s, self._c.cipher, [h.version_id for h in hits], purged=purged
        )
        entries: list[BundleEntry] = []
        included: set[str] = set()
        matched = {h.served_id for h in hits}
        for h in hits:
            view = views.get(h.version_id)
            found = view.get(h.served_id) if view else None
            if view is None or found is None:
                continue  # the index row went stale between the query and now
            resource = view.render(found)
            entries.append(BundleEntry(resource, "match"))
            if search.include_results:
                for ref in resource.get("result") or []:
                    target = ref.get("reference") if isinstance(ref, dict) else None
                    if not isinstance(target, str) or not target.startswith("Observation/"):
                        continue
                    oid = target.removeprefix("Observation/")
                    member = view.get(oid)
                    if member is None or oid in included or oid in matched:
                        continue
                    included.add(oid)
                    entries.append(BundleEntry(view.render(member), "include"))
        if left_out := sum(1 for h in hits if h.version_id in purged):
            text = f"{left_out} matching resource(s) not returned: {PURGED_TEXT}"
            entries.append(
                BundleEntry(operation_outcome("deleted", text, severity="warning"), "outcome")
            )
        return entries

    async def _patient(self, s: AsyncSession, person_id: str) -> dict[str, Any]:
        """One Patient from the newest payload of each hospital that sent one."""
        rows = (
            await s.execute(
                select(fhir_resource.c.version_id, fhir_resource.c.entry, result.c.hospital_id)
                .join(result, result.c.id == fhir_resource.c.result_id)
                .where(result.c.person_id == person_id, fhir_resource.c.resource_type == "Patient")
                .order_by(
                    fhir_resource.c.entry.is_(None),
                    result.c.updated_at.desc(),
                    fhir_resource.c.id,
                )
            )
        ).all()
        newest: dict[str, int] = {}
        for r in rows:
            newest.setdefault(r.hospital_id, r.version_id)
        versions = list(newest.values())
        views = await index.load_views(s, self._c.cipher, versions)
        ordered: list[ResultView] = sorted(
            (views[v] for v in versions if v in views),
            key=lambda v: v.info.updated_at,
            reverse=True,
        )
        resource = merge_patients(ordered, person_id)
        if not ordered:
            resource["meta"] = {"lastUpdated": instant(datetime.now(UTC))}
        return resource

    async def _resolve(self, search: Search, actor: Actor) -> _Patient:
        sel = search.patient
        async with self._c.sessions() as s:
            if sel.identifier is not None:
                system, value = sel.identifier
                try:
                    ident = normalise(system, value, hospital=actor.hospital)
                except InvalidIdentifier as exc:
                    raise invalid(f"the patient identifier is not valid: {exc}") from None
                if ident is None:
                    raise invalid("the patient identifier has no value")
                found = await People(s, self._c.pseudonyms).find(ident)
                return _Patient(found, self._c.pseudonyms.of(ident))
            row = (
                await s.execute(
                    select(person.c.id, person.c.merged_into).where(person.c.id == sel.person_id)
                )
            ).first()
        if row is None:
            return _Patient(None, None)
        return _Patient(str(row.merged_into or row.id), None)

    async def _admit(self, caller: Caller, search: Search, patient: _Patient) -> None:
        """The distinct-patient rate limit: the pseudonym of the identifier searched, or
        the person id asked for (429 "throttled" over the limit)."""
        key = patient.pseudonym
        if key is None and search.patient.person_id:
            key = f"person:{search.patient.person_id}"
        try:
            await admit(
                self._c.rate_limiter(),
                self._c.sessions,
                caller.actor,
                patients=[key] if key else [],
                emergency=False,
                channel="fhir",
            )
        except RateLimited as exc:
            raise FhirError(429, "throttled", exc.detail) from None

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

    async def _audit(
        self,
        s: AsyncSession,
        caller: Caller,
        action: str,
        patient: _Patient,
        detail: dict[str, Any],
    ) -> None:
        await record_read(
            s,
            caller.actor,
            action=action,
            purpose=caller.purpose,
            patient_pseudonym=patient.pseudonym,
            person_id=patient.person_id,
            detail=detail,
        )


def cursor_key(container: Container) -> bytes:
    """The paging-cursor key: keys/fhir-cursor.key, created like the other keys.

    Where keys may not be created here (PostgreSQL: processes share keys made once by
    `mrb keys init`) and the file is missing, a key derived from the shared pseudonym
    key is used, so every API process still signs and accepts the same cursors.
    """
    settings = container.settings
    try:
        return load_key(settings.keys_dir / CURSOR_KEY_FILE, create=settings.may_create_keys)
    except MissingKey:
        shared = load_key(settings.keys_dir / "pseudonym.key", create=False)
        return hmac.new(shared, b"mrb fhir paging cursors", hashlib.sha256).digest()


def _check_type(resource_type: str) -> None:
    if resource_type not in RESOURCE_TYPES:
        raise not_found(
            f"mrb serves no {resource_type[:40]!r} resources: it serves "
            + ", ".join(RESOURCE_TYPES)
        )


def _resource_row(rid: str, resource_type: str) -> Any:
    return (
        select(
            fhir_resource.c.result_id,
            fhir_resource.c.version_id,
            fhir_resource.c.status,
            result.c.person_id,
        )
        .join(result, result.c.id == fhir_resource.c.result_id)
        .where(fhir_resource.c.id == rid, fhir_resource.c.resource_type == resource_type)
    )


def _hashed_identifiers(search: Search, key: index.IdentifierKey) -> Search:
    """The search with its identifier values replaced by their keyed hashes (as indexed)."""
    tokens = tuple(
        replace(
            tf,
            tokens=tuple(
                replace(t, code=key(t.code)) if t.code is not None else t for t in tf.tokens
            ),
        )
        if tf.target == "identifier"
        else tf
        for tf in search.tokens
    )
    return replace(search, tokens=tokens)
