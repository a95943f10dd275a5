"""The identity layer: pseudonymous links from identifiers to enterprise person ids."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import UTC, datetime

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from broker.domain.identifiers import PatientIdentifier
from broker.security.pseudonyms import Pseudonymiser
from broker.storage.tables import person, person_link, result, result_item


class People:
    """Finds, creates and merges people by their identifiers' pseudonyms."""

    def __init__(self, session: AsyncSession, pseudonyms: Pseudonymiser) -> None:
        self._session = session
        self._pseudonyms = pseudonyms

    async def find(self, identifier: PatientIdentifier) -> str | None:
        """The person an identifier is linked to, if any."""
        found = await self._people_of([self._pseudonyms.of(identifier)])
        return found[0] if found else None

    async def link(self, identifiers: Sequence[PatientIdentifier], *, create: bool) -> str | None:
        """Link every identifier to one person and return its id.

        Identifiers already linked to different people prove those are one person:
        they are merged into the oldest (links and results move; the others point to
        it). With nothing linked yet, a person is created only when `create` is set.
        """
        pseudonyms = {self._pseudonyms.of(i): i for i in identifiers}
        people, known = await self._lookup(list(pseudonyms))
        if not people:
            if not create:
                return None
            person_id = str(uuid.uuid4())
            await self._session.execute(
                person.insert(), dict(id=person_id, created_at=datetime.now(UTC))
            )
        else:
            person_id = people[0]
            if len(people) > 1:
                await self._merge(person_id, people[1:])
        now = datetime.now(UTC)
        new = [
            {
                "pseudonym": p,
                "person_id": person_id,
                "scope": i.scope.value,
                "hospital_id": i.hospital,
                "created_at": now,
            }
            for p, i in pseudonyms.items()
            if p not in known
        ]
        if new:
            await self._session.execute(person_link.insert(), new)
        return person_id

    async def _people_of(self, pseudonyms: list[str]) -> list[str]:
        return (await self._lookup(pseudonyms))[0]

    async def _lookup(self, pseudonyms: list[str]) -> tuple[list[str], set[str]]:
        """Surviving people linked to any pseudonym (oldest first), and the known pseudonyms."""
        rows = await self._session.execute(
            select(person_link.c.pseudonym, person.c.id, person.c.merged_into)
            .join(person, person_link.c.person_id == person.c.id)
            .where(person_link.c.pseudonym.in_(pseudonyms))
            .order_by(person.c.created_at, person.c.id)
        )
        people: list[str] = []
        known: set[str] = set()
        for pseudonym, pid, merged_into in rows:
            known.add(pseudonym)
            survivor = merged_into or pid
            if survivor not in people:
                people.append(survivor)
        return people, known

    async def _merge(self, survivor: str, others: list[str]) -> None:
        for table in (person_link, result, result_item):
            await self._session.execute(
                update(table).where(table.c.person_id.in_(others)).values(person_id=survivor)
            )
        await self._session.execute(
            update(person).where(person.c.id.in_(others)).values(merged_into=survivor)
        )
        await self._session.execute(
            update(person).where(person.c.merged_into.in_(others)).values(merged_into=survivor)
        )
