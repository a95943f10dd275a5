"""Port of mapping a hospital's local code to a catalog item (`mrb mapping add`)."""

from __future__ import annotations

import abc
from dataclasses import dataclass
from datetime import datetime

from broker.ports.admin import ChangeLog
from broker.ports.registry import HospitalRegistry
from broker.ports.unit_of_work import UnitOfWork


@dataclass(frozen=True)
class Unmapped:
    """A local code seen in results that maps to no catalog item (the worklist's row)."""

    hospital: str
    system: str
    code: str
    display: str | None
    occurrences: int
    first_seen: datetime
    last_seen: datetime
    mapped_to: str | None


class CodeMappings(abc.ABC):
    @abc.abstractmethod
    async def unmapped(self, hospital: str | None, *, include_mapped: bool) -> list[Unmapped]:
        """The worklist, most frequent first: one hospital's or (None) every hospital's."""

    @abc.abstractmethod
    async def add(
        self, hospital: str, system: str, code: str, catalog_code: str, by: str, now: datetime
    ) -> int:
        """Map (or re-map) a local code and take it off the unmapped-code worklist; how
        many indexed results carry the code."""


class MappingUnitOfWork(UnitOfWork):
    """A mapping and its audit entry, in one transaction."""

    hospitals: HospitalRegistry
    mappings: CodeMappings
    changes: ChangeLog
