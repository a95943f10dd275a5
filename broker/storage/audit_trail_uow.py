"""The audit trail outside a use case's own transaction, on SQLAlchemy (ports in
broker/ports/audit_trail.py): a read audited on its own, the trail read back for FHIR
AuditEvent, and sealing it into the hash chain."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import ColumnElement, func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from broker.domain.actors import Actor
from broker.domain.audit_chain import Checkpoint
from broker.fhir.dates import DateValue
from broker.ports import audit_trail as ports
from broker.security.pseudonyms import Pseudonymiser
from broker.storage import audit_chain
from broker.storage.audit_log import record_read
from broker.storage.check_uow import SqlAudit
from broker.storage.fhir_query import instant_matches
from broker.storage.tables import audit_event
from broker.storage.unit_of_work import SqlUnitOfWork
from broker.storage.write_batch import Writes


class SqlReadAudit(ports.ReadAudit):
    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self._sessions = sessions

    async def record(
        self,
        actor: Actor,
        *,
        action: str,
        purpose: str,
        patient_pseudonym: str | None,
        detail: dict[str, Any],
    ) -> None:
        async with self._sessions() as s, s.begin():
            await record_read(
                s,
                actor,
                action=action,
                purpose=purpose,
                patient_pseudonym=patient_pseudonym,
                person_id=None,
                detail=detail,
            )


def _where(
    upto: int, hospital: str | None, dates: Sequence[tuple[DateValue, ...]]
) -> list[ColumnElement[bool]]:
    t = audit_event.c
    where = [t.id <= upto, *([t.hospital_id == hospital] if hospital is not None else [])]
    return where + [instant_matches(t.at, d) for d in dates]


class SqlAuditEntries(ports.AuditEntries):
    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def newest_id(self) -> int:
        return int((await self._session.execute(select(func.max(audit_event.c.id)))).scalar() or 0)

    async def count(
        self, *, upto: int, hospital: str | None, dates: Sequence[tuple[DateValue, ...]]
    ) -> int:
        query = select(func.count()).select_from(audit_event).where(*_where(upto, hospital, dates))
        return int((await self._session.execute(query)).scalar_one())

    async def page(
        self,
        *,
        upto: int,
        hospital: str | None,
        dates: Sequence[tuple[DateValue, ...]],
        newest_first: bool,
        offset: int,
        limit: int,
    ) -> list[dict[str, Any]]:
        order = audit_event.c.id.desc() if newest_first else audit_event.c.id.asc()
        query = (
            select(audit_event)
            .where(*_where(upto, hospital, dates))
            .order_by(order)
            .offset(offset)
            .limit(limit)
        )
        return [dict(r._mapping) for r in await self._session.execute(query)]

    async def get(self, entry_id: int, *, hospital: str | None) -> dict[str, Any] | None:
        query = select(audit_event).where(audit_event.c.id == entry_id)
        if hospital is not None:
            query = query.where(audit_event.c.hospital_id == hospital)
        row = (await self._session.execute(query)).first()
        return dict(row._mapping) if row is not None else None


class SqlAuditReadUnitOfWork(SqlUnitOfWork, ports.AuditReadUnitOfWork):
    def __init__(
        self, sessions: async_sessionmaker[AsyncSession], pseudonyms: Pseudonymiser
    ) -> None:
        super().__init__(sessions)
        self._pseudonyms = pseudonyms

    def _bind(self, session: AsyncSession) -> None:
        self.entries = SqlAuditEntries(session)
        self.audit = SqlAudit(Writes(session), self._pseudonyms)


class SqlAuditChain(ports.AuditChain):
    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def seal(self, key: ports.CheckpointSigner) -> int:
        return await audit_chain.seal(self._session, key)

    async def last_checkpoint(self) -> int:
        return await audit_chain.last_checkpoint(self._session)

    async def checkpoints_after(self, seq: int) -> list[Checkpoint]:
        return await audit_chain.checkpoints_after(self._session, seq)


class SqlAuditChainUnitOfWork(SqlUnitOfWork, ports.AuditChainUnitOfWork):
    def _bind(self, session: AsyncSession) -> None:
        self.chain = SqlAuditChain(session)
