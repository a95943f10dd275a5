"""Local web accounts and sessions (web_account, web_session) behind their ports
(broker/ports/web.py)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import delete, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from broker.domain.sessions import Failures
from broker.ports import web as ports
from broker.storage.access_uow import SqlOidcUsers
from broker.storage.admin_uow import SqlChangeLog
from broker.storage.registry_uow import SqlHospitalRegistry
from broker.storage.unit_of_work import SqlUnitOfWork
from broker.storage.web_tables import web_account, web_session


class SqlWebAccounts(ports.WebAccounts):
    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def get(self, username: str, *, for_update: bool = False) -> ports.WebAccount | None:
        query = select(web_account).where(web_account.c.username == username)
        if for_update:  # PostgreSQL: concurrent failed logins queue here and all count
            query = query.with_for_update()
        row = (await self._session.execute(query)).first()
        return ports.WebAccount.model_validate(dict(row._mapping)) if row else None

    async def add(self, account: ports.WebAccount) -> None:
        await self._session.execute(web_account.insert().values(**account.model_dump()))

    async def set_failures(self, username: str, failures: Failures) -> None:
        await self._session.execute(
            update(web_account)
            .where(web_account.c.username == username)
            .values(
                failed_count=failures.count,
                failed_since=failures.window_start,
                locked_until=failures.locked_until,
            )
        )

    async def set_password(self, username: str, password_hash: str, *, at: datetime) -> None:
        await self._session.execute(
            update(web_account)
            .where(web_account.c.username == username)
            .values(
                password_hash=password_hash,
                password_changed_at=at,
                failed_count=0,
                failed_since=None,
                locked_until=None,
            )
        )

    async def set_disabled(self, username: str, at: datetime | None) -> bool:
        now_state = (
            web_account.c.disabled_at.is_(None)
            if at is not None
            else web_account.c.disabled_at.isnot(None)
        )
        result = await self._session.execute(
            update(web_account)
            .where(web_account.c.username == username, now_state)
            .values(disabled_at=at)
        )
        return bool(getattr(result, "rowcount", 0))

    async def find(self, *, hospital: str | None) -> list[ports.WebAccount]:
        query = select(web_account).order_by(web_account.c.username).limit(1000)
        if hospital is not None:
            query = query.where(web_account.c.hospital == hospital)
        rows = await self._session.execute(query)
        return [ports.WebAccount.model_validate(dict(r._mapping)) for r in rows]


class SqlWebSessions(ports.WebSessions):
    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def add(self, session: ports.WebSession) -> None:
        await self._session.execute(web_session.insert().values(**session.model_dump()))

    async def get(self, id_hash: str) -> ports.WebSession | None:
        row = (
            await self._session.execute(select(web_session).where(web_session.c.id_hash == id_hash))
        ).first()
        return ports.WebSession.model_validate(dict(row._mapping)) if row else None

    async def touch(self, id_hash: str, at: datetime) -> None:
        await self._session.execute(
            update(web_session).where(web_session.c.id_hash == id_hash).values(last_seen_at=at)
        )

    async def delete(self, id_hash: str) -> bool:
        result = await self._session.execute(
            delete(web_session).where(web_session.c.id_hash == id_hash)
        )
        return bool(getattr(result, "rowcount", 0))

    async def delete_for(self, username: str) -> int:
        result = await self._session.execute(
            delete(web_session).where(web_session.c.username == username)
        )
        return int(getattr(result, "rowcount", 0) or 0)

    async def delete_expired(self, *, idle_before: datetime, created_before: datetime) -> int:
        result = await self._session.execute(
            delete(web_session).where(
                or_(
                    web_session.c.last_seen_at < idle_before,
                    web_session.c.created_at < created_before,
                )
            )
        )
        return int(getattr(result, "rowcount", 0) or 0)


class SqlWebUnitOfWork(SqlUnitOfWork, ports.WebUnitOfWork):
    def _bind(self, session: AsyncSession) -> None:
        self.accounts = SqlWebAccounts(session)
        self.sessions = SqlWebSessions(session)
        self.hospitals = SqlHospitalRegistry(session)
        self.changes = SqlChangeLog(session)
        self.users = SqlOidcUsers(session)
