"""What the consent use cases and every read need of the consent record (issue "Patient
rights"). broker/storage/consents.py implements it; broker/services/consents.py uses it."""

from __future__ import annotations

import abc
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from broker.domain.actors import Actor
from broker.domain.consent import NO_CONSENT, ConsentRecord, ConsentView
from broker.domain.identifiers import PatientIdentifier
from broker.ports.unit_of_work import UnitOfWork


class ConsentReader(abc.ABC):
    """A person's consent state as of now, read afresh for every request."""

    @abc.abstractmethod
    async def view(self, person_id: str | None, now: datetime | None = None) -> ConsentView: ...


class NoConsentRecords(ConsentReader):
    """No record anywhere (tests and tools): sensitive results stay with their issuer."""

    async def view(self, person_id: str | None, now: datetime | None = None) -> ConsentView:
        return NO_CONSENT


NO_CONSENT_RECORDS = NoConsentRecords()


class ConsentRecords(abc.ABC):
    @abc.abstractmethod
    async def add(self, record: ConsentRecord) -> None: ...

    @abc.abstractmethod
    async def get(self, consent_id: str) -> ConsentRecord | None: ...

    @abc.abstractmethod
    async def of_person(self, person_id: str) -> list[ConsentRecord]:
        """The person's records (and those of people merged into them), oldest first."""

    @abc.abstractmethod
    async def withdraw(self, consent_id: str, by: str, at: datetime) -> None: ...


class ConsentPeople(abc.ABC):
    @abc.abstractmethod
    async def find(self, identifier: PatientIdentifier) -> str | None: ...

    @abc.abstractmethod
    async def survivor(self, person_id: str) -> str | None:
        """The person (or who they were merged into), None if unknown."""

    @abc.abstractmethod
    async def has_records_at(self, person_id: str, hospital: str) -> bool:
        """Whether `hospital` sent results of the person: the patient's own hospital."""


@dataclass(frozen=True)
class AuditRow:
    at: datetime
    actor: str
    role: str
    hospital: str | None
    action: str
    purpose: str
    person_id: str | None
    detail: dict[str, Any]


class ConsentAudit(abc.ABC):
    @abc.abstractmethod
    async def record_read(
        self,
        actor: Actor,
        *,
        action: str,
        purpose: str,
        patient: PatientIdentifier | None,
        person_id: str | None,
        detail: dict[str, Any],
    ) -> None: ...

    @abc.abstractmethod
    async def record_change(
        self, actor: Actor, *, action: str, person_id: str, detail: dict[str, Any]
    ) -> None:
        """A consent recorded or withdrawn: who, on which person, what."""

    @abc.abstractmethod
    async def break_glass(self, start: datetime, end: datetime) -> Sequence[AuditRow]:
        """Entries flagged break-glass in [start, end), oldest first."""


class ConsentUnitOfWork(UnitOfWork):
    records: ConsentRecords
    people: ConsentPeople
    audit: ConsentAudit
