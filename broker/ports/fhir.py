"""The FHIR read and search use cases' ports: the search index, the payloads behind it,
the people it is about, the audit trail and the distinct-patient rate limit.

One unit of work per request step: what was served and its audit entry commit together.
Ingest writes the index with each result (broker/storage/result_writer.py). `FhirReindex`
only catches up what it did not write — results indexed before it did, found by one cheap
query — in its own short transaction before a read, so a refused read never holds index
writes back.
"""

from __future__ import annotations

import abc
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from broker.domain.actors import Actor
from broker.domain.identifiers import PatientIdentifier
from broker.fhir.params import Search
from broker.fhir.resources import ResultView
from broker.ports.check import Audit, People
from broker.ports.consent import ConsentReader
from broker.ports.unit_of_work import UnitOfWork


@dataclass(frozen=True)
class Viewer:
    """Whose doctor reads. Results another hospital issued that hold a row coded with one of
    `hidden` ((system, code), broker.domain.sensitivity.SensitivityTable.index_codes) do
    not exist for them: not found, not counted, not paged (issue "Patient rights")."""

    hospital: str
    hidden: frozenset[tuple[str, str]] = frozenset()
    # The patient opted out of cross-hospital sharing: only `hospital`'s own results exist.
    own_only: bool = False


@dataclass(frozen=True)
class IndexedResource:
    """A served resource's index row: which result version it is read from."""

    result_id: str
    version_id: int
    status: str | None
    person_id: str


@dataclass(frozen=True)
class Hit:
    """One resource matching a search: where to find it."""

    served_id: str
    result_id: str
    version_id: int
    resource_type: str
    entry: int | None
    status: str | None


@dataclass(frozen=True)
class PersonRecord:
    person_id: str
    merged_into: str | None  # the surviving person when this one was merged


@dataclass(frozen=True)
class Opened:
    """Result views by version id; versions whose payload was purged are in `purged`,
    those whose payload cannot be opened in `unreadable`."""

    views: dict[int, ResultView] = field(default_factory=dict)
    purged: frozenset[int] = frozenset()
    unreadable: frozenset[int] = frozenset()


class FhirIndex(abc.ABC):
    @abc.abstractmethod
    async def resource(
        self, served_id: str, resource_type: str, *, viewer: Viewer
    ) -> IndexedResource | None:
        """The index row a resource is served from (None when `viewer` may not see it)."""

    @abc.abstractmethod
    async def result_id(self, result_id: str, resource_type: str, *, viewer: Viewer) -> str | None:
        """The result itself, when its id is asked for before it was ever indexed."""

    @abc.abstractmethod
    async def person(self, person_id: str) -> PersonRecord | None: ...

    @abc.abstractmethod
    async def count(self, search: Search, person_id: str, *, viewer: Viewer) -> int:
        """How many of the person's resources `viewer` may see match (identifier values
        as given: the adapter hashes them as they are indexed)."""

    @abc.abstractmethod
    async def page(
        self, search: Search, person_id: str, offset: int, limit: int, *, viewer: Viewer
    ) -> list[Hit]:
        """One page of those matches in the search's order (a total order)."""

    @abc.abstractmethod
    async def sees(self, person_id: str, *, viewer: Viewer) -> bool:
        """Whether `viewer` may see any of the person's results: if not, the person is
        unknown to them (known only through other hospitals' sensitive results)."""

    @abc.abstractmethod
    async def patient_versions(self, person_id: str, *, viewer: Viewer) -> list[int]:
        """The version holding the newest Patient of each hospital that sent one, among
        the results `viewer` may see (none: the person is unknown to them)."""


class Payloads(abc.ABC):
    @abc.abstractmethod
    async def open(self, version_ids: Iterable[int]) -> Opened:
        """The versions' payloads, each opened once."""


class FhirReindex(abc.ABC):
    """Brings the index up to date before it is read (its own transaction)."""

    @abc.abstractmethod
    async def person(self, person_id: str) -> None: ...

    @abc.abstractmethod
    async def results(self, result_ids: Sequence[str]) -> None: ...


class Admission(abc.ABC):
    @abc.abstractmethod
    async def admit(
        self, actor: Actor, *, patient: PatientIdentifier | None, person_id: str | None
    ) -> None:
        """Count the patient against the caller's distinct-patient limit (pseudonymised by
        the adapter), or raise TooManyRequests."""


class FhirUnitOfWork(UnitOfWork):
    """What one FHIR read or search page reads, and its audit entry, in one transaction."""

    index: FhirIndex
    payloads: Payloads
    people: People
    audit: Audit
    consents: ConsentReader  # the patient's opt-out and consents, in this session
