"""The patient-identity review's unit of work on SQLAlchemy (ports in
broker/ports/identity.py): the queue, links, the change log, and the safety notifier's
repositories bound to the same transaction (an unlink's notices and reversals commit with
it, or not at all)."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncSession

from broker.domain.identifiers import PatientIdentifier
from broker.domain.identity_review import LinkKind, ReviewStatus
from broker.ports import identity as ports
from broker.security.payload_cipher import PayloadCipher
from broker.security.pseudonyms import Pseudonymiser
from broker.storage import identity
from broker.storage.admin_uow import SqlChangeLog
from broker.storage.check_uow import SqlAudit
from broker.storage.outcome_uow import SqlSafetyUnitOfWork
from broker.storage.unit_of_work import SealingUnitOfWork
from broker.storage.write_batch import Writes


class SqlIdentityIndex(ports.IdentityIndex):
    def __init__(self, uow: SqlIdentityUnitOfWork, session: AsyncSession) -> None:
        self._uow = uow
        self._s = session

    async def reviews(self, status: ReviewStatus | None, limit: int) -> list[ports.ReviewItem]:
        return await identity.reviews(self._s, status, limit)

    async def review(self, review_id: str) -> ports.ReviewItem | None:
        return await identity.review_item(self._s, review_id)

    async def decide(self, review_id: str, status: ReviewStatus, by: str, now: datetime) -> bool:
        return await identity.decide(self._s, review_id, status, by, now)

    async def exists(self, person_id: str) -> bool:
        return await identity.exists(self._s, person_id)

    async def person_of(self, identifier: PatientIdentifier) -> str | None:
        return await identity.person_of(self._s, self._uow.pseudonyms.of(identifier))

    async def roots(self, person_ids: Iterable[str]) -> dict[str, str]:
        return await identity.roots(self._s, person_ids)

    async def group(self, person_id: str) -> set[str]:
        return await identity.group(self._s, person_id)

    async def link(
        self,
        person_id: str,
        into_id: str,
        *,
        kind: LinkKind,
        by: str,
        now: datetime,
        review_id: str | None = None,
    ) -> ports.Link:
        return await identity.link(
            self._s, person_id, into_id, kind=kind, by=by, now=now, review_id=review_id
        )

    async def active_link(self, person_id: str) -> ports.Link | None:
        return await identity.active_link(self._s, person_id)

    async def links_into(self, person_id: str) -> list[ports.Link]:
        return await identity.active_links_into(self._s, person_id)

    async def unlink(self, link: ports.Link, *, by: str, now: datetime) -> None:
        await identity.unlink(self._s, link, by=by, now=now)

    async def recognitions_within(
        self, people: set[str], since: datetime
    ) -> list[ports.Recognition]:
        return await identity.recognitions_within(self._s, self._uow.cipher, people, since)


class SqlIdentityUnitOfWork(SealingUnitOfWork, ports.IdentityUnitOfWork):
    @property
    def cipher(self) -> PayloadCipher:
        return self._cipher

    @property
    def pseudonyms(self) -> Pseudonymiser:
        return self._pseudonyms

    def _bind(self, session: AsyncSession) -> None:
        self.identity = SqlIdentityIndex(self, session)
        self.changes = SqlChangeLog(session)
        self.audit = SqlAudit(Writes(session), self._pseudonyms)
        self.safety = SqlSafetyUnitOfWork(session)
