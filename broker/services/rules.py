"""The recognition rules as they stand now: the reference data plus run-time mappings."""

from __future__ import annotations

from dataclasses import replace

from broker import ports
from broker.domain.catalog import Catalog
from broker.services.checks import Rules


class RulesProvider:
    """Rules from schemas/ (loaded once) with the database's mappings merged in.

    Every check and ingest batch asks for the mapping table's version (one small query);
    a mapping added by any process is used from the next request on, without restarts.
    """

    def __init__(self, base: Rules) -> None:
        self.base = base
        self._version: tuple[int, int] | None = None
        self._rules = base

    async def current_rules(self, mappings: ports.Mappings) -> Rules:
        version = await mappings.version()
        if version != self._version:
            extra = await mappings.all()
            catalog = replace(
                self.base.catalog, local_codes={**self.base.catalog.local_codes, **extra}
            )
            self._rules = replace(self.base, catalog=catalog)
            self._version = version
        return self._rules

    async def catalog(self, mappings: ports.Mappings) -> Catalog:
        """The current catalog (what ingest needs of the rules)."""
        return (await self.current_rules(mappings)).catalog
