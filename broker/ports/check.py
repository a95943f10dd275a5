"""The recognition check's ports: what it reads and writes, in one unit of work (the
check, its event and its audit entry are stored together or not at all)."""

from __future__ import annotations

import abc
from collections.abc import Callable, Mapping, Sequence, Set
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from broker.domain.actors import Actor
from broker.domain.check_items import StoredCheckItem
from broker.domain.identifiers import PatientIdentifier
from broker.domain.recognition import PriorItem, RowFilter
from broker.domain.registry import HospitalProfile
from broker.ports.consent import ConsentReader
from broker.ports.unit_of_work import UnitOfWork

# (hospital, code system, local code) -> catalog item code
LocalCodes = Mapping[tuple[str, str, str], str]


class Hospitals(abc.ABC):
    @abc.abstractmethod
    async def profiles(self) -> Mapping[str, HospitalProfile]:
        """Every registered hospital as the rules see it."""


class People(abc.ABC):
    @abc.abstractmethod
    async def find(
        self, identifier: PatientIdentifier, rows: RowFilter | None = None
    ) -> str | None:
        """The surviving person an identifier is linked to, if any. Given the `rows` the
        caller will ask `Results.prior_items` for, an adapter may read them in the same
        round trip and answer that call from them."""

    @abc.abstractmethod
    async def birth_date(self, person_id: str) -> date | None:
        """The birth date every hospital that sent one agrees on; None otherwise."""


class Results(abc.ABC):
    @abc.abstractmethod
    async def prior_items(
        self,
        person_id: str,
        matters: Callable[[Sequence[PriorItem]], Set[str]] | None = None,
        rows: RowFilter | None = None,
    ) -> list[PriorItem]:
        """The items of the person's current results, from every hospital: all of them, or
        those of the results `matters` keeps (given the items before their sealed values and
        summaries are opened; see broker.domain.recognition.results_that_matter). With
        `rows`, only results holding a row the filter admits are read at all."""


class Mappings(abc.ABC):
    @abc.abstractmethod
    async def version(self) -> tuple[int, int]:
        """Changes whenever a mapping is added or changed (cheap to ask every request)."""

    @abc.abstractmethod
    async def all(self) -> LocalCodes:
        """Every run-time local-code mapping."""


@dataclass(frozen=True)
class RecordedCheck:
    """A check as stored: what was asked and answered, no identifier in clear (the storage
    adapter seals the patient's identifier)."""

    check_id: str
    created_at: datetime
    ordering_hospital: str
    person_id: str | None
    patient: PatientIdentifier
    order_time: datetime
    emergency: bool
    items: tuple[StoredCheckItem, ...]
    catalog_version: str
    policy_version: str


class Checks(abc.ABC):
    @abc.abstractmethod
    async def add(self, check: RecordedCheck) -> None: ...


class Events(abc.ABC):
    """The transactional outbox of mrb.recognition.v1."""

    @abc.abstractmethod
    async def append(self, type_: str, key: str, body: dict[str, Any], now: datetime) -> str: ...


class Audit(abc.ABC):
    @abc.abstractmethod
    async def record_read(
        self,
        actor: Actor,
        *,
        action: str,
        purpose: str,
        patient: PatientIdentifier | None,
        person_id: str | None,
        detail: dict[str, Any] | None = None,
    ) -> None:
        """A read of patient data: who, why, whose (pseudonymised by the adapter)."""


class CheckUnitOfWork(UnitOfWork):
    """Everything a recognition check reads and writes, in one transaction."""

    hospitals: Hospitals
    people: People
    consents: ConsentReader  # in the check's own transaction: no second connection
    results: Results
    mappings: Mappings
    checks: Checks
    events: Events
    audit: Audit

    async def reference_moved(self) -> bool:
        """Whether the hospital profiles and mappings read so far are older than the
        database's as of the person lookup (the check then reads them again). A unit of
        work that reads them afresh every time never has them move."""
        return False
