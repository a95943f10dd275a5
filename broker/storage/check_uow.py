"""The recognition check's unit of work on SQLAlchemy: one session, one transaction."""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import date, datetime
from functools import lru_cache
from typing import Any

from sqlalchemy import Row, Select, case, func, select, true
from sqlalchemy.ext.asyncio import AsyncSession

from broker import ports
from broker.domain.actors import Actor
from broker.domain.identifiers import PatientIdentifier
from broker.domain.recognition import PriorItem, RowFilter
from broker.domain.registry import HospitalProfile
from broker.security.payload_cipher import PayloadCipher
from broker.security.pseudonyms import Pseudonymiser
from broker.storage import audit_log, events, mappings
from broker.storage import people as people_store
from broker.storage.consents import (
    FIND_WITH_CONSENT_FLAG,
    SessionConsentReader,
    find_with_consent_flag,
)
from broker.storage.prior_items import (
    ITEM_COLUMNS,
    Matters,
    item_params,
    items_of,
    person_items,
    prior_items_of,
)
from broker.storage.protect import Protector
from broker.storage.reference_cache import (
    STAMP_KINDS,
    ReferenceReader,
    ReferenceReadingUnitOfWork,
)
from broker.storage.tables import (
    audit_event,
    event_outbox,
    recognition_check,
    reference_stamp,
    result,
    result_item,
)
from broker.storage.write_batch import WriteBatch, Writes


class SqlHospitals(ports.Hospitals):
    def __init__(self, reference: ReferenceReader) -> None:
        self._reference = reference

    async def profiles(self) -> Mapping[str, HospitalProfile]:
        return await self._reference.profiles()


_found = FIND_WITH_CONSENT_FLAG.subquery("found")
_stamps = select(
    *(
        func.max(case((reference_stamp.c.name == kind, reference_stamp.c.version))).label(kind)
        for kind in STAMP_KINDS
    )
).subquery("stamps")
# The person, and the reference stamps as of the same statement: one round trip confirms
# the stamps a check started from (broker/storage/reference_cache.py). Always one row.
_FIND_CONFIRMING_STAMPS = select(
    *(_stamps.c[kind] for kind in STAMP_KINDS),
    _found.c.id,
    _found.c.merged_into,
    _found.c.has_records,
).select_from(_stamps.outerjoin(_found, true()))


@lru_cache(maxsize=8)
def _find_with_items(filtered: bool, by_code: bool, imaging: bool) -> Select[Any]:
    """The person, the reference stamps and the person's items that `rows` admits, in one
    statement (issue #16: one read for the person and the items that can matter): the
    items joined on the surviving person the pseudonym names, found once by a subquery,
    so that they are read by index as prior_items reads them. One row with no item
    columns when the person has none."""
    people = people_store.with_merged(people_store.SURVIVOR_BY_PSEUDONYM)
    return (
        _FIND_CONFIRMING_STAMPS.add_columns(*ITEM_COLUMNS)
        .outerjoin(result_item, items_of(people, filtered, by_code, imaging))
        .outerjoin(result, result.c.id == result_item.c.result_id)
        .order_by(result_item.c.id)
    )


class _Prefetched:
    """The items read with the person, kept for the check's next `prior_items`."""

    def __init__(self) -> None:
        self.person_id: str | None = None
        self.rows: RowFilter | None = None
        self.items: list[Row[Any]] = []

    def keep(self, person_id: str, rows: RowFilter | None, items: list[Row[Any]]) -> None:
        self.person_id, self.rows, self.items = person_id, rows, items

    def take(self, person_id: str, rows: RowFilter | None) -> list[Row[Any]] | None:
        if self.rows is None or person_id != self.person_id or rows != self.rows:
            return None
        items, self.rows, self.items = self.items, None, []
        return items


class SqlPeople(ports.People):
    """Finding the person also tells the session's consent reader when they have no consent
    record, so that the check reads the records only for the few who have some; when
    the check started from the reference stamps last seen, confirms them; and, given the
    rows the check can need, reads the person's items in the same round trip."""

    def __init__(
        self,
        session: AsyncSession,
        pseudonyms: Pseudonymiser,
        cipher: PayloadCipher,
        consents: SessionConsentReader | None = None,
        reference: ReferenceReader | None = None,
        prefetched: _Prefetched | None = None,
    ) -> None:
        self._session = session
        self._pseudonyms = pseudonyms
        self._cipher = cipher
        self._consents = consents
        self._reference = reference
        self._prefetched = prefetched
        self.moved = False  # the stamps in use were older than the person lookup's

    async def find(
        self, identifier: PatientIdentifier, rows: RowFilter | None = None
    ) -> str | None:
        pseudonym = self._pseudonyms.of(identifier)
        prefetched = self._prefetched if rows is not None and not rows.empty else None
        reference = self._reference
        if reference is not None and not reference.unconfirmed:
            reference = None  # the stamps in use need no confirming
        if prefetched is None and reference is None:
            found = await find_with_consent_flag(self._session, pseudonym)
        else:
            params: dict[str, Any] = {"pseudonym": pseudonym}
            statement: Select[Any] = _FIND_CONFIRMING_STAMPS
            if prefetched is not None:
                shape, codes = item_params(rows)
                statement, params = _find_with_items(*shape), {**params, **codes}
            read = (await self._session.execute(statement, params)).all()
            row = read[0]
            if reference is not None:
                current = {k: int(v) for k in STAMP_KINDS if (v := row._mapping[k]) is not None}
                self.moved = self.moved or not reference.confirm(current)
            found = (
                None if row.id is None else (str(row.merged_into or row.id), bool(row.has_records))
            )
            if prefetched is not None and found is not None:
                prefetched.keep(found[0], rows, [r for r in read if r.result_id is not None])
        if found is None:
            return None
        person_id, has_records = found
        if not has_records and self._consents is not None:
            self._consents.without_records.add(person_id)
        return person_id

    async def birth_date(self, person_id: str) -> date | None:
        return await people_store.birth_date(self._session, self._cipher, person_id)


class SqlResults(ports.Results):
    def __init__(
        self, session: AsyncSession, protector: Protector, prefetched: _Prefetched | None = None
    ) -> None:
        self._session = session
        self._protector = protector
        self._prefetched = prefetched

    async def prior_items(
        self, person_id: str, matters: Matters | None = None, rows: RowFilter | None = None
    ) -> list[PriorItem]:
        if self._prefetched is not None:
            read = self._prefetched.take(person_id, rows)
            if read is not None:
                return prior_items_of(read, self._protector, matters)
        return await person_items(self._session, person_id, self._protector, matters, rows)


class SqlMappings(ports.Mappings):
    def __init__(self, session: AsyncSession, reference: ReferenceReader) -> None:
        self._session = session
        self._reference = reference

    async def version(self) -> tuple[int, int]:
        return await self._reference.mappings_version()

    async def all(self) -> ports.LocalCodes:
        return await mappings.all_mappings(self._session)


class SqlChecks(ports.Checks):
    def __init__(self, writes: Writes, cipher: PayloadCipher) -> None:
        self._writes = writes
        self._cipher = cipher

    async def add(self, check: ports.RecordedCheck) -> None:
        # The identifier is kept (sealed, bound to the check) so a safety notice can name
        # the patient to the doctor who recognised the result.
        patient = self._cipher.seal(
            json.dumps({"system": check.patient.system, "value": check.patient.value}).encode(),
            associated=check.check_id.encode(),
        )
        await self._writes.write(
            recognition_check,
            {
                "id": check.check_id,
                "created_at": check.created_at,
                "ordering_hospital": check.ordering_hospital,
                "person_id": check.person_id,
                "order_time": check.order_time,
                "emergency": check.emergency,
                "items": [i.as_json() for i in check.items],
                "patient_sealed": patient.ciphertext,
                "patient_nonce": patient.nonce,
                "patient_key_id": patient.key_id,
                "catalog_version": check.catalog_version[:200],
                "policy_version": check.policy_version[:64],
            },
        )


class SqlEvents(ports.Events):
    def __init__(self, writes: Writes) -> None:
        self._writes = writes

    async def append(self, type_: str, key: str, body: dict[str, Any], now: datetime) -> str:
        event_id, row = events.outbox_row(type_, key, body, now)
        await self._writes.write(event_outbox, row)
        return event_id


class SqlAudit(ports.Audit):
    def __init__(self, writes: Writes, pseudonyms: Pseudonymiser) -> None:
        self._writes = writes
        self._pseudonyms = pseudonyms

    async def record_read(
        self,
        actor: Actor,
        *,
        action: str,
        purpose: str,
        patient: PatientIdentifier | None,
        person_id: str | None,
        detail: dict[str, Any] | None = None,
    ) -> None:
        await self._writes.write(
            audit_event,
            audit_log.entry_row(
                actor,
                action,
                purpose,
                self._pseudonyms.of(patient) if patient else None,
                person_id,
                detail,
            ),
        )


class SqlCheckUnitOfWork(ReferenceReadingUnitOfWork, ports.CheckUnitOfWork):
    """Reads, then the check, its event and its audit entry written together at commit
    (broker/storage/write_batch.py): on PostgreSQL one statement, without BEGIN/COMMIT."""

    single_statement_on_postgresql = True

    async def commit(self) -> None:
        await self._batch.flush()
        await super().commit()

    async def reference_moved(self) -> bool:
        """Whether the hospital profiles and mappings read so far were older than the
        database's at the person lookup (or, without one, now); the next reads are fresh."""
        if self._people.moved:
            self._people.moved = False
            return True
        if self._reader.unconfirmed:
            return await self._reader.reread()
        return False

    def _bind(self, s: AsyncSession) -> None:
        self._batch = batch = WriteBatch(s)
        self._reader = reference = self._reference.reader(s, optimistic=True)
        self.hospitals = SqlHospitals(reference)
        self.consents = consents = SessionConsentReader(s)
        prefetched = _Prefetched()
        self.people = self._people = SqlPeople(
            s, self._pseudonyms, self._cipher, consents, reference, prefetched
        )
        self.results = SqlResults(s, Protector(self._cipher, self._pseudonyms), prefetched)
        self.mappings = SqlMappings(s, reference)
        self.checks = SqlChecks(batch, self._cipher)
        self.events = SqlEvents(batch)
        self.audit = SqlAudit(batch, self._pseudonyms)
