"""The identity layer: pseudonymous links from identifiers to enterprise person ids.

Linking and merging happen while indexing (broker/storage/result_writer.py); this reads them.
"""

from __future__ import annotations

from datetime import date

from sqlalchemy import (
    ColumnElement,
    CompoundSelect,
    ScalarSelect,
    String,
    bindparam,
    func,
    literal,
    select,
    union_all,
)
from sqlalchemy.ext.asyncio import AsyncSession

from broker.domain.identifiers import PatientIdentifier
from broker.security.payload_cipher import PayloadCipher, Sealed
from broker.security.pseudonyms import Pseudonymiser
from broker.storage.tables import person, person_birth_date, person_link


def birth_date_context(person_id: str, hospital: str) -> bytes:
    """Associated data binding a sealed birth date to its person and hospital."""
    return f"birth-date|{person_id}|{hospital}".encode()


def with_merged(
    person_id: str | ColumnElement[str] | ScalarSelect[str],
) -> CompoundSelect[tuple[str]]:
    """The person and the people merged into them, as one set of ids to read rows of.

    Reads go through it because a merge and a concurrent write can cross: a worker that had
    not seen the merge yet writes rows for the merged person after the merge moved that
    person's rows (tests/e2e/test_processes.py met it). A union, not an OR, so that both
    tables are searched by index."""
    first = literal(person_id, String(36)) if isinstance(person_id, str) else person_id
    return union_all(
        select(first),
        select(person.c.id).where(person.c.merged_into == person_id),
    )


async def birth_date(session: AsyncSession, cipher: PayloadCipher, person_id: str) -> date | None:
    """The person's birth date when every hospital that sent one agrees; None when none
    was sent or they disagree (an age rule must never rest on a doubtful age)."""
    rows = await session.execute(
        select(person_birth_date).where(person_birth_date.c.person_id.in_(with_merged(person_id)))
    )
    found = set()
    for r in rows:
        sealed = Sealed(r.key_id, r.algorithm, r.nonce, r.ciphertext)
        plain = cipher.open(sealed, associated=birth_date_context(r.person_id, r.hospital_id))
        found.add(date.fromisoformat(plain.decode()))
    return found.pop() if len(found) == 1 else None


# Built once: constructing the expression costs more than running it (the check's hot path).
FIND_BY_PSEUDONYM = (
    select(person.c.id, person.c.merged_into)
    .join(person_link, person_link.c.person_id == person.c.id)
    .where(person_link.c.pseudonym == bindparam("pseudonym"))
)
# The person a row of `person` stands for now: the one it was merged into, else itself.
SURVIVOR = func.coalesce(person.c.merged_into, person.c.id)
# The surviving person FIND_BY_PSEUDONYM finds, as a value inside another statement (NULL
# when none): computed once per statement, so reads keyed by it still use their indexes.
SURVIVOR_BY_PSEUDONYM: ScalarSelect[str] = FIND_BY_PSEUDONYM.with_only_columns(
    SURVIVOR
).scalar_subquery()


class People:
    """Finds people by their identifiers' pseudonyms."""

    def __init__(self, session: AsyncSession, pseudonyms: Pseudonymiser) -> None:
        self._session = session
        self._pseudonyms = pseudonyms

    async def find(self, identifier: PatientIdentifier) -> str | None:
        """The (surviving) person an identifier is linked to, if any."""
        row = (
            await self._session.execute(
                FIND_BY_PSEUDONYM, {"pseudonym": self._pseudonyms.of(identifier)}
            )
        ).first()
        if row is None:
            return None
        return str(row.merged_into or row.id)
