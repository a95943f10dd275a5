"""The code-mapping unit of work on SQLAlchemy (ports in broker/ports/mappings.py)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Protocol

from sqlalchemy.ext.asyncio import AsyncSession

from broker.domain.catalog import Catalog
from broker.ports import mappings as ports
from broker.ports.check import Mappings
from broker.storage import mappings
from broker.storage.admin_uow import SqlChangeLog
from broker.storage.check_uow import SqlMappings
from broker.storage.reference_cache import ReferenceCache
from broker.storage.registry_uow import SqlHospitalRegistry
from broker.storage.unit_of_work import SqlUnitOfWork


class SqlCodeMappings(ports.CodeMappings):
    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def add(
        self, hospital: str, system: str, code: str, catalog_code: str, by: str, now: datetime
    ) -> int:
        return await mappings.add_mapping(
            self._session, hospital, system, code, catalog_code, by, now
        )

    async def unmapped(self, hospital: str | None, *, include_mapped: bool) -> list[ports.Unmapped]:
        return await mappings.worklist(self._session, hospital, include_mapped=include_mapped)


class SqlMappingUnitOfWork(SqlUnitOfWork, ports.MappingUnitOfWork):
    def _bind(self, session: AsyncSession) -> None:
        self.hospitals = SqlHospitalRegistry(session)
        self.mappings = SqlCodeMappings(session)
        self.changes = SqlChangeLog(session)


class CurrentCatalog(Protocol):
    """The rules' catalog with the run-time mappings merged in (services/rules.py)."""

    async def catalog(self, mappings: Mappings) -> Catalog: ...


def session_catalog(rules: CurrentCatalog) -> Callable[[AsyncSession], Awaitable[Catalog]]:
    """The current catalog read inside a session ingest already holds."""

    async def catalog(session: AsyncSession) -> Catalog:
        return await rules.catalog(SqlMappings(session, ReferenceCache().reader(session)))

    return catalog
