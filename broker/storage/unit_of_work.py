"""The SQLAlchemy side of every use case's unit of work: one session and one transaction
per `async with`, committed once by the use case, rolled back and closed on the way out
(entering again starts afresh). A subclass binds its repositories to the session."""

from __future__ import annotations

import abc
from typing import Self

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from broker.security.payload_cipher import PayloadCipher
from broker.security.pseudonyms import Pseudonymiser


class SqlUnitOfWork(abc.ABC):
    # A unit of work whose only write is one statement at commit (broker/storage/
    # write_batch.py) needs no transaction on PostgreSQL: its reads see committed rows
    # either way (READ COMMITTED), and BEGIN and COMMIT would be two more round trips.
    single_statement_on_postgresql = False

    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self._sessions = sessions
        self._session: AsyncSession | None = None

    @abc.abstractmethod
    def _bind(self, session: AsyncSession) -> None:
        """Set this unit of work's repositories on the session just begun."""

    async def __aenter__(self) -> Self:
        s = self._session = self._sessions()
        bind = s.bind
        if (
            self.single_statement_on_postgresql
            and bind is not None
            and bind.dialect.name == "postgresql"
        ):
            await s.connection(execution_options={"isolation_level": "AUTOCOMMIT"})
        else:
            await s.begin()
        self._bind(s)
        return self

    async def __aexit__(self, *exc: object) -> None:
        try:
            await self.rollback()
        finally:
            if self._session is not None:
                await self._session.close()
                self._session = None

    async def commit(self) -> None:
        assert self._session is not None, "commit outside the unit of work"
        await self._session.commit()

    async def rollback(self) -> None:
        if self._session is not None and self._session.in_transaction():
            await self._session.rollback()


class SealingUnitOfWork(SqlUnitOfWork):
    """A unit of work whose repositories seal, open or pseudonymise patient data."""

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        cipher: PayloadCipher,
        pseudonyms: Pseudonymiser,
    ) -> None:
        super().__init__(sessions)
        self._cipher = cipher
        self._pseudonyms = pseudonyms
