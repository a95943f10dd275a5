"""People's stored demographics for IHE PDQm (broker.ports.pdq): blocks looked up by their
keyed pseudonyms exactly as ingest wrote them (broker/storage/demographics.py), records
opened in memory only. Reads are bounded as ingest's are: a block larger than the rules'
max_block_size is skipped, only blocked people's records are opened."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from sqlalchemy import func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from broker.domain.demographics import Demographics
from broker.ports.pdq import PeopleDemographics, Records
from broker.security.payload_cipher import PayloadCipher, Sealed
from broker.security.pseudonyms import Pseudonymiser
from broker.storage import demographics
from broker.storage.identity import roots
from broker.storage.tables import person, person_block, person_demographics

_CHUNK = 400  # values per IN list: well under any bound-parameter limit
MAX_PEOPLE = 1000  # people opened per request at most (every usable block is <= 100)


def _chunks(items: Sequence[str]) -> Iterable[Sequence[str]]:
    for i in range(0, len(items), _CHUNK):
        yield items[i : i + _CHUNK]


class SqlPeopleDemographics(PeopleDemographics):
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        cipher: PayloadCipher,
        pseudonyms: Pseudonymiser,
    ) -> None:
        self._sessions = sessions
        self._cipher = cipher
        self._pseudonyms = pseudonyms

    async def blocked(self, keys: Iterable[str], *, max_block_size: int) -> Records:
        wanted = sorted({self._pseudonyms.of_text(demographics.BLOCK_DOMAIN, k) for k in keys})
        if not wanted:
            return {}
        async with self._sessions() as s:
            usable: list[str] = []
            for chunk in _chunks(wanted):
                sizes = await s.execute(
                    select(person_block.c.pseudonym, func.count())
                    .where(person_block.c.pseudonym.in_(chunk))
                    .group_by(person_block.c.pseudonym)
                )
                usable += [p for p, n in sizes if n <= max_block_size]
            pairs: set[tuple[str, str]] = set()
            for chunk in _chunks(sorted(usable)):
                rows = await s.execute(
                    select(person_block.c.person_id, person_block.c.hospital_id).where(
                        person_block.c.pseudonym.in_(chunk)
                    )
                )
                pairs.update((pid, hospital) for pid, hospital in rows)
            return await self._open(s, pairs)

    async def of_people(self, person_ids: Iterable[str]) -> Records:
        ids = sorted(set(person_ids))
        if not ids:
            return {}
        async with self._sessions() as s:
            members = set(ids)
            for chunk in _chunks(ids):
                rows = await s.execute(
                    select(person.c.id).where(
                        or_(person.c.merged_into.in_(chunk), person.c.id.in_(chunk))
                    )
                )
                members.update(pid for (pid,) in rows)
            pairs: set[tuple[str, str]] = set()
            for chunk in _chunks(sorted(members)):
                rows = await s.execute(
                    select(
                        person_demographics.c.person_id, person_demographics.c.hospital_id
                    ).where(person_demographics.c.person_id.in_(chunk))
                )
                pairs.update((pid, hospital) for pid, hospital in rows)
            return await self._open(s, pairs)

    async def _open(self, s: AsyncSession, pairs: set[tuple[str, str]]) -> Records:
        """The records of `pairs`, under each one's surviving person."""
        ids = sorted({pid for pid, _ in pairs})[:MAX_PEOPLE]
        survivors = await roots(s, ids)
        out: dict[str, list[tuple[str, Demographics]]] = {}
        for chunk in _chunks(ids):
            rows = await s.execute(
                select(person_demographics).where(person_demographics.c.person_id.in_(chunk))
            )
            for r in rows:
                if (r.person_id, r.hospital_id) not in pairs:
                    continue
                sealed = Sealed(r.key_id, r.algorithm, r.nonce, r.ciphertext)
                opened = demographics.open_sealed(self._cipher, r.person_id, r.hospital_id, sealed)
                who = survivors.get(r.person_id, r.person_id)
                out.setdefault(who, []).append((r.hospital_id, opened))
        return out
