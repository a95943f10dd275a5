"""Ports of the patient-identity review (issue #17): the review queue, reversible links
between people, and the recognitions an unlink undoes."""

from __future__ import annotations

import abc
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from broker.domain.identifiers import PatientIdentifier
from broker.domain.identity_review import LinkKind, ReviewStatus
from broker.ports.admin import ChangeLog
from broker.ports.check import Audit
from broker.ports.outcomes import Outcome, SafetyUnitOfWork
from broker.ports.unit_of_work import UnitOfWork


@dataclass(frozen=True)
class Link:
    """`person_id` linked into `into_person_id` (only `person.merged_into` was set)."""

    link_id: str
    person_id: str
    into_person_id: str
    kind: str  # LinkKind value
    review_id: str | None
    created_at: datetime
    created_by: str


@dataclass(frozen=True)
class ReviewItem:
    """A pair the matcher found: people by id, the comparison by level and weight only."""

    review_id: str
    person_id: str  # the person of the arriving record
    candidate_id: str
    hospital_id: str  # the hospital whose record arrived
    decision: str  # MATCH | POSSIBLE_MATCH
    total: float
    fields: list[dict[str, Any]]
    identifier: str
    hard_rules: list[str]
    rules_version: str
    status: str  # ReviewStatus value
    created_at: datetime
    decided_at: datetime | None
    decided_by: str | None


@dataclass(frozen=True)
class Recognition:
    """An accepted outcome whose check's person and candidate result's person were one
    group: with the identifier the doctor asked with (opened in memory, never logged),
    so the use case can tell whether it still holds after an unlink."""

    outcome: Outcome
    ordering_hospital: str
    asked_system: str | None
    asked_value: str | None
    result_person: str
    result_hospital: str


class SamePerson(Exception):
    """Two people named to link are one already."""


class DifferentNumbers(Exception):
    """Two people named to link hold different numbers of one national system (two resident
    IDs): they are two people (broker.domain.linking.gained)."""


class IdentityIndex(abc.ABC):
    @abc.abstractmethod
    async def reviews(self, status: ReviewStatus | None, limit: int) -> list[ReviewItem]: ...

    @abc.abstractmethod
    async def review(self, review_id: str) -> ReviewItem | None: ...

    @abc.abstractmethod
    async def decide(self, review_id: str, status: ReviewStatus, by: str, now: datetime) -> bool:
        """Close an open item; False when it is not open any more."""

    @abc.abstractmethod
    async def exists(self, person_id: str) -> bool: ...

    @abc.abstractmethod
    async def person_of(self, identifier: PatientIdentifier) -> str | None:
        """The person an identifier is linked to (their own id, not the survivor's)."""

    @abc.abstractmethod
    async def roots(self, person_ids: Iterable[str]) -> dict[str, str]:
        """Each person's surviving person (itself when not linked)."""

    @abc.abstractmethod
    async def group(self, person_id: str) -> set[str]:
        """The person and everyone linked or merged into them."""

    @abc.abstractmethod
    async def link(
        self,
        person_id: str,
        into_id: str,
        *,
        kind: LinkKind,
        by: str,
        now: datetime,
        review_id: str | None = None,
    ) -> Link:
        """Link the survivors of the two; SamePerson when they are one already."""

    @abc.abstractmethod
    async def active_link(self, person_id: str) -> Link | None: ...

    @abc.abstractmethod
    async def links_into(self, person_id: str) -> list[Link]: ...

    @abc.abstractmethod
    async def unlink(self, link: Link, *, by: str, now: datetime) -> None: ...

    @abc.abstractmethod
    async def recognitions_within(self, people: set[str], since: datetime) -> list[Recognition]:
        """Accepted outcomes since `since` whose check and result both lie in `people`."""


class IdentityUnitOfWork(UnitOfWork):
    """A review decision, a link or an unlink, its audit entry, and (unlink) the notices
    and reversals of the recognitions it undoes, in one transaction."""

    identity: IdentityIndex
    changes: ChangeLog
    audit: Audit
    safety: SafetyUnitOfWork
