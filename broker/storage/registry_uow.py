"""The hospital registry's unit of work on SQLAlchemy (ports in broker/ports/registry.py)."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from broker.domain.registry import Certification
from broker.ports import registry as ports
from broker.storage import hospitals
from broker.storage.admin_uow import SqlChangeLog
from broker.storage.unit_of_work import SqlUnitOfWork


class SqlHospitalRegistry(ports.HospitalRegistry):
    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def all(self) -> list[ports.Hospital]:
        return await hospitals.list_all(self._session)

    async def certifications(self) -> list[Certification]:
        return await hospitals.certifications(self._session)

    async def get(self, hospital_id: str) -> ports.Hospital | None:
        return await hospitals.get(self._session, hospital_id)

    async def add(self, h: ports.Hospital, *, replace: bool = False) -> None:
        await hospitals.add(self._session, h, replace=replace)

    async def certify(self, cert: Certification, reference: str | None) -> None:
        await hospitals.certify(self._session, cert, reference)

    async def add_key(self, hospital_id: str, key_id: str, public_b64: str) -> None:
        await hospitals.add_key(self._session, hospital_id, key_id, public_b64)

    async def revoke_key(self, hospital_id: str, key_id: str) -> bool:
        return await hospitals.revoke_key(self._session, hospital_id, key_id)

    async def signing_keys(self) -> list[ports.HospitalKey]:
        found = await hospitals.signing_keys(self._session)
        return [
            ports.HospitalKey(k.hospital, k.key_id, k.public_key, k.added_at, k.revoked_at)
            for _, k in sorted(found.items())
        ]


class SqlRegistryUnitOfWork(SqlUnitOfWork, ports.RegistryUnitOfWork):
    def _bind(self, session: AsyncSession) -> None:
        self.hospitals = SqlHospitalRegistry(session)
        self.changes = SqlChangeLog(session)
