"""Ingest's unit of work on SQLAlchemy: one transaction per batch (or per batch message by
message, each message in a savepoint), outages raised as retriable `Unavailable`."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from contextlib import asynccontextmanager
from datetime import datetime, tzinfo
from typing import Self

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from broker.domain.catalog import Catalog
from broker.ingest.envelope import InboundMessage
from broker.ports.ingest import Collision, IngestUnitOfWork
from broker.security.payload_cipher import PayloadCipher
from broker.security.pseudonyms import Pseudonymiser
from broker.storage import dead_letters, hospitals
from broker.storage.bulk_insert import insert_rows
from broker.storage.fhir_index import zone_named
from broker.storage.one_of import one_of
from broker.storage.outage import conflicts_raised_as, outages_retriable
from broker.storage.result_writer import ChangeListener, SqlResultWriter
from broker.storage.tables import inbox, rejection
from broker.storage.unit_of_work import SealingUnitOfWork

# The catalog with its current local-code mappings, for the unmapped-code worklist.
CatalogSource = Callable[[AsyncSession], Awaitable[Catalog]]


class SqlIngestUnitOfWork(SealingUnitOfWork, IngestUnitOfWork):
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        cipher: PayloadCipher,
        pseudonyms: Pseudonymiser,
        *,
        default_zone: str,
        on_change: ChangeListener | None = None,
        catalog_source: CatalogSource | None = None,
    ) -> None:
        super().__init__(sessions, cipher, pseudonyms)
        self._default_zone = default_zone
        self._on_change = on_change
        self._catalog_source = catalog_source
        self._zones: dict[str, str] = {}

    def _bind(self, session: AsyncSession) -> None:
        self._s = session

    async def __aenter__(self) -> Self:
        with outages_retriable():
            return await super().__aenter__()

    async def __aexit__(self, *exc: object) -> None:
        with outages_retriable():
            await super().__aexit__(*exc)

    async def commit(self) -> None:
        with outages_retriable():
            await super().commit()

    async def time_zones(self) -> Mapping[str, str]:
        with outages_retriable():
            self._zones = {
                h.id: h.timezone or self._default_zone for h in await hospitals.list_all(self._s)
            }
        return self._zones

    async def signing_keys(self) -> Mapping[tuple[str, str], hospitals.SigningKey]:
        with outages_retriable():
            return await hospitals.signing_keys(self._s)

    async def indexed(self, message_ids: Iterable[str]) -> set[str]:
        ids = set(message_ids)
        if not ids:
            return set()
        with outages_retriable():
            rows = await self._s.execute(
                select(inbox.c.message_id).where(one_of(inbox.c.message_id, ids))
            )
        return {r[0] for r in rows}

    async def writer(self, now: datetime) -> SqlResultWriter:
        with outages_retriable():
            catalog = await self._catalog_source(self._s) if self._catalog_source else None

        def zone(hospital: str) -> tzinfo:
            return zone_named(self._zones.get(hospital) or self._default_zone)

        return SqlResultWriter(
            self._s, self._pseudonyms, self._cipher, now, self._on_change, catalog, zone
        )

    async def record_rejections(
        self, rejected: Sequence[tuple[InboundMessage, dict[str, object]]]
    ) -> None:
        if not rejected:
            return
        rows = [
            {**row, **dead_letters.sealed_columns(self._cipher, m.value, m.headers, m.key)}
            for m, row in rejected
        ]
        with outages_retriable():
            await insert_rows(self._s, rejection, rows)

    async def settle_dead_letters(self, message_ids: Sequence[str], now: datetime) -> None:
        with outages_retriable():
            await dead_letters.resolve(self._s, message_ids, now)

    @asynccontextmanager
    async def savepoint(self) -> AsyncIterator[None]:
        with outages_retriable(), conflicts_raised_as(Collision):
            async with self._s.begin_nested():
                yield
