"""In-memory implementations of the ports (broker/ports.py): use cases unit-tested
without a database. Each fake subclasses its port, so a port that gains a method breaks
the fake at once instead of the test silently testing less."""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import date, datetime
from typing import Any

from broker import ports
from broker.domain.actors import Actor
from broker.domain.identifiers import PatientIdentifier
from broker.domain.ledger import ledger_period
from broker.domain.recognition import PriorItem
from broker.domain.registry import HospitalProfile
from broker.ports import reports as report_ports


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


# -- reports (broker/ports/reports.py) ---------------------------------------------------


@dataclass(frozen=True)
class BookedEntry:
    """A ledger entry (kind saving/reversal/flag, signed fen) or, with `reason`, a declined
    outcome, as the reports group them."""

    hospital: str | None
    item: str | None
    month: str
    category: str | None
    kind: str = "saving"
    fen: int = 0
    reason: str | None = None


class FakeReportFigures(report_ports.ReportFigures):
    def __init__(self, hospitals: Mapping[str, HospitalProfile] | None = None) -> None:
        self.entries: list[BookedEntry] = []  # ledger entries
        self.declines: list[BookedEntry] = []  # declined outcomes (reason set)
        self.recorded: list[tuple[datetime, report_ports.OrderedCheck]] = []
        self._hospitals = dict(sorted((hospitals or {}).items()))

    @staticmethod
    def _selected(
        rows: list[BookedEntry], by: Sequence[report_ports.Dimension], w: report_ports.Window
    ) -> dict[tuple[Any, ...], list[BookedEntry]]:
        groups: dict[tuple[Any, ...], list[BookedEntry]] = {}
        for e in rows:
            if (w.period_from and e.month < w.period_from) or (
                w.period_to and e.month > w.period_to
            ):
                continue
            if w.hospital and e.hospital != w.hospital:
                continue
            groups.setdefault(tuple(getattr(e, d) for d in by), []).append(e)
        return groups

    async def ledger_sums(
        self, by: Sequence[report_ports.Dimension], window: report_ports.Window
    ) -> list[report_ports.LedgerSum]:
        out = []
        for key, rows in self._selected(self.entries, by, window).items():
            for kind in sorted({e.kind for e in rows}):
                of_kind = [e for e in rows if e.kind == kind]
                out.append(
                    report_ports.LedgerSum(key, kind, len(of_kind), sum(e.fen for e in of_kind))
                )
        return out

    async def decline_counts(
        self, by: Sequence[report_ports.Dimension], window: report_ports.Window
    ) -> list[report_ports.DeclineCount]:
        out = []
        for key, rows in self._selected(self.declines, by, window).items():
            for reason in sorted({e.reason or "" for e in rows}):
                n = sum(1 for e in rows if (e.reason or "") == reason)
                out.append(report_ports.DeclineCount(key, reason, n))
        return out

    async def checks(self, start: datetime, end: datetime) -> list[report_ports.OrderedCheck]:
        return [c for at, c in self.recorded if start <= at < end]

    async def hospitals(self) -> Mapping[str, HospitalProfile]:
        return dict(self._hospitals)


# -- outcomes, safety notices, notices (broker/ports/outcomes.py) ------------------------


class FakeRecordedChecks(ports.RecordedChecks):
    def __init__(self) -> None:
        self.stored: dict[str, ports.CheckedItems] = {}

    async def get(self, check_id: str) -> ports.CheckedItems | None:
        return self.stored.get(check_id)


class FakeOutcomes(ports.Outcomes):
    def __init__(self) -> None:
        self.stored: list[ports.Outcome] = []

    async def of_check(self, check_id: str) -> dict[int, ports.Outcome]:
        return {o.item_index: o for o in self.stored if o.check_id == check_id}

    async def add(self, outcome: ports.Outcome) -> None:
        if outcome.item_index in await self.of_check(outcome.check_id):
            raise ports.AlreadyWritten("recognition_outcome")
        self.stored.append(outcome)

    async def accepted_for(self, result_ids: Sequence[str]) -> list[ports.Outcome]:
        return [o for o in self.stored if o.outcome == "accepted" and o.result_id in result_ids]


class FakeCandidateResults(ports.CandidateResults):
    def __init__(self) -> None:
        self.current: dict[str, ports.ResultState] = {}

    async def lock_current(self, result_id: str) -> ports.ResultState | None:
        return self.current.get(result_id)


class FakeLedger(ports.Ledger):
    def __init__(self) -> None:
        self.entries: list[ports.LedgerEntry] = []
        self.closed: set[str] = set()

    async def booking_period(self, moment: datetime) -> str:
        return ledger_period(moment, self.closed)

    async def add(self, entry: ports.LedgerEntry) -> str:
        if await self.find(entry.dedupe_key):
            raise ports.AlreadyWritten("ledger_entry")
        entry_id = f"entry-{len(self.entries) + 1}"
        self.entries.append(replace(entry, entry_id=entry_id))
        return entry_id

    async def find(self, dedupe_key: str) -> ports.LedgerEntry | None:
        return next((e for e in self.entries if e.dedupe_key == dedupe_key), None)


class FakeNotices(ports.Notices):
    """Notices join their check (`checks`, by check id) and result type as the tables do."""

    def __init__(self) -> None:
        self.stored: list[ports.Notice] = []
        self.read: dict[str, datetime] = {}
        self.checks: dict[str, ports.NoticedCheck] = {}
        self.resource_types: dict[str, str] = {}

    async def exists(self, dedupe_key: str) -> bool:
        return any(n.dedupe_key == dedupe_key for n in self.stored)

    async def add(self, notice: ports.Notice) -> None:
        self.stored.append(notice)

    async def for_recipient(
        self, hospital: str, recipient: str, *, unread_only: bool, limit: int
    ) -> list[ports.NoticeView]:
        views = [
            ports.NoticeView(
                n,
                self.read.get(n.notice_id),
                self.checks[n.check_id],
                self.resource_types.get(n.result_id, "DiagnosticReport"),
            )
            for n in reversed(self.stored)
            if (n.hospital_id, n.recipient) == (hospital, recipient)
            and n.check_id in self.checks
            and not (unread_only and n.notice_id in self.read)
        ]
        return views[:limit]

    async def mark_read(self, notice_id: str, hospital: str, recipient: str, now: datetime) -> bool:
        mine = [n for n in self.stored if (n.hospital_id, n.recipient) == (hospital, recipient)]
        if notice_id not in {n.notice_id for n in mine}:
            return False
        self.read.setdefault(notice_id, now)
        return True


class _FakeTransaction:
    """Rollback restores what the repositories held when the unit of work was entered, so
    a refusal provably leaves nothing behind; `commits` counts commits."""

    commits = 0

    def _repositories(self) -> dict[str, object]:
        raise NotImplementedError

    async def __aenter__(self) -> Any:
        self._before = {n: copy.deepcopy(vars(r)) for n, r in self._repositories().items()}
        return self

    async def commit(self) -> None:
        self.commits += 1
        self._before = {n: copy.deepcopy(vars(r)) for n, r in self._repositories().items()}

    async def rollback(self) -> None:
        for name, repo in self._repositories().items():
            vars(repo).clear()
            vars(repo).update(copy.deepcopy(self._before[name]))


class FakeOutcomeUnitOfWork(_FakeTransaction, ports.OutcomeUnitOfWork):
    def __init__(self, ledger: FakeLedger | None = None, events: FakeEvents | None = None):
        self.checks = FakeRecordedChecks()
        self.outcomes = FakeOutcomes()
        self.results = FakeCandidateResults()
        self.ledger = ledger or FakeLedger()
        self.events = events or FakeEvents()

    def _repositories(self) -> dict[str, object]:
        return {"outcomes": self.outcomes, "ledger": self.ledger, "events": self.events}

    def safety(self, notices: FakeNotices | None = None) -> FakeSafetyUnitOfWork:
        """The safety notifier's view of the same outcomes, ledger and events."""
        return FakeSafetyUnitOfWork(
            self.outcomes, self.ledger, notices or FakeNotices(), self.events
        )


class FakeSafetyUnitOfWork(ports.SafetyUnitOfWork):
    def __init__(
        self, outcomes: FakeOutcomes, ledger: FakeLedger, notices: FakeNotices, events: FakeEvents
    ) -> None:
        self.outcomes = outcomes
        self.ledger = ledger
        self.notices = notices
        self.events = events


class FakeNoticeUnitOfWork(_FakeTransaction, ports.NoticeUnitOfWork):
    def __init__(self, notices: FakeNotices) -> None:
        self.notices = notices
        self.audit = FakeAudit()

    def _repositories(self) -> dict[str, object]:
        return {"notices": self.notices, "audit": self.audit}


# -- FHIR read and search (broker/ports/fhir.py) ----------------------------------------


class FakeFhirIndex(ports.FhirIndex):
    """Index rows as a list; a search matches on patient, type and (unless a status is
    asked for) not withdrawn: the parameters' SQL is tested on real databases."""

    def __init__(self) -> None:
        self.rows: list[tuple[str, ports.Hit]] = []  # (person id, hit)
        self.results: dict[str, str] = {}  # result id -> resource type (indexed or not)
        self.people: dict[str, ports.PersonRecord] = {}
        self.patients: dict[str, list[int]] = {}  # person id -> Patient versions

    def add(self, person_id: str, hit: ports.Hit) -> None:
        self.rows.append((person_id, hit))
        self.results.setdefault(hit.result_id, hit.resource_type)

    async def resource(self, served_id: str, resource_type: str) -> ports.IndexedResource | None:
        for person_id, h in self.rows:
            if h.served_id == served_id and h.resource_type == resource_type:
                return ports.IndexedResource(h.result_id, h.version_id, h.status, person_id)
        return None

    async def result_id(self, result_id: str, resource_type: str) -> str | None:
        return result_id if self.results.get(result_id) == resource_type else None

    async def person(self, person_id: str) -> ports.PersonRecord | None:
        return self.people.get(person_id)

    def _matches(self, search: Any, person_id: str) -> list[ports.Hit]:
        return sorted(
            (
                h
                for p, h in self.rows
                if p == person_id
                and h.resource_type == search.resource_type
                and (search.status_given or h.status != "entered-in-error")
            ),
            key=lambda h: h.served_id,
        )

    async def count(self, search: Any, person_id: str) -> int:
        return len(self._matches(search, person_id))

    async def page(self, search: Any, person_id: str, offset: int, limit: int) -> list[ports.Hit]:
        return self._matches(search, person_id)[offset : offset + limit]

    async def patient_versions(self, person_id: str) -> list[int]:
        return list(self.patients.get(person_id, ()))


class FakePayloads(ports.Payloads):
    def __init__(self) -> None:
        self.views: dict[int, Any] = {}  # version id -> ResultView
        self.purged: set[int] = set()

    async def open(self, version_ids: Iterable[int]) -> ports.Opened:
        wanted = set(version_ids)
        views = {v: self.views[v] for v in wanted if v in self.views and v not in self.purged}
        return ports.Opened(views, frozenset(wanted & self.purged))


@dataclass
class FakeFhirReindex(ports.FhirReindex):
    refreshed: list[str] = field(default_factory=list)  # person or result ids

    async def person(self, person_id: str) -> None:
        self.refreshed.append(person_id)

    async def results(self, result_ids: Sequence[str]) -> None:
        self.refreshed.extend(result_ids)


@dataclass
class FakeAdmission(ports.Admission):
    admitted: list[tuple[PatientIdentifier | None, str | None]] = field(default_factory=list)
    refuse: Exception | None = None  # raised instead of admitting

    async def admit(
        self, actor: Actor, *, patient: PatientIdentifier | None, person_id: str | None
    ) -> None:
        if self.refuse is not None:
            raise self.refuse
        self.admitted.append((patient, person_id))


class FakeFhirUnitOfWork(ports.FhirUnitOfWork):
    """Its own factory (`uow=fake`): every unit of work shares the same stores, and the
    audit reads of committed work are in `committed_reads`."""

    def __init__(self) -> None:
        self.index = FakeFhirIndex()
        self.payloads = FakePayloads()
        self.people = FakePeople()
        self.audit = FakeAudit()
        self.commits = 0
        self.committed_reads: list[dict[str, Any]] = []

    def __call__(self) -> FakeFhirUnitOfWork:
        return self

    async def commit(self) -> None:
        self.commits += 1
        self.committed_reads += self.audit.reads
        await self.rollback()

    async def rollback(self) -> None:
        self.audit.reads = []


# -- CDS Hooks (broker/ports/cds.py) ------------------------------------------------------


class FakeDraftOrders(ports.DraftOrders):
    def __init__(self) -> None:
        self.rows: dict[tuple[str, str, str, str], ports.DraftCheck] = {}  # hospital,
        # pseudonym, draft ref, order key -> check item

    async def find(
        self, hospital: str, pseudonym: str, refs: Iterable[str]
    ) -> dict[tuple[str, str], ports.DraftCheck]:
        wanted = set(refs)
        return {
            (ref, key): check
            for (h, p, ref, key), check in self.rows.items()
            if (h, p) == (hospital, pseudonym) and ref in wanted
        }

    async def remember(
        self, hospital: str, pseudonym: str, draft_ref: str, order_key: str, check: ports.DraftCheck
    ) -> None:
        self.rows[(hospital, pseudonym, draft_ref, order_key)] = check


class FakeCards(ports.Cards):
    def __init__(self) -> None:
        self.issued: list[ports.StoredCard] = []

    async def add(self, card: ports.StoredCard) -> None:
        self.issued.append(card)

    async def by_uuid(self, uuids: Sequence[str]) -> dict[str, ports.StoredCard]:
        return {c.uuid: c for c in self.issued if c.uuid in uuids}

    async def latest(
        self, items: Iterable[tuple[str, int]], hospital: str
    ) -> dict[tuple[str, int], ports.StoredCard]:
        wanted = set(items)
        return {
            (c.check_id, c.item_index): c
            for c in sorted(self.issued, key=lambda c: c.created_at)
            if (c.check_id, c.item_index) in wanted and c.hospital_id == hospital
        }


class FakeCheckRecords(ports.CheckRecords):
    """The checks the check's unit of work committed, and the outcomes recorded for them."""

    def __init__(self, checks: FakeCheckUnitOfWork, outcomes: FakeOutcomes) -> None:
        self._checks = checks
        self._outcomes = outcomes

    async def items(self, check_ids: Iterable[str]) -> dict[str, tuple[Any, ...]]:
        wanted = set(check_ids)
        return {
            c.check_id: c.items for c in self._checks.committed["checks"] if c.check_id in wanted
        }

    async def decided(self, check_ids: Iterable[str]) -> set[tuple[str, int]]:
        wanted = set(check_ids)
        return {(o.check_id, o.item_index) for o in self._outcomes.stored if o.check_id in wanted}


class FakeCdsResults(ports.CdsResults):
    def __init__(self, results: FakeResults) -> None:
        self._results = results
        self.now: dict[str, ports.PriorResultState] = {}  # result id -> its state now

    async def states(self, result_ids: Iterable[str]) -> dict[str, ports.PriorResultState]:
        return {r: self.now[r] for r in result_ids if r in self.now}

    async def prior_items(self, person_id: str) -> list[PriorItem]:
        return await self._results.prior_items(person_id)


class FakeCallAdmission(ports.CallAdmission):
    def __init__(self) -> None:
        self.admitted: list[tuple[Actor, tuple[str, ...], bool]] = []

    async def admit(self, actor: Actor, patients: Sequence[str], *, emergency: bool) -> None:
        self.admitted.append((actor, tuple(patients), emergency))

    def refuse_deferred(self) -> None:
        pass


class FakeCdsUnitOfWork(_FakeTransaction, ports.CdsUnitOfWork):
    """Every step of a CDS call shares this store: people, results and the stored checks
    are the check's unit of work's (`check`), outcomes those of `outcome`; what a step
    writes (draft orders, cards, audit reads) is undone unless it commits."""

    def __init__(self, check: FakeCheckUnitOfWork, outcome: FakeOutcomeUnitOfWork) -> None:
        self.hospitals = check.hospitals
        self.people = check.people
        self.mappings = check.mappings
        self.results = FakeCdsResults(check.results)
        self.checks = FakeCheckRecords(check, outcome.outcomes)
        self.drafts = FakeDraftOrders()
        self.cards = FakeCards()
        self.audit = FakeAudit()

    def _repositories(self) -> dict[str, object]:
        return {"drafts": self.drafts, "cards": self.cards, "audit": self.audit}
