"""Ports of the audit trail outside a use case's own transaction: a break-glass pass
audited on its own, the trail read back as FHIR AuditEvents, and its sealing into the
hash chain (broker/services/audit_sealer.py)."""

from __future__ import annotations

import abc
from collections.abc import Sequence
from typing import Any, Protocol

from broker.domain.actors import Actor
from broker.domain.audit_chain import Checkpoint
from broker.fhir.dates import DateValue
from broker.ports.check import Audit
from broker.ports.unit_of_work import UnitOfWork


class ReadAudit(abc.ABC):
    @abc.abstractmethod
    async def record(
        self,
        actor: Actor,
        *,
        action: str,
        purpose: str,
        patient_pseudonym: str | None,
        detail: dict[str, Any],
    ) -> None:
        """One audit entry of a read, committed in a transaction of its own."""


class AuditEntries(abc.ABC):
    """The audit trail's entries as rows (column name -> value), by ascending id.

    `hospital` None: every hospital's entries. `dates`: when the entry was recorded, one
    tuple per occurrence of the FHIR date parameter (its values ORed, occurrences ANDed).
    """

    @abc.abstractmethod
    async def newest_id(self) -> int: ...

    @abc.abstractmethod
    async def count(
        self, *, upto: int, hospital: str | None, dates: Sequence[tuple[DateValue, ...]]
    ) -> int: ...

    @abc.abstractmethod
    async def page(
        self,
        *,
        upto: int,
        hospital: str | None,
        dates: Sequence[tuple[DateValue, ...]],
        newest_first: bool,
        offset: int,
        limit: int,
    ) -> list[dict[str, Any]]: ...

    @abc.abstractmethod
    async def get(self, entry_id: int, *, hospital: str | None) -> dict[str, Any] | None: ...


class AuditReadUnitOfWork(UnitOfWork):
    """Reading the trail and auditing that reading, in one transaction."""

    entries: AuditEntries
    audit: Audit


class CheckpointSigner(Protocol):
    """The sealer's private key (broker/storage/audit_chain.py `CheckpointKey`)."""

    @property
    def key_id(self) -> str: ...

    def sign(self, message: bytes) -> bytes: ...


class AuditChain(abc.ABC):
    @abc.abstractmethod
    async def seal(self, key: CheckpointSigner) -> int:
        """Link the oldest unsealed entries onto the chain and sign a checkpoint at its
        end; how many entries were sealed."""

    @abc.abstractmethod
    async def last_checkpoint(self) -> int:
        """The highest checkpoint seq (0 if none)."""

    @abc.abstractmethod
    async def checkpoints_after(self, seq: int) -> list[Checkpoint]:
        """The checkpoints after `seq`, in order (what is left to export)."""


class AuditChainUnitOfWork(UnitOfWork):
    chain: AuditChain
