"""The patient's access report on SQLAlchemy (port in broker/ports/access_report.py).

The audit trail has no index on the person or the pseudonym: entries are found by time
first (`at` bounds the scan to the period asked), then by whom they name.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from sqlalchemy import or_, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from broker.domain.check_items import stored_items
from broker.domain.identifiers import PatientIdentifier
from broker.ports import access_report as ports
from broker.security.pseudonyms import Pseudonymiser
from broker.storage.check_uow import SqlAudit
from broker.storage.fhir_tables import fhir_resource
from broker.storage.people import People, with_merged
from broker.storage.tables import (
    audit_event,
    hospital,
    ledger_entry,
    notification,
    person_link,
    recognition_check,
    recognition_outcome,
    result,
)
from broker.storage.unit_of_work import SqlUnitOfWork
from broker.storage.write_batch import Writes

# Bound parameters per IN list: well under SQLite's 32,766 and PostgreSQL's 65,535.
_CHUNK = 500


def _chunks(values: Iterable[str]) -> list[list[str]]:
    unique = sorted(set(values))
    return [unique[i : i + _CHUNK] for i in range(0, len(unique), _CHUNK)]


class SqlAccessRecords(ports.AccessRecords):
    def __init__(self, session: AsyncSession, pseudonyms: Pseudonymiser) -> None:
        self._session = session
        self._pseudonyms = pseudonyms
        self._people = People(session, pseudonyms)

    def pseudonym_of(self, identifier: PatientIdentifier) -> str:
        return self._pseudonyms.of(identifier)

    async def find_person(self, identifier: PatientIdentifier) -> str | None:
        return await self._people.find(identifier)

    async def merged_people(self, person_id: str) -> list[str]:
        rows = await self._session.execute(with_merged(person_id))
        return sorted({str(r[0]) for r in rows})

    async def linked_pseudonyms(self, people: Iterable[str]) -> set[str]:
        found: set[str] = set()
        for chunk in _chunks(people):
            query = select(person_link.c.pseudonym).where(person_link.c.person_id.in_(chunk))
            found.update(str(p) for p in (await self._session.execute(query)).scalars())
        return found

    async def reads(
        self,
        people: Iterable[str],
        pseudonyms: Iterable[str],
        start: datetime,
        end: datetime,
    ) -> list[ports.AuditedRead]:
        t = audit_event.c
        whom = [
            *(t.person_id.in_(c) for c in _chunks(people)),
            *(t.patient_pseudonym.in_(c) for c in _chunks(pseudonyms)),
        ]
        if not whom:
            return []
        query = (
            select(audit_event).where(t.at >= start, t.at < end, or_(*whom)).order_by(t.at, t.id)
        )
        return [
            ports.AuditedRead(
                id=r.id,
                at=r.at,
                actor=r.actor,
                role=r.role,
                hospital_id=r.hospital_id,
                action=r.action,
                purpose=r.purpose,
                patient_pseudonym=r.patient_pseudonym,
                person_id=r.person_id,
                detail=r.detail if isinstance(r.detail, dict) else {},
                request_id=r.request_id,
                seq=r.seq,
                hash=r.hash,
            )
            for r in await self._session.execute(query)
        ]

    async def checks(self, check_ids: Iterable[str]) -> list[ports.CheckedItems]:
        t = recognition_check.c
        found = []
        for chunk in _chunks(check_ids):
            items = t["items"]  # `t.items` is the column collection's own method
            query = select(t.id, t.created_at, t.ordering_hospital, items).where(t.id.in_(chunk))
            for r in await self._session.execute(query):
                stored = tuple(stored_items(r[3]))
                found.append(ports.CheckedItems(r.id, r.created_at, r.ordering_hospital, stored))
        return found

    async def outcomes(self, check_ids: Iterable[str]) -> list[ports.ItemOutcome]:
        o, le = recognition_outcome.c, ledger_entry.c
        found = []
        for chunk in _chunks(check_ids):
            reversed_ = {
                (r.check_id, r.item_index)
                for r in await self._session.execute(
                    select(le.check_id, le.item_index).where(
                        le.check_id.in_(chunk), le.kind == "reversal"
                    )
                )
            }
            query = select(o.check_id, o.item_index, o.outcome, o.reason, o.recorded_at).where(
                o.check_id.in_(chunk)
            )
            for r in await self._session.execute(query):
                found.append(
                    ports.ItemOutcome(
                        r.check_id,
                        r.item_index,
                        r.outcome,
                        r.reason,
                        r.recorded_at,
                        reversed=(r.check_id, r.item_index) in reversed_,
                    )
                )
        return found

    async def served_results(self, references: Iterable[str]) -> dict[str, str]:
        wanted: dict[str, str] = {}  # served id -> reference
        for ref in references:
            kind, _, rid = ref.partition("/")
            if kind and rid:
                wanted[rid] = ref
        found: dict[str, str] = {}
        t = fhir_resource.c
        for chunk in _chunks(wanted):
            query = select(t.id, t.resource_type, t.result_id).where(t.id.in_(chunk))
            for r in await self._session.execute(query):
                ref = wanted[r.id]
                if ref == f"{r.resource_type}/{r.id}":
                    found[ref] = str(r.result_id)
        return found

    async def notice_results(self, notice_ids: Iterable[str]) -> dict[str, str]:
        t = notification.c
        found: dict[str, str] = {}
        for chunk in _chunks(notice_ids):
            query = select(t.notice_id, t.result_id).where(t.notice_id.in_(chunk))
            found.update({r.notice_id: r.result_id for r in await self._session.execute(query)})
        return found

    async def results(self, result_ids: Iterable[str]) -> dict[str, ports.ResultInfo]:
        t = result.c
        found: dict[str, ports.ResultInfo] = {}
        for chunk in _chunks(result_ids):
            query = select(t.id, t.hospital_id, t.resource_type, t.effective).where(t.id.in_(chunk))
            for r in await self._session.execute(query):
                found[r.id] = ports.ResultInfo(r.id, r.hospital_id, r.resource_type, r.effective)
        return found

    async def hospital_names(self) -> dict[str, str]:
        rows = await self._session.execute(select(hospital.c.id, hospital.c.name))
        return {r.id: r.name for r in rows}


class SqlAccessReportUnitOfWork(SqlUnitOfWork, ports.AccessReportUnitOfWork):
    def __init__(
        self, sessions: async_sessionmaker[AsyncSession], pseudonyms: Pseudonymiser
    ) -> None:
        super().__init__(sessions)
        self._pseudonyms = pseudonyms

    def _bind(self, session: AsyncSession) -> None:
        self.records = SqlAccessRecords(session, self._pseudonyms)
        self.audit = SqlAudit(Writes(session), self._pseudonyms)
