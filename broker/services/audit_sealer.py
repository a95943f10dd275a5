"""Seals the audit trail into its hash chain every few seconds (in worker processes)."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from broker.storage.audit_chain import CheckpointKey, seal

logger = logging.getLogger(__name__)


class AuditSealer:
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        key: CheckpointKey,
        *,
        interval: float = 5.0,
    ) -> None:
        self._sessions = sessions
        self._key = key
        self._interval = interval
        self.sealed = 0

    async def seal_once(self) -> int:
        async with self._sessions() as s, s.begin():
            n = await seal(s, self._key)
        self.sealed += n
        return n

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                await self.seal_once()
            except (OperationalError, InterfaceError) as exc:
                logger.warning("audit sealing postponed: %s", type(exc).__name__)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self._interval)
        with contextlib.suppress(OperationalError, InterfaceError):
            await self.seal_once()  # what the last requests audited, before stopping
