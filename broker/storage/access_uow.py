"""The token register and the OIDC user table behind their ports (broker/ports/access.py)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from broker.ports import access as ports
from broker.security.tokens import IssuedToken
from broker.storage import oidc_users, tokens
from broker.storage.admin_uow import SqlChangeLog
from broker.storage.registry_uow import SqlHospitalRegistry
from broker.storage.unit_of_work import SqlUnitOfWork


class SqlOidcUsers(ports.OidcUsers):
    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def get(self, issuer: str, subject: str) -> ports.OidcUser | None:
        return await oidc_users.get(self._session, issuer, subject)

    async def put(self, user: ports.OidcUser) -> None:
        await oidc_users.put(self._session, user)

    async def disable(self, issuer: str, subject: str, *, at: datetime) -> bool:
        return await oidc_users.disable(self._session, issuer, subject, at=at)

    async def find(
        self, *, issuer: str | None, hospital: str | None, enabled_only: bool
    ) -> list[ports.OidcUser]:
        return await oidc_users.find(
            self._session, issuer=issuer, hospital=hospital, enabled_only=enabled_only
        )


class SqlTokenRegister(ports.TokenRegister):
    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def record(self, token: IssuedToken, *, issued_by: str) -> None:
        await tokens.record(self._session, token, issued_by=issued_by)

    async def get(self, jti: str) -> ports.TokenRecord | None:
        return await tokens.get(self._session, jti)

    async def find(
        self, *, hospital: str | None, subject: str | None, live_at: datetime | None
    ) -> list[ports.TokenRecord]:
        return await tokens.find(self._session, hospital=hospital, subject=subject, live_at=live_at)

    async def revoke(self, jtis: list[str], *, by: str, reason: str, at: datetime) -> list[str]:
        return await tokens.revoke(self._session, jtis, by=by, reason=reason, at=at)


class SqlAccessUnitOfWork(SqlUnitOfWork, ports.AccessUnitOfWork):
    def _bind(self, session: AsyncSession) -> None:
        self.users = SqlOidcUsers(session)
        self.tokens = SqlTokenRegister(session)
        self.hospitals = SqlHospitalRegistry(session)
        self.changes = SqlChangeLog(session)


class SqlAccessLookups(ports.AccessLookups):
    """One short session per look-up; any database error is RegisterUnavailable."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self._sessions = sessions

    async def user(self, issuer: str, subject: str) -> ports.OidcUser | None:
        try:
            async with self._sessions() as s:
                return await oidc_users.get(s, issuer, subject)
        except SQLAlchemyError as exc:
            raise ports.RegisterUnavailable(type(exc).__name__) from None

    async def token_state(self, jti: str) -> ports.TokenState:
        try:
            async with self._sessions() as s:
                return await tokens.state(s, jti)
        except SQLAlchemyError as exc:
            raise ports.RegisterUnavailable(type(exc).__name__) from None
