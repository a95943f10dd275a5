"""Port of mapping a hospital's local code to a catalog item (`mrb mapping add`)."""

from __future__ import annotations

import abc
from datetime import datetime

from broker.ports.admin import ChangeLog
from broker.ports.registry import HospitalRegistry
from broker.ports.unit_of_work import UnitOfWork


class CodeMappings(abc.ABC):
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
