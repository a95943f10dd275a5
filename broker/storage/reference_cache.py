"""Hospital profiles and the code-mapping version, kept in memory between checks.

Every check needs the profiles of every hospital (three small tables) and the version of
the local-code mappings. Both change rarely, and always through a table whose trigger bumps
`reference_stamp` in the same transaction (migration 0017). So a check reads the stamps (one
row per kind), and the profiles only when the registry's stamp moved. A change committed by
any process, or by hand, is seen by the next check.

The stamps are read before the data: a profile read in the same transaction is at least as
new as its stamp, never older, so a cached entry can be fresher than its key but never
staler than the database it claims to mirror.

A check reads them optimistically: it starts from the stamps the process last saw, and its
person lookup reads the current stamps in the same statement (broker/storage/check_uow.py).
When they moved in between, the check reads the reference data again before deciding
anything (broker/services/checks.py): no statement of its own for the stamps, and never a
decision on data older than the person lookup.
"""

from __future__ import annotations

from collections.abc import Mapping

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from broker.domain.registry import HospitalProfile
from broker.security.payload_cipher import PayloadCipher
from broker.security.pseudonyms import Pseudonymiser
from broker.storage import hospitals
from broker.storage.tables import reference_stamp
from broker.storage.unit_of_work import SealingUnitOfWork

STAMP_KINDS = ("registry", "mappings")  # what the cache keys on


def _kinds(stamps: Mapping[str, int]) -> dict[str, int | None]:
    return {k: stamps.get(k) for k in STAMP_KINDS}


class ReferenceCache:
    """One per process (broker.bootstrap.Container)."""

    def __init__(self) -> None:
        self._registry_stamp: int | None = None
        self._profiles: Mapping[str, HospitalProfile] = {}
        self._last_stamps: dict[str, int] | None = None  # as last read, by any unit of work

    def reader(self, session: AsyncSession, *, optimistic: bool = False) -> ReferenceReader:
        """What one unit of work reads through the cache (its stamps read once). An
        optimistic reader starts from the stamps last seen and must be confirmed."""
        return ReferenceReader(self, session, optimistic=optimistic)


class ReferenceReader:
    def __init__(
        self, cache: ReferenceCache, session: AsyncSession, *, optimistic: bool = False
    ) -> None:
        self._cache = cache
        self._session = session
        self._stamps: dict[str, int] | None = None
        self._optimistic = optimistic
        self._assumed = False  # the stamps in use were not read by this unit of work

    async def stamps(self) -> dict[str, int]:
        if self._stamps is None:
            last = self._cache._last_stamps
            if self._optimistic and last is not None:
                self._stamps, self._assumed = last, True
            else:
                self._stamps = await _read_stamps(self._session)
                self._cache._last_stamps = self._stamps
        return self._stamps

    def confirm(self, current: dict[str, int]) -> bool:
        """The stamps as of a later statement of this unit of work: True when those in use
        were current; else False, and from now on this reader uses the current ones (the
        next profile and mapping reads fetch what moved)."""
        self._cache._last_stamps = current
        if not self._assumed or _kinds(current) == _kinds(self._stamps or {}):
            self._assumed = False
            return True
        self._stamps, self._assumed = current, False
        return False

    @property
    def unconfirmed(self) -> bool:
        """Using stamps this unit of work has not read itself."""
        return self._assumed

    async def reread(self) -> bool:
        """Read the stamps now; True when those in use had moved."""
        return not self.confirm(await _read_stamps(self._session))

    async def profiles(self) -> Mapping[str, HospitalProfile]:
        stamp = (await self.stamps()).get("registry")
        cache = self._cache
        if stamp is None or stamp != cache._registry_stamp:
            profiles = await hospitals.profiles(self._session)
            if stamp is None:  # no stamps (never expected after migration 0017): no caching
                return profiles
            cache._profiles, cache._registry_stamp = profiles, stamp
        return cache._profiles

    async def mappings_version(self) -> tuple[int, int]:
        """The mappings' stamp, as the rules provider compares versions."""
        return ((await self.stamps()).get("mappings", -1), 0)


async def _read_stamps(session: AsyncSession) -> dict[str, int]:
    rows = await session.execute(select(reference_stamp.c.name, reference_stamp.c.version))
    return {name: int(version) for name, version in rows}


class ReferenceReadingUnitOfWork(SealingUnitOfWork):
    """A unit of work that reads hospital profiles and mapping versions through the
    process's cache (the check's and the CDS call's)."""

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        cipher: PayloadCipher,
        pseudonyms: Pseudonymiser,
        reference: ReferenceCache | None = None,
    ) -> None:
        super().__init__(sessions, cipher, pseudonyms)
        self._reference = reference or ReferenceCache()
