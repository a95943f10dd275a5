"""In-memory implementations of the ports (broker/ports.py): use cases unit-tested
without a database. Each fake subclasses its port, so a port that gains a method breaks
the fake at once instead of the test silently testing less."""

from __future__ import annotations

import copy
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence, Set
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime
from typing import Any

from broker import ports
from broker.domain.actors import Actor
from broker.domain.identifiers import PatientIdentifier
from broker.domain.ledger import ledger_period
from broker.domain.recognition import PriorItem, RowFilter
from broker.domain.registry import Certification, HospitalProfile
from broker.domain.results import ParsedMessage
from broker.ingest.envelope import InboundMessage
from broker.ports import access as access_ports
from broker.ports import admin as admin_ports
from broker.ports import ingest as ingest_ports
from broker.ports import mappings as mapping_ports
from broker.ports import registry as registry_ports
from broker.ports import reports as report_ports
from broker.ports.consent import NO_CONSENT_RECORDS, ConsentReader
from broker.ports.fhir import Viewer
from broker.security.tokens import IssuedToken


class FakeHospitals(ports.Hospitals):
    def __init__(self, profiles: Mapping[str, HospitalProfile]) -> None:
        self._profiles = dict(profiles)

    async def profiles(self) -> Mapping[str, HospitalProfile]:
        return dict(self._profiles)


class FakePeople(ports.People):
    def __init__(self) -> None:
        self.links: dict[str, str] = {}  # identifier link key -> person id
        self.born: dict[str, date] = {}

    async def find(
        self, identifier: PatientIdentifier, rows: RowFilter | None = None
    ) -> str | None:
        return self.links.get(identifier.link_key)

    async def birth_date(self, person_id: str) -> date | None:
        return self.born.get(person_id)


class FakeResults(ports.Results):
    def __init__(self) -> None:
        self.items: dict[str, list[PriorItem]] = {}  # person id -> items

    async def prior_items(
        self,
        person_id: str,
        matters: Callable[[Sequence[PriorItem]], Set[str]] | None = None,
        rows: RowFilter | None = None,
    ) -> list[PriorItem]:
        items = list(self.items.get(person_id, ()))
        if rows is not None:  # as storage's index search: the results holding an admitted row
            found = {i.result_id for i in items if rows.admits(i)}
            items = [i for i in items if i.result_id in found]
        if matters is None:
            return items
        keep = matters([replace(i, summary="", value=None) for i in items])  # as unopened
        return [i for i in items if i.result_id in keep]


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
        self.consents: ConsentReader = NO_CONSENT_RECORDS
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
    source: str | None = None  # the hospital whose result was recognised
    fund: int | None = None  # the fund's share in fen; None: no ratio given
    patient: int | None = None


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
            if w.hospital and (e.source if w.side == "source" else e.hospital) != w.hospital:
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
                split = [e for e in of_kind if e.fund is not None]
                out.append(
                    report_ports.LedgerSum(
                        key,
                        kind,
                        len(of_kind),
                        sum(e.fen for e in of_kind),
                        split_count=len(split),
                        fund_fen=sum(e.fund or 0 for e in split),
                        patient_fen=sum(e.patient or 0 for e in split),
                    )
                )
        return out

    async def decline_counts(
        self, by: Sequence[report_ports.Dimension], window: report_ports.Window
    ) -> list[report_ports.DeclineCount]:
        if window.side == "source" or "source" in by:
            return []  # as in storage: outcomes have no source column
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
        # result id -> (issuing hospital, its rows' (system, code)): only results whose
        # sensitivity a test is about (broker.ports.fhir.Viewer); others are visible.
        self.coded: dict[str, tuple[str, frozenset[tuple[str, str]]]] = {}

    def add(self, person_id: str, hit: ports.Hit) -> None:
        self.rows.append((person_id, hit))
        self.results.setdefault(hit.result_id, hit.resource_type)

    def _visible(self, result_id: str, viewer: Viewer) -> bool:
        hospital, codes = self.coded.get(result_id, ("", frozenset()))
        return hospital == viewer.hospital or not codes & viewer.hidden

    async def resource(
        self, served_id: str, resource_type: str, *, viewer: Viewer
    ) -> ports.IndexedResource | None:
        for person_id, h in self.rows:
            if (
                h.served_id == served_id
                and h.resource_type == resource_type
                and self._visible(h.result_id, viewer)
            ):
                return ports.IndexedResource(h.result_id, h.version_id, h.status, person_id)
        return None

    async def result_id(self, result_id: str, resource_type: str, *, viewer: Viewer) -> str | None:
        wanted = self.results.get(result_id) == resource_type
        return result_id if wanted and self._visible(result_id, viewer) else None

    async def person(self, person_id: str) -> ports.PersonRecord | None:
        return self.people.get(person_id)

    def _matches(self, search: Any, person_id: str, viewer: Viewer) -> list[ports.Hit]:
        return sorted(
            (
                h
                for p, h in self.rows
                if p == person_id
                and h.resource_type == search.resource_type
                and (search.status_given or h.status != "entered-in-error")
                and self._visible(h.result_id, viewer)
            ),
            key=lambda h: h.served_id,
        )

    async def count(self, search: Any, person_id: str, *, viewer: Viewer) -> int:
        return len(self._matches(search, person_id, viewer))

    async def page(
        self, search: Any, person_id: str, offset: int, limit: int, *, viewer: Viewer
    ) -> list[ports.Hit]:
        return self._matches(search, person_id, viewer)[offset : offset + limit]

    async def sees(self, person_id: str, *, viewer: Viewer) -> bool:
        rows = [h for p, h in self.rows if p == person_id]
        return bool(self.patients.get(person_id)) or any(
            self._visible(h.result_id, viewer) for h in rows
        )

    async def patient_versions(self, person_id: str, *, viewer: Viewer) -> list[int]:
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
        self.consents: ConsentReader = NO_CONSENT_RECORDS
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
        self.consents = check.consents

    def _repositories(self) -> dict[str, object]:
        return {"drafts": self.drafts, "cards": self.cards, "audit": self.audit}


# -- administration: registry, mappings, access (broker/ports/{registry,mappings,access,admin}.py)


@dataclass
class FakeChangeLog(admin_ports.ChangeLog):
    changes: list[dict[str, Any]] = field(default_factory=list)

    async def record(
        self, actor: Actor, *, action: str, hospital: str | None, detail: dict[str, Any]
    ) -> None:
        self.changes.append(
            {"actor": actor.name, "action": action, "hospital": hospital, "detail": detail}
        )


class FakeHospitalRegistry(registry_ports.HospitalRegistry):
    def __init__(self, *hospitals: registry_ports.Hospital) -> None:
        self.hospitals = {h.id: h for h in hospitals}
        self.certified: list[tuple[Certification, str | None]] = []  # with references
        self.keys: dict[tuple[str, str], tuple[str, bool]] = {}  # -> public key, revoked

    async def all(self) -> list[registry_ports.Hospital]:
        return [self.hospitals[h] for h in sorted(self.hospitals)]

    async def certifications(self) -> list[Certification]:
        return [c for c, _ in self.certified]

    async def get(self, hospital_id: str) -> registry_ports.Hospital | None:
        return self.hospitals.get(hospital_id)

    async def add(self, h: registry_ports.Hospital, *, replace: bool = False) -> None:
        if h.id in self.hospitals and not replace:
            raise registry_ports.HospitalExists(h.id)
        self.hospitals[h.id] = h

    async def certify(self, cert: Certification, reference: str | None) -> None:
        if cert.hospital not in self.hospitals:
            raise registry_ports.UnknownHospital(cert.hospital)
        self.certified.append((cert, reference))

    async def add_key(self, hospital_id: str, key_id: str, public_b64: str) -> None:
        if hospital_id not in self.hospitals:
            raise registry_ports.UnknownHospital(hospital_id)
        if (hospital_id, key_id) in self.keys:
            raise registry_ports.KeyExists(key_id)
        self.keys[(hospital_id, key_id)] = (public_b64, False)

    async def revoke_key(self, hospital_id: str, key_id: str) -> bool:
        found = self.keys.get((hospital_id, key_id))
        if found is None or found[1]:
            return False
        self.keys[(hospital_id, key_id)] = (found[0], True)
        return True

    async def signing_keys(self) -> list[registry_ports.HospitalKey]:
        added = datetime(2026, 1, 1, tzinfo=UTC)
        return [
            registry_ports.HospitalKey(h, k, public, added, added if revoked else None)
            for (h, k), (public, revoked) in sorted(self.keys.items())
        ]


class FakeRegistryUnitOfWork(_FakeTransaction, registry_ports.RegistryUnitOfWork):
    def __init__(self, hospitals: FakeHospitalRegistry | None = None) -> None:
        self.hospitals = hospitals or FakeHospitalRegistry()
        self.changes = FakeChangeLog()

    def _repositories(self) -> dict[str, object]:
        return {"hospitals": self.hospitals, "changes": self.changes}


class FakeCodeMappings(mapping_ports.CodeMappings):
    def __init__(self) -> None:
        self.codes: dict[tuple[str, str, str], str] = {}  # (hospital, system, code) -> item
        self.indexed: dict[tuple[str, str, str], int] = {}  # results carrying the code
        self.worklist: set[tuple[str, str, str]] = set()  # codes seen and not mapped

    async def add(
        self, hospital: str, system: str, code: str, catalog_code: str, by: str, now: datetime
    ) -> int:
        key = (hospital, system, code)
        self.codes[key] = catalog_code
        self.worklist.discard(key)
        return self.indexed.get(key, 0)

    async def unmapped(
        self, hospital: str | None, *, include_mapped: bool
    ) -> list[mapping_ports.Unmapped]:
        seen = datetime(2026, 5, 1, tzinfo=UTC)
        return [
            mapping_ports.Unmapped(h, system, code, None, 1, seen, seen, None)
            for h, system, code in sorted(self.worklist)
            if hospital is None or h == hospital
        ]


class FakeMappingUnitOfWork(_FakeTransaction, mapping_ports.MappingUnitOfWork):
    def __init__(self, hospitals: FakeHospitalRegistry) -> None:
        self.hospitals = hospitals
        self.mappings = FakeCodeMappings()
        self.changes = FakeChangeLog()

    def _repositories(self) -> dict[str, object]:
        return {"mappings": self.mappings, "changes": self.changes}


class FakeOidcUsers(access_ports.OidcUsers):
    def __init__(self) -> None:
        self.users: dict[tuple[str, str], access_ports.OidcUser] = {}

    async def get(self, issuer: str, subject: str) -> access_ports.OidcUser | None:
        return self.users.get((issuer, subject))

    async def put(self, user: access_ports.OidcUser) -> None:
        self.users[(user.issuer, user.subject)] = user

    async def disable(self, issuer: str, subject: str, *, at: datetime) -> bool:
        user = self.users.get((issuer, subject))
        if user is None or user.disabled_at is not None:
            return False
        self.users[(issuer, subject)] = user.model_copy(update={"disabled_at": at})
        return True

    async def find(
        self, *, issuer: str | None, hospital: str | None, enabled_only: bool
    ) -> list[access_ports.OidcUser]:
        return [
            u
            for _, u in sorted(self.users.items())
            if issuer in (None, u.issuer)
            and hospital in (None, u.hospital)
            and not (enabled_only and u.disabled_at is not None)
        ]


class FakeTokenRegister(access_ports.TokenRegister):
    def __init__(self) -> None:
        self.tokens: dict[str, access_ports.TokenRecord] = {}

    async def record(self, token: IssuedToken, *, issued_by: str) -> None:
        self.tokens[token.jti] = access_ports.TokenRecord(
            jti=token.jti,
            subject=token.subject,
            role=token.role.value,
            hospital=token.hospital,
            kind=token.kind.value,
            key_id=token.key_id,
            issued_at=token.issued_at,
            expires_at=token.expires_at,
            issued_by=issued_by,
            revoked_at=None,
            revoked_by=None,
            reason=None,
        )

    async def get(self, jti: str) -> access_ports.TokenRecord | None:
        return self.tokens.get(jti)

    async def find(
        self, *, hospital: str | None, subject: str | None, live_at: datetime | None
    ) -> list[access_ports.TokenRecord]:
        found = [
            t
            for t in self.tokens.values()
            if hospital in (None, t.hospital)
            and subject in (None, t.subject)
            and (live_at is None or (t.revoked_at is None and t.expires_at > live_at))
        ]
        return sorted(found, key=lambda t: t.issued_at, reverse=True)

    async def revoke(self, jtis: list[str], *, by: str, reason: str, at: datetime) -> list[str]:
        pending = sorted(j for j in jtis if j in self.tokens and self.tokens[j].revoked_at is None)
        for jti in pending:
            self.tokens[jti] = self.tokens[jti].model_copy(
                update={"revoked_at": at, "revoked_by": by, "reason": reason}
            )
        return pending


class FakeAccessUnitOfWork(_FakeTransaction, access_ports.AccessUnitOfWork):
    def __init__(self, hospitals: FakeHospitalRegistry) -> None:
        self.users = FakeOidcUsers()
        self.tokens = FakeTokenRegister()
        self.hospitals = hospitals
        self.changes = FakeChangeLog()

    def _repositories(self) -> dict[str, object]:
        return {"users": self.users, "tokens": self.tokens, "changes": self.changes}


class FakeAccessLookups(access_ports.AccessLookups):
    """Reads what the unit of work holds; `down` makes every read RegisterUnavailable;
    `reads` counts the look-ups that reached the register."""

    def __init__(self, uow: FakeAccessUnitOfWork) -> None:
        self._uow = uow
        self.down = False
        self.reads = 0

    async def user(self, issuer: str, subject: str) -> access_ports.OidcUser | None:
        self._read()
        return await self._uow.users.get(issuer, subject)

    async def token_state(self, jti: str) -> access_ports.TokenState:
        self._read()
        found = await self._uow.tokens.get(jti)
        if found is None:
            return access_ports.TokenState(recorded=False, revoked=False)
        return access_ports.TokenState(recorded=True, revoked=found.revoked_at is not None)

    def _read(self) -> None:
        if self.down:
            raise access_ports.RegisterUnavailable("down")
        self.reads += 1


class FakeLedgerMonths(admin_ports.LedgerMonths):
    def __init__(self) -> None:
        self.closed_by: dict[str, str] = {}  # month -> who closed it

    async def closed(self) -> set[str]:
        return set(self.closed_by)

    async def close(self, month: str, by: str, now: datetime) -> bool:
        if month in self.closed_by:
            return False
        self.closed_by[month] = by
        return True


class FakeMonthUnitOfWork(_FakeTransaction, admin_ports.MonthUnitOfWork):
    def __init__(self) -> None:
        self.months = FakeLedgerMonths()
        self.changes = FakeChangeLog()

    def _repositories(self) -> dict[str, object]:
        return {"months": self.months, "changes": self.changes}


class FakePayloadRetention(admin_ports.PayloadRetention):
    def __init__(self, *received: datetime) -> None:
        self.received = list(received)  # when each payload still held was received
        self.cutoffs: list[datetime] = []

    async def purge_received_before(self, cutoff: datetime) -> int:
        self.cutoffs.append(cutoff)
        kept = [r for r in self.received if r >= cutoff]
        erased = len(self.received) - len(kept)
        self.received = kept
        return erased


class FakePurgeUnitOfWork(_FakeTransaction, admin_ports.PurgeUnitOfWork):
    def __init__(self, payloads: FakePayloadRetention) -> None:
        self.payloads = payloads
        self.changes = FakeChangeLog()

    def _repositories(self) -> dict[str, object]:
        return {"payloads": self.payloads, "changes": self.changes}


# -- ingest (broker/ports/ingest.py) --------------------------------------------------------


@dataclass(frozen=True)
class FakeSigningKey:
    public_key: str
    revoked_at: datetime | None = None


@dataclass
class FakeResultWriter(ingest_ports.ResultWriter):
    """Writes a message's results as its id; `unknown_patients`: accessions whose patient
    the hospital never sent. Bound to its unit of work by `FakeIngestUnitOfWork.writer`."""

    unknown_patients: set[str] = field(default_factory=set)
    uow: FakeIngestUnitOfWork | None = None
    _staged: list[tuple[str, tuple[str, ...]]] = field(default_factory=list)
    _inbox: list[str] = field(default_factory=list)

    async def prefetch(self, parsed: Sequence[tuple[str, ParsedMessage]]) -> None:
        self._staged, self._inbox = [], []

    def stage(
        self,
        message_value: bytes,
        content_type: str | None,
        message_id: str,
        hospital: str,
        parsed: ParsedMessage,
    ) -> ingest_ports.Staged:
        ids = tuple(r.business_id for r in parsed.results)
        if any(a in b for a in self.unknown_patients for b in ids):
            raise ingest_ports.UnknownPatient("the patient is not in the message")
        self._staged.append((message_id, ids))
        return ingest_ports.Staged(message_id, hospital, {"current": len(ids)})

    def add_inbox(self, row: dict[str, Any]) -> None:
        self._inbox.append(str(row["message_id"]))

    async def flush(self) -> None:
        assert self.uow is not None
        self.uow.flushing(self._staged)
        self.uow.pending["written"] += [mid for mid, _ in self._staged]
        self.uow.pending["inbox"] += self._inbox


class FakeIngestUnitOfWork(ingest_ports.IngestUnitOfWork):
    """Committed state in lists; what a transaction or savepoint wrote is `pending` until
    commit. `fail_flush`: raised by a bulk flush; `fail_accessions`: a flush of one of them
    raises (in a savepoint too); `collide_then_index`: a message another worker indexes at
    the same moment (its flush meets a Collision, and the id is then indexed);
    `bulk_collisions`: so many bulk flushes meet another worker's writes (a Collision);
    `deadlocks`: accession -> so many flushes of it alone meet a Collision (a deadlock:
    nothing is indexed by the other worker)."""

    HOSPITALS = ("H001", "H002", "H003", "H004")

    def __init__(
        self,
        *,
        writer: FakeResultWriter | None = None,
        fail_flush: Exception | None = None,
        fail_accessions: set[str] | None = None,
        collide_then_index: set[str] | None = None,
        bulk_collisions: int = 0,
        deadlocks: dict[str, int] | None = None,
    ) -> None:
        self._writer = writer or FakeResultWriter()
        self._writer.uow = self
        self._fail_flush = fail_flush
        self._fail_accessions = fail_accessions or set()
        self._collide = collide_then_index or set()
        self._bulk_collisions = bulk_collisions
        self._deadlocks = dict(deadlocks or {})
        self.bulk_flushes = 0
        self._depth = 0  # savepoints entered
        self.written: list[str] = []
        self.inbox: list[str] = []
        self.rejections: list[tuple[InboundMessage, dict[str, object]]] = []
        self.settled: list[str] = []
        self.commits = 0
        self.savepoints_rolled_back = 0
        self.pending: dict[str, list[Any]] = {}
        self.rollback_sync()

    def rollback_sync(self) -> None:
        self.pending = {"written": [], "inbox": [], "rejections": [], "settled": []}

    async def commit(self) -> None:
        self.written += self.pending["written"]
        self.inbox += self.pending["inbox"]
        self.rejections += self.pending["rejections"]
        self.settled += self.pending["settled"]
        self.commits += 1
        self.rollback_sync()

    async def rollback(self) -> None:
        self.rollback_sync()

    def flushing(self, staged: Sequence[tuple[str, tuple[str, ...]]]) -> None:
        if self._depth == 0:
            self.bulk_flushes += 1
            if self._bulk_collisions:
                self._bulk_collisions -= 1
                raise ingest_ports.Collision("pk_person_link")
        if self._depth == 0 and self._fail_flush is not None:
            raise self._fail_flush
        for mid, ids in staged:
            if any(a in b for a in self._fail_accessions for b in ids):
                raise RuntimeError("the write failed")
            if mid in self._collide:
                self._collide.discard(mid)
                self.inbox.append(mid)  # the other worker committed it
                raise ingest_ports.Collision("inbox_pkey")
            for accession, left in self._deadlocks.items():
                if self._depth and left and any(accession in b for b in ids):
                    self._deadlocks[accession] = left - 1
                    raise ingest_ports.Collision("deadlock detected")

    async def time_zones(self) -> Mapping[str, str]:
        return dict.fromkeys(self.HOSPITALS, "Asia/Shanghai")

    async def signing_keys(self) -> Mapping[tuple[str, str], FakeSigningKey]:
        from tests import factories

        return {
            (h, factories.key_id(h)): FakeSigningKey(factories.public_b64(h))
            for h in self.HOSPITALS
        }

    async def indexed(self, message_ids: Iterable[str]) -> set[str]:
        seen = set(self.inbox) | set(self.pending["inbox"])
        return {m for m in message_ids if m in seen}

    async def writer(self, now: datetime) -> FakeResultWriter:
        return self._writer

    async def record_rejections(
        self, rejected: Sequence[tuple[InboundMessage, dict[str, object]]]
    ) -> None:
        self.pending["rejections"] += list(rejected)

    async def settle_dead_letters(self, message_ids: Sequence[str], now: datetime) -> None:
        self.pending["settled"] += list(message_ids)

    @asynccontextmanager
    async def savepoint(self) -> AsyncIterator[None]:
        before = {k: list(v) for k, v in self.pending.items()}
        self._depth += 1
        try:
            yield
        except BaseException:
            self.pending = before
            self.savepoints_rolled_back += 1
            raise
        finally:
            self._depth -= 1
