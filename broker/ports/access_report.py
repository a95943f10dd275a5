"""The patient's access report's port: the audit entries that name one person, and what
they point at (checks, outcomes, results, notices), read in one transaction that also
audits the report itself. The wording and the joining are the service's."""

from __future__ import annotations

import abc
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from broker.domain.check_items import StoredCheckItem
from broker.domain.identifiers import PatientIdentifier
from broker.ports.check import Audit
from broker.ports.unit_of_work import UnitOfWork


@dataclass(frozen=True)
class AuditedRead:
    """One audit entry as recorded (broker/storage/audit_log.py)."""

    id: int
    at: datetime  # UTC
    actor: str
    role: str
    hospital_id: str | None
    action: str
    purpose: str
    patient_pseudonym: str | None
    person_id: str | None
    detail: Mapping[str, Any] = field(default_factory=dict)
    request_id: str | None = None
    seq: int | None = None  # the hash chain, once sealed
    hash: str | None = None

    def as_row(self) -> dict[str, Any]:
        """The entry as an `audit_event` row (what broker/fhir/balp.py renders)."""
        return {
            "id": self.id,
            "at": self.at,
            "actor": self.actor,
            "role": self.role,
            "hospital_id": self.hospital_id,
            "action": self.action,
            "purpose": self.purpose,
            "patient_pseudonym": self.patient_pseudonym,
            "person_id": self.person_id,
            "detail": dict(self.detail),
            "request_id": self.request_id,
            "seq": self.seq,
            "hash": self.hash,
        }


@dataclass(frozen=True)
class CheckedItems:
    """A recognition check: where and when it was made, and its stored items."""

    check_id: str
    created_at: datetime
    ordering_hospital: str
    items: tuple[StoredCheckItem, ...]


@dataclass(frozen=True)
class ItemOutcome:
    """What the ordering doctor did with one item of a check, and whether the saving was
    reversed since (the result was corrected or withdrawn)."""

    check_id: str
    item_index: int
    outcome: str  # accepted | declined
    reason: str | None
    recorded_at: datetime
    reversed: bool = False


@dataclass(frozen=True)
class ResultInfo:
    """A result as the report names it: never its values (those stay sealed)."""

    result_id: str
    hospital: str
    resource_type: str
    effective: datetime | None


class AccessRecords(abc.ABC):
    @abc.abstractmethod
    def pseudonym_of(self, identifier: PatientIdentifier) -> str:
        """The keyed pseudonym the audit trail records for this identifier."""

    @abc.abstractmethod
    async def find_person(self, identifier: PatientIdentifier) -> str | None:
        """The surviving person the identifier is linked to, if any."""

    @abc.abstractmethod
    async def merged_people(self, person_id: str) -> list[str]:
        """The person and every person merged into them."""

    @abc.abstractmethod
    async def linked_pseudonyms(self, people: Iterable[str]) -> set[str]:
        """The pseudonyms of every identifier linked to these people."""

    @abc.abstractmethod
    async def reads(
        self, people: Iterable[str], pseudonyms: Iterable[str], start: datetime, end: datetime
    ) -> list[AuditedRead]:
        """Entries recorded in [start, end) under one of the people or naming one of the
        pseudonyms, oldest first."""

    @abc.abstractmethod
    async def checks(self, check_ids: Iterable[str]) -> list[CheckedItems]: ...

    @abc.abstractmethod
    async def outcomes(self, check_ids: Iterable[str]) -> list[ItemOutcome]: ...

    @abc.abstractmethod
    async def served_results(self, references: Iterable[str]) -> dict[str, str]:
        """FHIR references mrb served ("DiagnosticReport/<id>") -> the result they are of."""

    @abc.abstractmethod
    async def notice_results(self, notice_ids: Iterable[str]) -> dict[str, str]:
        """Safety notices -> the result each is about."""

    @abc.abstractmethod
    async def results(self, result_ids: Iterable[str]) -> dict[str, ResultInfo]: ...

    @abc.abstractmethod
    async def hospital_names(self) -> dict[str, str]:
        """Every registered hospital's name, by id."""


class AccessReportUnitOfWork(UnitOfWork):
    """Reading what was done with one person's data, and auditing that reading."""

    records: AccessRecords
    audit: Audit
