"""Ports of the administrative use cases that are not a registry, a mapping or access:
closing a ledger month and purging payloads, and the change log every administrative
change writes in its own transaction (who, with which token, what changed)."""

from __future__ import annotations

import abc
from datetime import datetime
from typing import Any

from broker.domain.actors import Actor
from broker.ports.unit_of_work import UnitOfWork


class ChangeLog(abc.ABC):
    @abc.abstractmethod
    async def record(
        self, actor: Actor, *, action: str, hospital: str | None, detail: dict[str, Any]
    ) -> None:
        """An administrative change (registry, certification, month, mapping, token,
        user), audited in the transaction that makes it."""


class LedgerMonths(abc.ABC):
    @abc.abstractmethod
    async def closed(self) -> set[str]:
        """The months closed so far (YYYY-MM)."""

    @abc.abstractmethod
    async def close(self, month: str, by: str, now: datetime) -> bool:
        """Close `month` (YYYY-MM); False when it already was."""


class PayloadRetention(abc.ABC):
    @abc.abstractmethod
    async def purge_received_before(self, cutoff: datetime) -> int:
        """Erase the raw payloads received before `cutoff`; how many were erased."""


class MonthUnitOfWork(UnitOfWork):
    """Closing a month and auditing it, in one transaction."""

    months: LedgerMonths
    changes: ChangeLog


class PurgeUnitOfWork(UnitOfWork):
    """Purging payloads and auditing it, in one transaction."""

    payloads: PayloadRetention
    changes: ChangeLog
