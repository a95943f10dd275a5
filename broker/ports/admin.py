"""Ports of the administrative use cases that are not a registry, a mapping or access:
closing a ledger month, purging payloads and results past retention, and the change log
every administrative change writes in its own transaction (who, with which token, what
changed)."""

from __future__ import annotations

import abc
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from broker.domain.actors import Actor
from broker.domain.results import Coding
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


@dataclass(frozen=True)
class HeldRow:
    """One item of an indexed result, as retention maps it to a catalog item."""

    codings: tuple[Coding, ...] = ()
    modality: str | None = None
    body_site: str | None = None
    protocol: str | None = None


@dataclass(frozen=True)
class HeldResult:
    """A result in the index, with what its retention period depends on."""

    result_id: str
    hospital: str
    category: str  # broker.domain.results.ResultKind value
    effective: datetime | None
    issued: datetime | None
    received: datetime  # when mrb last wrote a version of it
    rows: tuple[HeldRow, ...] = ()


@dataclass(frozen=True)
class Removed:
    result_ids: tuple[str, ...]  # the results removed (those still there)
    payloads: int  # raw payloads deleted: no remaining result was read from them


class ResultRetention(abc.ABC):
    @abc.abstractmethod
    async def anchored_by(
        self, cutoff: datetime, *, after: str | None, limit: int
    ) -> list[HeldResult]:
        """Up to `limit` results whose anchor (effective, else issued, else received) is at
        or before `cutoff` and whose id sorts after `after`, in id order, with their rows."""

    @abc.abstractmethod
    async def remove(self, result_ids: Sequence[str]) -> Removed:
        """Remove these results from the index (what checks read), the FHIR search facade
        and their payloads no other result shares. Ledger rows and audit entries naming
        them stay."""


class MonthUnitOfWork(UnitOfWork):
    """Closing a month and auditing it, in one transaction."""

    months: LedgerMonths
    changes: ChangeLog


class PurgeUnitOfWork(UnitOfWork):
    """Purging payloads and auditing it, in one transaction."""

    payloads: PayloadRetention
    changes: ChangeLog


class ResultPurgeUnitOfWork(UnitOfWork):
    """Removing one batch of results past retention and auditing it, in one transaction
    (entered once per batch)."""

    results: ResultRetention
    changes: ChangeLog
