"""The consent record on SQLAlchemy (ports in broker/ports/consent.py): the consent use
cases' unit of work, and the reader every read asks for a person's state."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import exists, or_, select, update
from sqlalchemy.engine import Row
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from broker.domain.actors import Actor
from broker.domain.consent import ConsentKind, ConsentRecord, ConsentView, view_of
from broker.domain.identifiers import PatientIdentifier
from broker.domain.purposes import BREAK_GLASS
from broker.ports import consent as ports
from broker.security.pseudonyms import Pseudonymiser
from broker.storage import audit_log
from broker.storage import people as people_store
from broker.storage.consent_tables import patient_consent
from broker.storage.tables import audit_event, person, result
from broker.storage.unit_of_work import SqlUnitOfWork


def _record(r: Row[Any]) -> ConsentRecord:
    return ConsentRecord(
        id=r.id,
        person_id=r.person_id,
        kind=ConsentKind(r.kind),
        category=r.category,
        recorded_by=r.recorded_by,
        recorded_hospital=r.recorded_hospital,
        recorded_at=r.recorded_at,
        evidence=r.evidence,
        expires_at=r.expires_at,
        recorded_role=r.recorded_role,
        withdrawn_at=r.withdrawn_at,
        withdrawn_by=r.withdrawn_by,
    )


async def person_records(session: AsyncSession, person_id: str) -> list[ConsentRecord]:
    """The person's records and those of people merged into them, oldest first."""
    rows = await session.execute(
        select(patient_consent)
        .where(patient_consent.c.person_id.in_(people_store.with_merged(person_id)))
        .order_by(patient_consent.c.recorded_at, patient_consent.c.id)
    )
    return [_record(r) for r in rows]


_merged = person.alias("merged")
_survivor = people_store.SURVIVOR
# The person an identifier names, and whether they (or anyone merged into them) have any
# consent record at all: most people have none, and then a check need not read them.
FIND_WITH_CONSENT_FLAG = people_store.FIND_BY_PSEUDONYM.add_columns(
    or_(
        exists().where(patient_consent.c.person_id == _survivor),
        exists().where(
            patient_consent.c.person_id == _merged.c.id, _merged.c.merged_into == _survivor
        ),
    ).label("has_records")
)


async def find_with_consent_flag(session: AsyncSession, pseudonym: str) -> tuple[str, bool] | None:
    """(the surviving person, whether any consent record exists for them), or None."""
    row = (await session.execute(FIND_WITH_CONSENT_FLAG, {"pseudonym": pseudonym})).first()
    if row is None:
        return None
    return str(row.merged_into or row.id), bool(row.has_records)


class SqlConsentRecords(ports.ConsentRecords):
    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def add(self, record: ConsentRecord) -> None:
        await self._session.execute(
            patient_consent.insert().values(
                id=record.id,
                person_id=record.person_id,
                kind=record.kind.value,
                category=record.category,
                recorded_by=record.recorded_by[:200],
                recorded_role=record.recorded_role,
                recorded_hospital=record.recorded_hospital,
                recorded_at=record.recorded_at,
                evidence=record.evidence,
                expires_at=record.expires_at,
            )
        )

    async def get(self, consent_id: str) -> ConsentRecord | None:
        row = (
            await self._session.execute(
                select(patient_consent).where(patient_consent.c.id == consent_id[:36])
            )
        ).first()
        return _record(row) if row is not None else None

    async def of_person(self, person_id: str) -> list[ConsentRecord]:
        return await person_records(self._session, person_id)

    async def withdraw(self, consent_id: str, by: str, at: datetime) -> None:
        await self._session.execute(
            update(patient_consent)
            .where(patient_consent.c.id == consent_id, patient_consent.c.withdrawn_at.is_(None))
            .values(withdrawn_at=at, withdrawn_by=by[:200])
        )


class SqlConsentPeople(ports.ConsentPeople):
    def __init__(self, session: AsyncSession, pseudonyms: Pseudonymiser) -> None:
        self._session = session
        self._people = people_store.People(session, pseudonyms)

    async def find(self, identifier: PatientIdentifier) -> str | None:
        return await self._people.find(identifier)

    async def survivor(self, person_id: str) -> str | None:
        row = (
            await self._session.execute(
                select(person.c.id, person.c.merged_into).where(person.c.id == person_id[:36])
            )
        ).first()
        return None if row is None else str(row.merged_into or row.id)

    async def has_records_at(self, person_id: str, hospital: str) -> bool:
        found = await self._session.scalar(
            select(
                exists().where(
                    result.c.person_id.in_(people_store.with_merged(person_id)),
                    result.c.hospital_id == hospital,
                )
            )
        )
        return bool(found)


class SqlConsentAudit(ports.ConsentAudit):
    def __init__(self, session: AsyncSession, pseudonyms: Pseudonymiser) -> None:
        self._session = session
        self._pseudonyms = pseudonyms

    async def record_read(
        self,
        actor: Actor,
        *,
        action: str,
        purpose: str,
        patient: PatientIdentifier | None,
        person_id: str | None,
        detail: dict[str, Any],
    ) -> None:
        await audit_log.record_read(
            self._session,
            actor,
            action=action,
            purpose=purpose,
            patient_pseudonym=self._pseudonyms.of(patient) if patient else None,
            person_id=person_id,
            detail=detail,
        )

    async def record_change(
        self, actor: Actor, *, action: str, person_id: str, detail: dict[str, Any]
    ) -> None:
        # A change to a patient's record is also a processing of their data: it names the
        # person, so that the patient's access report lists it.
        await audit_log.record_read(
            self._session,
            actor,
            action=action,
            purpose="patient-request",
            patient_pseudonym=None,
            person_id=person_id,
            detail={"hospital": actor.hospital, "token": actor.token_id, **detail},
        )

    async def break_glass(self, start: datetime, end: datetime) -> Sequence[ports.AuditRow]:
        t = audit_event.c
        rows = await self._session.execute(
            select(t.at, t.actor, t.role, t.hospital_id, t.action, t.purpose, t.person_id, t.detail)
            .where(t.purpose == BREAK_GLASS, t.at >= start, t.at < end)
            .order_by(t.at, t.id)
        )
        return [
            ports.AuditRow(
                r.at,
                r.actor,
                r.role,
                r.hospital_id,
                r.action,
                r.purpose,
                r.person_id,
                r.detail if isinstance(r.detail, dict) else {},
            )
            for r in rows
        ]


class SqlConsentUnitOfWork(SqlUnitOfWork, ports.ConsentUnitOfWork):
    def __init__(
        self, sessions: async_sessionmaker[AsyncSession], pseudonyms: Pseudonymiser
    ) -> None:
        super().__init__(sessions)
        self._pseudonyms = pseudonyms

    def _bind(self, session: AsyncSession) -> None:
        self.records = SqlConsentRecords(session)
        self.people = SqlConsentPeople(session, self._pseudonyms)
        self.audit = SqlConsentAudit(session, self._pseudonyms)


class SessionConsentReader(ports.ConsentReader):
    """The person's records read in a unit of work's own session (a check's): the same
    snapshot as its other reads, and no second connection per request."""

    def __init__(self, session: AsyncSession) -> None:
        self._session = session
        self.without_records: set[str] = set()  # people found to have none, this session

    async def view(self, person_id: str | None, now: datetime | None = None) -> ConsentView:
        records: Sequence[ConsentRecord] = ()
        if person_id and person_id not in self.without_records:
            records = await person_records(self._session, person_id)
        return view_of(records, now or datetime.now(UTC))


class SqlConsentReader(ports.ConsentReader):
    """Reads the person's records afresh for every request: a withdrawal or an expiry takes
    effect on the very next one (no cache)."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self._sessions = sessions

    async def view(self, person_id: str | None, now: datetime | None = None) -> ConsentView:
        if person_id is None:
            return view_of((), now or datetime.now(UTC))
        async with self._sessions() as s:
            records = await person_records(s, person_id)
        return view_of(records, now or datetime.now(UTC))
