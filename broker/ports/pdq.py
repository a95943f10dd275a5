"""What IHE PDQm (ITI-78 search, ITI-119 $match) reads of people's demographics: the
people whose stored records fall in given blocks, and those records opened (sealed at
rest, broker/storage/demographics.py); nothing else."""

from __future__ import annotations

import abc
from collections.abc import Iterable, Mapping, Sequence

from broker.domain.demographics import Demographics

# Each surviving person's records: (hospital, demographics), one per (person, hospital)
# stored, the people merged into them included.
Records = Mapping[str, Sequence[tuple[str, Demographics]]]


class PeopleDemographics(abc.ABC):
    @abc.abstractmethod
    async def blocked(self, keys: Iterable[str], *, max_block_size: int) -> Records:
        """The people (their surviving person) with a record in one of the blocks `keys`
        (broker.domain.matching.blocking_keys, in clear: pseudonymised by the adapter as
        ingest does); blocks holding more than `max_block_size` records are skipped."""

    @abc.abstractmethod
    async def of_people(self, person_ids: Iterable[str]) -> Records:
        """Those people's records (theirs and those of the people merged into them)."""
