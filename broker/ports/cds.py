"""The CDS Hooks use cases' ports: what answering a hook call and recording its feedback
read and write (draft orders, issued cards, the checks they point at), the EHR client
registry, and the rate limits of one call.

One `CdsUnitOfWork` per step of a call: a call reads (catalog, person, draft orders),
reads the EHR's FHIR server and runs the check outside any transaction, then stores its
draft orders and cards in one commit.
"""

from __future__ import annotations

import abc
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from broker.domain.actors import Actor
from broker.domain.check_items import StoredCheckItem
from broker.domain.recognition import PriorItem
from broker.ports.check import Audit, Hospitals, Mappings, People
from broker.ports.consent import ConsentReader
from broker.ports.unit_of_work import UnitOfWork


@dataclass(frozen=True)
class RegisteredClient:
    """An EHR allowed to call the CDS Services, as its JWT is checked against."""

    issuer: str
    hospital: str
    jwks_url: str | None = None
    jwks: dict[str, Any] | None = None
    fhir_servers: tuple[str, ...] = ()  # the only fhirServer bases mrb may read from
    launch_origins: tuple[str, ...] = ()  # HIS pages that may frame the launch page


@dataclass(frozen=True)
class ClientRow:
    """A registered EHR as an administrator lists it."""

    issuer: str
    hospital: str
    jwks_url: str | None
    keys: int | None  # inline JWK Set: how many keys
    added_by: str
    added_at: datetime
    revoked_at: datetime | None
    fhir_servers: tuple[str, ...] = ()
    launch_origins: tuple[str, ...] = ()


@dataclass(frozen=True)
class DraftCheck:
    """The check item a draft order was decided in (order-sign reuses order-select's)."""

    check_id: str
    item_index: int
    created_at: datetime


@dataclass(frozen=True)
class StoredCard:
    """A card as issued (its content sealed at rest by the storage adapter)."""

    uuid: str
    suggestion_uuid: str | None
    service_id: str
    issuer: str
    hospital_id: str
    user_id: str
    check_id: str
    item_index: int
    kind: str
    draft_ref: str | None
    content: dict[str, Any]
    created_at: datetime


@dataclass(frozen=True)
class PriorResultState:
    """What a card needs of a prior result now: its status, version stamp and FHIR type."""

    status: str
    version: str  # `updated_at`, ISO: compared with the check item's candidate_version
    resource_type: str


class DraftOrders(abc.ABC):
    @abc.abstractmethod
    async def find(
        self, hospital: str, pseudonym: str, refs: Iterable[str]
    ) -> dict[tuple[str, str], DraftCheck]:
        """(draft ref, order key) -> the check item it was decided in."""

    @abc.abstractmethod
    async def remember(
        self, hospital: str, pseudonym: str, draft_ref: str, order_key: str, check: DraftCheck
    ) -> None:
        """Point the draft order at a check item (a newer check replaces an older one)."""


class Cards(abc.ABC):
    @abc.abstractmethod
    async def add(self, card: StoredCard) -> None: ...

    @abc.abstractmethod
    async def by_uuid(self, uuids: Sequence[str]) -> dict[str, StoredCard]: ...

    @abc.abstractmethod
    async def latest(
        self, items: Iterable[tuple[str, int]], hospital: str
    ) -> dict[tuple[str, int], StoredCard]:
        """The last card issued for each (check, item) to the hospital's clients."""


class CheckRecords(abc.ABC):
    """Stored checks as CDS reads them back."""

    @abc.abstractmethod
    async def items(self, check_ids: Iterable[str]) -> dict[str, tuple[StoredCheckItem, ...]]:
        """Each stored check's items, in the order asked."""

    @abc.abstractmethod
    async def decided(self, check_ids: Iterable[str]) -> set[tuple[str, int]]:
        """(check, item) pairs that already have the doctor's outcome."""


class CdsResults(abc.ABC):
    @abc.abstractmethod
    async def states(self, result_ids: Iterable[str]) -> dict[str, PriorResultState]: ...

    @abc.abstractmethod
    async def prior_items(self, person_id: str) -> list[PriorItem]:
        """Every item of the person's current results, from every hospital."""


class CdsUnitOfWork(UnitOfWork):
    """What one step of a CDS call reads and writes, in one transaction."""

    hospitals: Hospitals
    people: People
    mappings: Mappings
    results: CdsResults
    checks: CheckRecords
    drafts: DraftOrders
    cards: Cards
    audit: Audit
    consents: ConsentReader  # the patient's opt-out and consents, in this step's session


class CallAdmission(abc.ABC):
    """The rate limits of one hook call (broker/services/rate_limits.py)."""

    @abc.abstractmethod
    async def admit(self, actor: Actor, patients: Sequence[str], *, emergency: bool) -> None:
        """Let the doctor look up `patients` (pseudonyms) or raise; an emergency passes."""

    @abc.abstractmethod
    def refuse_deferred(self) -> None:
        """Raise for a request limit the API edge deferred (a call that looks nobody up)."""


class CdsClients(abc.ABC):
    """The EHRs allowed to call the CDS Services (`mrb cds ...`)."""

    @abc.abstractmethod
    async def hospital_exists(self, hospital: str) -> bool: ...

    @abc.abstractmethod
    async def put(self, client: RegisteredClient, *, by: str, at: datetime) -> None:
        """Register the client, or replace its registration and un-revoke it."""

    @abc.abstractmethod
    async def set_fhir_servers(self, issuer: str, fhir_servers: Sequence[str]) -> bool:
        """False when there is no such client."""

    @abc.abstractmethod
    async def set_launch_origins(self, issuer: str, origins: Sequence[str]) -> bool:
        """False when there is no such client."""

    @abc.abstractmethod
    async def revoke(self, issuer: str, at: datetime) -> bool:
        """False when there is no such active client."""

    @abc.abstractmethod
    async def all(self) -> list[ClientRow]: ...
