"""The identity layer: pseudonymous links from identifiers to enterprise person ids.

Linking and merging happen while indexing (broker/ingest/batch.py); this reads them.
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from broker.domain.identifiers import PatientIdentifier
from broker.security.pseudonyms import Pseudonymiser
from broker.storage.tables import person, person_link


class People:
    """Finds people by their identifiers' pseudonyms."""

    def __init__(self, session: AsyncSession, pseudonyms: Pseudonymiser) -> None:
        self._session = session
        self._pseudonyms = pseudonyms

    async def find(self, identifier: PatientIdentifier) -> str | None:
        """The (surviving) person an identifier is linked to, if any."""
        row = (
            await self._session.execute(
                select(person.c.id, person.c.merged_into)
                .join(person_link, person_link.c.person_id == person.c.id)
                .where(person_link.c.pseudonym == self._pseudonyms.of(identifier))
            )
        ).first()
        if row is None:
            return None
        return str(row.merged_into or row.id)
