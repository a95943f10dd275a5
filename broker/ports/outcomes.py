"""Ports of what follows a check: the doctor's outcome per item (and its saving), the
safety notifier (a recognised result corrected or withdrawn) and the doctor's notices.

Three units of work: recording outcomes and reading or marking notices each own one
transaction; the safety notifier works inside the ingest transaction that makes the
change current, so the notice, the ledger entry and the event exist exactly when it does.
"""

from __future__ import annotations

import abc
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from broker.domain.check_items import StoredCheckItem
from broker.domain.recognition import Text
from broker.ports.check import Audit, Events
from broker.ports.unit_of_work import UnitOfWork


class AlreadyWritten(Exception):
    """A concurrent unit of work stored the same outcome or ledger key first (a retry racing
    its original): run the use case again to read what it stored."""


@dataclass(frozen=True)
class CheckedItems:
    """What an outcome needs of a stored check: who ordered and what it answered."""

    check_id: str
    ordering_hospital: str
    items: tuple[StoredCheckItem, ...]


class RecordedChecks(abc.ABC):
    @abc.abstractmethod
    async def get(self, check_id: str) -> CheckedItems | None: ...


@dataclass(frozen=True)
class Outcome:
    """A doctor's outcome for one item of a check, as stored."""

    check_id: str
    item_index: int
    outcome: str  # an OutcomeKind value
    reason: str | None
    reason_text: str | None
    catalog_code: str | None
    category: str | None
    period: str  # the month recorded in (YYYY-MM, China Standard Time)
    result_id: str | None  # the recognised (candidate) result
    hospital_id: str  # the ordering hospital
    recorded_by: str
    channel: str  # api | cds-hooks | web
    recorded_at: datetime


class Outcomes(abc.ABC):
    @abc.abstractmethod
    async def of_check(self, check_id: str) -> dict[int, Outcome]:
        """The outcomes recorded for a check, by item index."""

    @abc.abstractmethod
    async def add(self, outcome: Outcome) -> None:
        """Store an outcome; AlreadyWritten when its item got one concurrently."""

    @abc.abstractmethod
    async def accepted_for(self, result_ids: Sequence[str]) -> list[Outcome]:
        """Every accepted outcome that recognised one of these results."""


@dataclass(frozen=True)
class ResultState:
    status: str
    version: str  # the result's `updated_at`, ISO, as a check stamps its candidates


class CandidateResults(abc.ABC):
    @abc.abstractmethod
    async def lock_current(self, result_id: str) -> ResultState | None:
        """The result's state now, held until commit against ingest making a new version
        current: a withdrawal either is seen here or sees the acceptance."""


@dataclass(frozen=True)
class LedgerEntry:
    """A line of the append-only savings ledger (amounts in integer fen)."""

    dedupe_key: str
    kind: str  # saving | reversal | flag
    period: str  # the month booked into
    amount_fen: int
    ordering_hospital: str
    source_hospital: str | None
    catalog_code: str | None
    category: str | None
    check_id: str
    item_index: int
    result_id: str | None
    recorded_by: str
    occurred_at: datetime
    recorded_at: datetime
    reverses: str | None = None  # entry_id of the saving a reversal or flag is about
    reason: str | None = None
    # Who would have paid amount_fen, fixed when the saving is booked (a reversal negates
    # both): the medical-insurance fund's fraction as the check's catalog gave it, and the
    # two shares in fen (fund + patient = amount). None: the catalog gave no ratio.
    fund_share: str | None = None
    fund_fen: int | None = None
    patient_fen: int | None = None
    entry_id: str | None = None  # given when stored


class Ledger(abc.ABC):
    @abc.abstractmethod
    async def booking_period(self, moment: datetime) -> str:
        """The first open month from `moment`'s, held open until commit."""

    @abc.abstractmethod
    async def add(self, entry: LedgerEntry) -> str:
        """Append an entry and return its entry_id; AlreadyWritten when its de-duplication
        key was stored concurrently."""

    @abc.abstractmethod
    async def find(self, dedupe_key: str) -> LedgerEntry | None: ...


@dataclass(frozen=True)
class Notice:
    """A safety notice to the doctor who recognised a result that later changed."""

    notice_id: str
    dedupe_key: str
    hospital_id: str
    recipient: str
    check_id: str
    item_index: int
    result_id: str
    kind: str  # corrected | withdrawn
    new_status: str
    action: str  # reverse | flag
    message: Text
    created_at: datetime


@dataclass(frozen=True)
class NoticedCheck:
    """The check a notice is about, as its recipient reads it (the patient unsealed)."""

    order_time: datetime
    person_id: str | None
    patient: dict[str, str] | None  # {"system", "value"}; None for checks stored without
    items: tuple[StoredCheckItem, ...]


@dataclass(frozen=True)
class NoticeView:
    notice: Notice
    read_at: datetime | None
    check: NoticedCheck
    resource_type: str  # of the changed result, for its FHIR address


class Notices(abc.ABC):
    @abc.abstractmethod
    async def exists(self, dedupe_key: str) -> bool: ...

    @abc.abstractmethod
    async def add(self, notice: Notice) -> None: ...

    @abc.abstractmethod
    async def for_recipient(
        self, hospital: str, recipient: str, *, unread_only: bool, limit: int
    ) -> list[NoticeView]:
        """The recipient's notices, newest first."""

    @abc.abstractmethod
    async def mark_read(self, notice_id: str, hospital: str, recipient: str, now: datetime) -> bool:
        """Mark the recipient's notice read (the first reading time stays); False when the
        recipient has no such notice."""


class OutcomeUnitOfWork(UnitOfWork):
    """Everything recording outcomes reads and writes, in one transaction: the outcome,
    its ledger entry and its event are stored together or not at all."""

    checks: RecordedChecks
    outcomes: Outcomes
    results: CandidateResults
    ledger: Ledger
    events: Events


class SafetyUnitOfWork(abc.ABC):
    """What the safety notifier reads and writes, inside the ingest transaction that makes
    a result's new version current (ingest commits it, or undoes it in a savepoint)."""

    outcomes: Outcomes
    ledger: Ledger
    notices: Notices
    events: Events


class NoticeUnitOfWork(UnitOfWork):
    """A doctor's notices and the audit of reading them, in one transaction."""

    notices: Notices
    audit: Audit
