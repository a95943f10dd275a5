"""In-memory implementations of the ports (broker/ports.py): use cases unit-tested
without a database. Each fake subclasses its port, so a port that gains a method breaks
the fake at once instead of the test silently testing less."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

from broker import ports
from broker.domain.actors import Actor
from broker.domain.identifiers import PatientIdentifier
from broker.domain.recognition import PriorItem
from broker.domain.registry import HospitalProfile


class FakeHospitals(ports.Hospitals):
    def __init__(self, profiles: Mapping[str, HospitalProfile]) -> None:
        self._profiles = dict(profiles)

    async def profiles(self) -> Mapping[str, HospitalProfile]:
        return dict(self._profiles)


class FakePeople(ports.People):
    def __init__(self) -> None:
        self.links: dict[str, str] = {}  # identifier link key -> person id
        self.born: dict[str, date] = {}

    async def find(self, identifier: PatientIdentifier) -> str | None:
        return self.links.get(identifier.link_key)

    async def birth_date(self, person_id: str) -> date | None:
        return self.born.get(person_id)


class FakeResults(ports.Results):
    def __init__(self) -> None:
        self.items: dict[str, list[PriorItem]] = {}  # person id -> items
        self.stamps: dict[str, str] = {}  # result id -> version stamp

    async def prior_items(self, person_id: str) -> list[PriorItem]:
        return list(self.items.get(person_id, ()))

    async def versions(self, result_ids: Sequence[str]) -> dict[str, str]:
        return {r: self.stamps[r] for r in result_ids if r in self.stamps}


class FakeMappings(ports.Mappings):
    def __init__(self) -> None:
        self.codes: dict[tuple[str, str, str], str] = {}

    async def version(self) -> tuple[int, int]:
        return len(self.codes), len(self.codes)

    async def all(self) -> ports.LocalCodes:
        return dict(self.codes)


class FakeChecks(ports.Checks):
    def __init__(self) -> None:
        self.added: list[ports.RecordedCheck] = []

    async def add(self, check: ports.RecordedCheck) -> None:
        self.added.append(check)


@dataclass
class FakeEvents(ports.Events):
    appended: list[tuple[str, str, dict[str, Any], datetime]] = field(default_factory=list)

    async def append(self, type_: str, key: str, body: dict[str, Any], now: datetime) -> str:
        self.appended.append((type_, key, body, now))
        return f"event-{len(self.appended)}"


@dataclass
class FakeAudit(ports.Audit):
    reads: list[dict[str, Any]] = field(default_factory=list)

    async def record_read(
        self,
        actor: Actor,
        *,
        action: str,
        purpose: str,
        patient: PatientIdentifier | None,
        person_id: str | None,
        detail: dict[str, Any] | None = None,
    ) -> None:
        self.reads.append(
            {
                "actor": actor,
                "action": action,
                "purpose": purpose,
                "patient": patient,
                "person_id": person_id,
                "detail": detail,
            }
        )


class FakeCheckUnitOfWork(ports.CheckUnitOfWork):
    """What a committed check leaves behind is visible only after `commit`, as in a
    database: `committed` holds the checks, events and audit reads of committed work."""

    def __init__(self, hospitals: Mapping[str, HospitalProfile]) -> None:
        self.hospitals = FakeHospitals(hospitals)
        self.people = FakePeople()
        self.results = FakeResults()
        self.mappings = FakeMappings()
        self.checks = FakeChecks()
        self.events = FakeEvents()
        self.audit = FakeAudit()
        self.commits = 0
        self.committed: dict[str, list[Any]] = {"checks": [], "events": [], "reads": []}

    async def commit(self) -> None:
        self.commits += 1
        self.committed["checks"] += self.checks.added
        self.committed["events"] += self.events.appended
        self.committed["reads"] += self.audit.reads
        await self.rollback()  # what remains pending starts empty again

    async def rollback(self) -> None:
        self.checks.added = []
        self.events.appended = []
        self.audit.reads = []
