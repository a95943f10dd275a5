"""The FHIR read and search ports on SQLAlchemy: one session and transaction per unit of
work; the index rebuilt beforehand in its own (broker/storage/fhir_index.py)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import replace
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from broker import ports
from broker.fhir.params import Search
from broker.ports.fhir import Viewer
from broker.security.payload_cipher import PayloadCipher
from broker.security.pseudonyms import Pseudonymiser
from broker.storage import fhir_index, fhir_query
from broker.storage.check_uow import SqlAudit, SqlPeople
from broker.storage.consents import SessionConsentReader
from broker.storage.fhir_tables import fhir_resource
from broker.storage.people import with_merged
from broker.storage.tables import person, result
from broker.storage.unit_of_work import SealingUnitOfWork
from broker.storage.write_batch import Writes


class SqlFhirIndex(ports.FhirIndex):
    def __init__(self, session: AsyncSession, pseudonyms: Pseudonymiser) -> None:
        self._session = session
        self._pseudonyms = pseudonyms

    async def resource(
        self, served_id: str, resource_type: str, *, viewer: Viewer
    ) -> ports.IndexedResource | None:
        row = (
            await self._session.execute(
                select(
                    fhir_resource.c.result_id,
                    fhir_resource.c.version_id,
                    fhir_resource.c.status,
                    result.c.person_id,
                )
                .join(result, result.c.id == fhir_resource.c.result_id)
                .where(
                    fhir_resource.c.id == served_id,
                    fhir_resource.c.resource_type == resource_type,
                    fhir_query.visible_to(viewer),
                )
            )
        ).first()
        if row is None:
            return None
        return ports.IndexedResource(row.result_id, row.version_id, row.status, row.person_id)

    async def result_id(self, result_id: str, resource_type: str, *, viewer: Viewer) -> str | None:
        row = (
            await self._session.execute(
                select(result.c.id).where(
                    result.c.id == result_id,
                    result.c.resource_type == resource_type,
                    fhir_query.visible_to(viewer),
                )
            )
        ).first()
        return str(row.id) if row is not None else None

    async def person(self, person_id: str) -> ports.PersonRecord | None:
        row = (
            await self._session.execute(
                select(person.c.id, person.c.merged_into).where(person.c.id == person_id)
            )
        ).first()
        return ports.PersonRecord(row.id, row.merged_into) if row is not None else None

    async def count(self, search: Search, person_id: str, *, viewer: Viewer) -> int:
        return await fhir_query.count(self._session, self._hashed(search), person_id, viewer)

    async def page(
        self, search: Search, person_id: str, offset: int, limit: int, *, viewer: Viewer
    ) -> list[ports.Hit]:
        return await fhir_query.page(
            self._session, self._hashed(search), person_id, offset, limit, viewer
        )

    async def sees(self, person_id: str, *, viewer: Viewer) -> bool:
        row = (
            await self._session.execute(
                select(result.c.id)
                .where(
                    result.c.person_id.in_(with_merged(person_id)), fhir_query.visible_to(viewer)
                )
                .limit(1)
            )
        ).first()
        return row is not None

    async def patient_versions(self, person_id: str, *, viewer: Viewer) -> list[int]:
        rows = (
            await self._session.execute(
                select(fhir_resource.c.version_id, result.c.hospital_id)
                .join(result, result.c.id == fhir_resource.c.result_id)
                .where(
                    result.c.person_id.in_(with_merged(person_id)),
                    fhir_resource.c.resource_type == "Patient",
                    fhir_query.visible_to(viewer),
                )
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
        return list(newest.values())

    def _hashed(self, search: Search) -> Search:
        """Identifier tokens are indexed as keyed hashes: the search looks for the hash."""
        return hashed_identifiers(search, fhir_index.identifier_key(self._pseudonyms))


class SqlPayloads(ports.Payloads):
    def __init__(self, session: AsyncSession, cipher: PayloadCipher) -> None:
        self._session = session
        self._cipher = cipher

    async def open(self, version_ids: Iterable[int]) -> ports.Opened:
        purged: set[int] = set()
        unreadable: set[int] = set()
        views = await fhir_index.load_views(
            self._session, self._cipher, version_ids, purged=purged, unreadable=unreadable
        )
        return ports.Opened(views, frozenset(purged), frozenset(unreadable))


class SqlFhirReindex(ports.FhirReindex):
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        cipher: PayloadCipher,
        pseudonyms: Pseudonymiser,
    ) -> None:
        self._sessions = sessions
        self._cipher = cipher
        self._key = fhir_index.identifier_key(pseudonyms)

    async def person(self, person_id: str) -> None:
        await fhir_index.refresh_person(
            self._sessions, self._cipher, person_id, identifiers=self._key
        )

    async def results(self, result_ids: Sequence[str]) -> None:
        await fhir_index.refresh_results(
            self._sessions, self._cipher, result_ids, identifiers=self._key
        )


class SqlFhirUnitOfWork(SealingUnitOfWork, ports.FhirUnitOfWork):
    def _bind(self, s: AsyncSession) -> None:
        self.index = SqlFhirIndex(s, self._pseudonyms)
        self.payloads = SqlPayloads(s, self._cipher)
        self.people = SqlPeople(s, self._pseudonyms, self._cipher)
        self.audit = SqlAudit(Writes(s), self._pseudonyms)
        self.consents = SessionConsentReader(s)


def hashed_identifiers(search: Search, key: fhir_index.IdentifierKey) -> Search:
    """The search with its identifier values replaced by their keyed hashes (as indexed)."""
    tokens: Any = tuple(
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
