"""The patient's access report (PIPL Arts. 44-45): for one patient, who read their data,
when, from which hospital, for what purpose, which results, and which recognitions used
them, over a period; as JSON, FHIR AuditEvents or a table in Chinese.

It is read from the audit trail, which records every read of patient data, so it shows
what the trail holds and no more (docs/security.md, "The patient's access report"):

- `recognition-check`: the results the doctor was shown (each item's candidate and the
  other results listed), and per candidate the decision and what the doctor did with it.
- `fhir-read`: the resource read (its result, while the search index still serves it).
- `safety-notice`: the result the notice was about.
- `fhir-search`, `cds-patient-view`: how many resources were returned or summarised, never
  which (the trail does not record them).
- `fhir-pix-query`, `fhir-pdq-match`, `fhir-pdq-query`, `rate-limit-break-glass`: the
  patient's identity only; no result is read by them.

The person is found through the identifier's pseudonym; the report covers entries under
that person, under people merged into them, and entries that found nobody but named one
of their identifiers (a look-up before mrb knew the patient is still a read). The
report is itself audited (`patient-access-report`); that entry is recorded after the
report is read, so it appears in the next report, never in its own.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from broker.domain.actors import ALL_HOSPITALS, Actor, Duty
from broker.domain.check_items import StoredCheckItem
from broker.domain.errors import Invalid
from broker.domain.identifier_systems import IdentifierRegistry
from broker.domain.identifiers import IdentifierScope, InvalidIdentifier, PatientIdentifier
from broker.domain.ledger import REASON_DISPLAY
from broker.domain.recognition import DECISION_WORDS, SHANGHAI, Text
from broker.fhir import balp
from broker.ports.access_report import (
    AccessReportUnitOfWork,
    AuditedRead,
    CheckedItems,
    ItemOutcome,
    ResultInfo,
)
from broker.services.reports import csv_cell

ACTION = "patient-access-report"
PURPOSE = "patient-request"
MAX_YEARS = 5

ACTIONS: dict[str, Text] = {
    "recognition-check": Text("互认检查", "recognition check"),
    "fhir-read": Text("查阅检验检查结果", "read a test result (FHIR)"),
    "fhir-search": Text("检索检验检查结果", "searched test results (FHIR)"),
    "fhir-pix-query": Text("患者标识交叉查询", "patient identifier cross-reference (IHE PIXm)"),
    "fhir-pdq-match": Text("患者身份匹配", "patient demographics match (IHE PDQm)"),
    "fhir-pdq-query": Text("患者人口学信息查询", "patient demographics query (IHE PDQm)"),
    "cds-patient-view": Text("打开病历时提示既往结果", "prior results shown on opening the record"),
    "safety-notice": Text("查看结果更正通知", "read a notice of a corrected result"),
    "rate-limit-break-glass": Text(
        "紧急情况下超出查询频率限制放行", "let through over a rate limit in an emergency"
    ),
    # The patient's consent record (broker/services/consents.py), audited under their person.
    "consent.record": Text("登记患者同意或拒绝共享", "recorded a consent or an opt-out"),
    "consent.withdraw": Text("撤回患者同意或拒绝共享", "withdrew a consent or an opt-out"),
    "consent.read": Text("查阅患者同意记录", "read the consent record"),
    ACTION: Text("生成本人访问报告", "this access report was produced"),
}
PURPOSES: dict[str, Text] = {
    "treatment": Text("诊疗", "treatment"),
    "order-entry": Text("开具检查检验", "ordering a test"),
    "patient-view": Text("诊疗（查看病历）", "treatment (viewing the record)"),
    "cds-hooks": Text("诊疗（临床决策支持）", "treatment (decision support)"),
    "emergency-treatment": Text("急诊急救", "emergency treatment"),
    "care-management": Text("医疗管理", "care management"),
    "patient-request": Text("应患者本人申请", "at the patient's request"),
    "patient-safety": Text("患者安全", "patient safety"),
    "break-glass": Text("紧急突破", "emergency (break-glass)"),
    "audit": Text("审计", "audit"),
    "administration": Text("系统管理", "administration"),
}
ROLES: dict[str, Text] = {
    "doctor": Text("医生", "doctor"),
    "adapter": Text("医院信息系统", "hospital system"),
    "finance": Text("医院财务人员", "hospital finance staff"),
    "admin": Text("医院管理员", "hospital administrator"),
    "platform-admin": Text("平台系统管理员", "platform system administrator"),
    "security-admin": Text("平台安全管理员", "platform security administrator"),
    "audit": Text("平台审计管理员", "platform audit administrator"),
    "qc": Text("质控人员", "quality control"),
    "platform-finance": Text("平台财务人员", "platform finance staff"),
}
DECISIONS: dict[str, Text] = {str(k): v for k, v in DECISION_WORDS.items()}
ACCEPTED = Text("医生已采纳，未重复检查", "accepted: not tested again")
DECLINED = Text("医生未采纳，重新检查", "declined: tested again")
NO_ANSWER = Text("医生未答复", "no answer recorded")
REVERSED = Text("（结果更正或撤回后已冲回）", "(reversed: the result was corrected or withdrawn)")
PLATFORM = Text("平台", "the platform")
IDENTITY_ONLY = Text("仅查询患者身份，未读取结果", "the patient's identity only; no result read")


def words(table: Mapping[str, Text], code: str) -> Text:
    """The wording of a code; an unknown code (a newer release's action) is its own text."""
    return table.get(code, Text(code, code))


def _local(at: datetime) -> datetime:
    return at.astimezone(SHANGHAI)


def _day(at: datetime | None) -> str:
    return _local(at).date().isoformat() if at is not None else ""


# -- the period -----------------------------------------------------------------------------


def parse_day(value: str | None, name: str) -> date | None:
    """A YYYY-MM-DD query value; Invalid names the parameter."""
    if value is None or value == "":
        return None
    try:
        if len(value) != 10:
            raise ValueError
        return date.fromisoformat(value)
    except ValueError:
        raise Invalid(
            "Invalid period", f"{name}: expected YYYY-MM-DD, got {value[:20]!r}"
        ) from None


def _years_before(day: date, years: int) -> date:
    try:
        return day.replace(year=day.year - years)
    except ValueError:  # 29 February
        return day.replace(year=day.year - years, day=28)


def period(start: date | None, end: date | None, today: date) -> tuple[date, date]:
    """Days [start, end) in Asia/Shanghai: by default the 12 months up to today, inclusive."""
    end = end or today + timedelta(days=1)
    start = start or _years_before(end, 1)
    if start >= end:
        raise Invalid("Invalid period", f"from ({start}) must be before to ({end})")
    if start < _years_before(end, MAX_YEARS):
        raise Invalid("Invalid period", f"a report covers at most {MAX_YEARS} years")
    return start, end


def parse_identifier(text: str | None) -> tuple[str, str]:
    """`system|value`, as FHIR token parameters are written."""
    system, bar, value = (text or "").partition("|")
    if not bar or not system.strip() or not value.strip():
        raise Invalid("Invalid patient identifier", "identifier: expected system|value")
    return system.strip(), value.strip()


# -- the report -----------------------------------------------------------------------------


@dataclass(frozen=True)
class ReportRequest:
    system: str
    value: str
    hospital: str | None = None  # who issued the identifier (MRNs); a resident ID is national
    start: date | None = None  # inclusive, Asia/Shanghai
    end: date | None = None  # exclusive


@dataclass(frozen=True)
class ResultRead:
    reference: str  # the FHIR reference mrb serves it under
    info: ResultInfo | None  # None: a reference the index no longer serves

    def label(self, names: Mapping[str, str]) -> str:
        if self.info is None:
            return self.reference
        hospital = names.get(self.info.hospital, self.info.hospital)
        return f"{hospital} {_day(self.info.effective)} {self.reference}".replace("  ", " ")


@dataclass(frozen=True)
class RecognitionUse:
    check_id: str
    item_index: int
    ordering_hospital: str
    at: datetime
    item_code: str | None
    item_name: Text
    decision: str
    candidate: ResultRead
    outcome: ItemOutcome | None

    def answer(self) -> Text:
        if self.outcome is None:
            return NO_ANSWER
        if self.outcome.outcome == "accepted":
            return ACCEPTED + REVERSED if self.outcome.reversed else ACCEPTED
        reason = self.outcome.reason
        shown = next((t for r, t in REASON_DISPLAY.items() if r.value == reason), None)
        if shown is None:
            return DECLINED
        return Text(f"{DECLINED.zh}（{shown.zh}）", f"{DECLINED.en} ({shown.en})")

    def as_dict(self, names: Mapping[str, str]) -> dict[str, Any]:
        return {
            "check_id": self.check_id,
            "item_index": self.item_index,
            "ordering_hospital": _hospital(self.ordering_hospital, names),
            "date": _day(self.at),
            "item": {"code": self.item_code, **_text(self.item_name)},
            "decision": {"code": self.decision, **_text(words(DECISIONS, self.decision))},
            "result": _result(self.candidate, names),
            "outcome": None if self.outcome is None else self.outcome.outcome,
            "reason": None if self.outcome is None else self.outcome.reason,
            "reversed": bool(self.outcome and self.outcome.reversed),
            "answer": _text(self.answer()),
        }

    def line(self, names: Mapping[str, str], lang: str) -> str:
        pick = _pick(lang)
        hospital = names.get(self.ordering_hospital, self.ordering_hospital)
        return (
            f"{hospital} {_day(self.at)} {pick(self.item_name)} "
            f"{pick(words(DECISIONS, self.decision))} {pick(self.answer())}"
        )


@dataclass(frozen=True)
class ReportEntry:
    read: AuditedRead
    results: tuple[ResultRead, ...] = ()
    note: Text | None = None  # what the trail does not say about the results
    recognitions: tuple[RecognitionUse, ...] = ()

    def as_dict(self, names: Mapping[str, str]) -> dict[str, Any]:
        r = self.read
        return {
            "id": r.id,
            "at": r.at.astimezone(UTC).isoformat(),
            "at_local": _local(r.at).isoformat(),
            "actor": {"name": r.actor, "role": r.role, **_text(words(ROLES, r.role))},
            "hospital": _hospital(r.hospital_id, names),
            "action": {"code": r.action, **_text(words(ACTIONS, r.action))},
            "purpose": {"code": r.purpose, **_text(words(PURPOSES, r.purpose))},
            "results": [_result(x, names) for x in self.results],
            "results_note": _text(self.note) if self.note else None,
            "recognitions": [u.as_dict(names) for u in self.recognitions],
        }


@dataclass(frozen=True)
class AccessReport:
    person_id: str | None  # None: mrb knows no person by this identifier
    start: date
    end: date
    generated_at: datetime
    entries: tuple[ReportEntry, ...]
    hospital_names: Mapping[str, str] = field(default_factory=dict)

    @property
    def recognitions(self) -> list[RecognitionUse]:
        return [u for e in self.entries for u in e.recognitions]

    def as_dict(self) -> dict[str, Any]:
        names = self.hospital_names
        return {
            "patient": {"person_id": self.person_id},
            "from": self.start.isoformat(),
            "to": self.end.isoformat(),
            "timezone": "Asia/Shanghai",
            "generated_at": self.generated_at.isoformat(),
            "entries": [e.as_dict(names) for e in self.entries],
            "recognitions": [u.as_dict(names) for u in self.recognitions],
            "note": _text(NOT_IN_ITS_OWN_REPORT),
        }

    def rows(self, lang: str = "zh") -> list[list[str]]:
        """One row per entry, in the columns of HEADERS."""
        pick, names = _pick(lang), self.hospital_names
        rows = []
        for e in self.entries:
            r = e.read
            hospital = (
                pick(PLATFORM)
                if r.hospital_id in (None, ALL_HOSPITALS)
                else f"{names.get(str(r.hospital_id), r.hospital_id)} ({r.hospital_id})"
            )
            results = [x.label(names) for x in e.results]
            if e.note is not None:
                results.append(pick(e.note))
            rows.append(
                [
                    _local(r.at).strftime("%Y-%m-%d %H:%M:%S"),
                    r.actor,
                    pick(words(ROLES, r.role)),
                    hospital,
                    pick(words(ACTIONS, r.action)),
                    pick(words(PURPOSES, r.purpose)),
                    "; ".join(results),
                    "; ".join(u.line(names, lang) for u in e.recognitions),
                ]
            )
        return rows

    def as_csv(self) -> str:
        """UTF-8 text with a byte-order mark (spreadsheets then read the Chinese right)."""
        out = io.StringIO()
        out.write("\ufeff")
        writer = csv.writer(out, lineterminator="\r\n")
        writer.writerow(HEADERS["zh"])
        writer.writerows([csv_cell(c) for c in row] for row in self.rows("zh"))
        return out.getvalue()

    def as_fhir(self, base: str) -> dict[str, Any]:
        """A Bundle (collection) of IHE BALP AuditEvents; the patient is Patient/<person id>,
        the results read and the recognitions are entities of each event."""
        entries = []
        for e in self.entries:
            event = _fhir_event(e, self.person_id, base, self.hospital_names)
            entries.append({"fullUrl": f"{base}/AuditEvent/{e.read.id}", "resource": event})
        return {
            "resourceType": "Bundle",
            "type": "collection",
            "timestamp": self.generated_at.isoformat(),
            "entry": entries,
        }


HEADERS = {
    "zh": ["时间", "访问者", "角色", "医院", "操作", "目的", "结果", "互认"],
    "en": ["Time", "Who", "Role", "Hospital", "Action", "Purpose", "Results", "Recognitions"],
}
NOT_IN_ITS_OWN_REPORT = Text(
    "生成本报告的记录不在本报告中，将出现在下一次报告中。",
    "Producing this report is audited; that entry appears in the next report, not this one.",
)


def _pick(lang: str) -> Callable[[Text], str]:
    return (lambda t: t.en) if lang == "en" else (lambda t: t.zh)


def _text(t: Text) -> dict[str, str]:
    return {"zh": t.zh, "en": t.en}


def _hospital(hid: str | None, names: Mapping[str, str]) -> dict[str, Any]:
    if hid in (None, ALL_HOSPITALS):
        return {"id": ALL_HOSPITALS, "name": PLATFORM.zh, "platform": True}
    return {"id": hid, "name": names.get(str(hid), str(hid)), "platform": False}


def _result(x: ResultRead, names: Mapping[str, str]) -> dict[str, Any]:
    if x.info is None:
        return {"reference": x.reference, "result_id": None}
    return {
        "reference": x.reference,
        "result_id": x.info.result_id,
        "hospital": _hospital(x.info.hospital, names),
        "resource_type": x.info.resource_type,
        "date": _day(x.info.effective),
    }


# -- the use case ---------------------------------------------------------------------------


class AccessReports:
    """Produces a patient's access report, audited as `patient-access-report`.

    Only the `audit` role may (Duty.PATIENT_ACCESS_REPORT): the report is read from the
    audit trail, the audit administrator's duty alone (三员分立); a patient's app or a
    hospital's portal asks through a platform service that holds an audit token.
    """

    def __init__(
        self,
        uow: Callable[[], AccessReportUnitOfWork],
        identifiers: IdentifierRegistry,
        item_names: Mapping[str, Text],
    ) -> None:
        self._uow = uow
        self._identifiers = identifiers
        self._item_names = item_names

    async def report(
        self, actor: Actor, request: ReportRequest, *, now: datetime | None = None
    ) -> AccessReport:
        actor.authorize(Duty.PATIENT_ACCESS_REPORT)
        now = now or datetime.now(UTC)
        start, end = period(request.start, request.end, _local(now).date())
        ident = self._identifier(request)
        async with self._uow() as uow:
            records = uow.records
            names = await records.hospital_names()
            if request.hospital is not None and request.hospital not in names:
                raise Invalid(
                    "Unknown hospital", f"hospital {request.hospital!r} is not registered"
                )
            pseudonyms = {records.pseudonym_of(ident)}
            person = await records.find_person(ident)
            people = await records.merged_people(person) if person is not None else []
            pseudonyms |= await records.linked_pseudonyms(people)
            reads = await records.reads(people, pseudonyms, _instant(start), _instant(end))
            entries = await self._entries(uow, reads)
            await uow.audit.record_read(
                actor,
                action=ACTION,
                purpose=PURPOSE,
                patient=ident,
                person_id=person,
                detail={
                    "from": start.isoformat(),
                    "to": end.isoformat(),
                    "entries": len(entries),
                    "people": len(people),
                },
            )
            await uow.commit()
        return AccessReport(person, start, end, now, tuple(entries), names)

    def _identifier(self, request: ReportRequest) -> PatientIdentifier:
        try:
            ident = self._identifiers.lookup(
                request.system, request.value, hospital=request.hospital or ALL_HOSPITALS
            )
        except InvalidIdentifier as exc:
            raise Invalid("Invalid patient identifier", str(exc)) from None
        if ident is None:
            raise Invalid("Invalid patient identifier", "identifier: the value is empty")
        if ident.scope is IdentifierScope.HOSPITAL and request.hospital is None:
            raise Invalid(
                "Invalid patient identifier",
                "this identifier is issued by a hospital: name it (hospital=H001, or --hospital)",
            )
        return ident

    async def _entries(
        self, uow: AccessReportUnitOfWork, reads: Sequence[AuditedRead]
    ) -> list[ReportEntry]:
        records = uow.records
        check_ids = {str(r.detail["check_id"]) for r in _of(reads, "recognition-check", "check_id")}
        checks = {c.check_id: c for c in await records.checks(check_ids)}
        outcomes = {(o.check_id, o.item_index): o for o in await records.outcomes(check_ids)}
        served = await records.served_results(
            str(r.detail["resource"]) for r in _of(reads, "fhir-read", "resource")
        )
        notices = await records.notice_results(
            str(r.detail["notice_id"]) for r in _of(reads, "safety-notice", "notice_id")
        )
        wanted = {*served.values(), *notices.values()}
        for c in checks.values():
            for item in c.items:
                wanted.update(_shown(item))
        infos = await records.results(wanted)

        def read(result_id: str) -> ResultRead:
            info = infos.get(result_id)
            kind = info.resource_type if info is not None else "DiagnosticReport"
            return ResultRead(f"{kind}/{result_id}", info)

        entries = []
        for r in reads:
            if r.action == "recognition-check":
                check = checks.get(str(r.detail.get("check_id")))
                entries.append(self._check_entry(r, check, outcomes, read))
            elif r.action == "fhir-read" and isinstance(r.detail.get("resource"), str):
                ref = str(r.detail["resource"])
                found = served.get(ref)
                shown = ResultRead(ref, infos.get(found) if found else None)
                entries.append(ReportEntry(r, (shown,), _read_note(r.detail)))
            elif r.action == "safety-notice" and str(r.detail.get("notice_id")) in notices:
                entries.append(ReportEntry(r, (read(notices[str(r.detail["notice_id"])]),)))
            else:
                entries.append(ReportEntry(r, note=_note(r)))
        return entries

    def _check_entry(
        self,
        r: AuditedRead,
        check: CheckedItems | None,
        outcomes: Mapping[tuple[str, int], ItemOutcome],
        read: Callable[[str], ResultRead],
    ) -> ReportEntry:
        if check is None:  # purged or never stored: the trail still says a check was made
            return ReportEntry(r, note=Text("检查记录已不可用", "the check's record is gone"))
        shown: list[str] = []
        uses = []
        for i, item in enumerate(check.items):
            shown += [x for x in _shown(item) if x not in shown]
            if item.candidate is None:
                continue
            code = item.catalog_code
            uses.append(
                RecognitionUse(
                    check.check_id,
                    i,
                    check.ordering_hospital,
                    check.created_at,
                    code,
                    self._item_names.get(code or "", Text(code or "?", code or "?")),
                    item.decision,
                    read(item.candidate),
                    outcomes.get((check.check_id, i)),
                )
            )
        note = None if shown else Text("未找到既往结果", "no prior result was found")
        return ReportEntry(r, tuple(read(x) for x in shown), note, tuple(uses))


def _of(reads: Iterable[AuditedRead], action: str, key: str) -> list[AuditedRead]:
    return [r for r in reads if r.action == action and r.detail.get(key) is not None]


def _shown(item: StoredCheckItem) -> list[str]:
    """The results a check showed the doctor for one item: its candidate, then the others."""
    return ([item.candidate] if item.candidate else []) + list(item.others)


def _read_note(detail: Mapping[str, Any]) -> Text | None:
    outcome = detail.get("outcome")
    if outcome == "gone":
        return Text("结果已撤回，未返回内容", "withdrawn: no content was returned")
    if outcome == "purged":
        return Text("结果内容已按保存期限删除，未返回", "purged under retention: nothing returned")
    return None


def _note(r: AuditedRead) -> Text | None:
    """What the trail says, and does not say, of the results of other entries."""
    n = r.detail.get("returned", r.detail.get("results"))
    if n is None and r.action in ("fhir-search", "cds-patient-view"):
        return Text("未记录返回了哪些结果", "which results were returned is not recorded")
    if r.action == "fhir-search":
        return Text(f"返回 {n} 项资源；未记录具体是哪些", f"{n} resources returned; not which")
    if r.action == "cds-patient-view":
        return Text(f"提示了 {n} 项既往结果；未记录具体是哪些", f"{n} prior results; not which")
    if r.action in ("fhir-pix-query", "fhir-pdq-match", "fhir-pdq-query", "rate-limit-break-glass"):
        return IDENTITY_ONLY
    if r.action == ACTION:
        return Text("访问报告，不含结果内容", "an access report: no result content")
    return None


def _instant(day: date) -> datetime:
    return datetime.combine(day, time(), SHANGHAI).astimezone(UTC)


# -- FHIR -----------------------------------------------------------------------------------

_SYSTEM_OBJECT = {"system": balp.ENTITY_TYPE, "code": "2", "display": "System Object"}
_DOMAIN_RESOURCE = {"system": balp.OBJECT_ROLE, "code": "4", "display": "Domain Resource"}


def _fhir_event(
    e: ReportEntry, person: str | None, base: str, names: Mapping[str, str]
) -> dict[str, Any]:
    event = balp.audit_event(e.read.as_row(), base)
    patient = {"reference": f"Patient/{person}"} if person else None
    for existing in event["entity"]:
        if existing["type"].get("code") == "1" and patient is not None:
            # The surviving person, also for entries under a person merged into them.
            existing["what"] = dict(patient)
    uses = {u.candidate.reference: u for u in e.recognitions}
    for x in e.results:
        entity: dict[str, Any] = {
            "what": {"reference": x.reference},
            "type": _SYSTEM_OBJECT,
            "role": _DOMAIN_RESOURCE,
        }
        use = uses.get(x.reference)
        if use is not None:
            entity["description"] = use.line(names, "zh")
            entity["detail"] = [
                {"type": "check", "valueString": use.check_id},
                {"type": "ordering-hospital", "valueString": use.ordering_hospital},
                {"type": "decision", "valueString": use.decision},
                {"type": "outcome", "valueString": use.outcome.outcome if use.outcome else "none"},
            ]
        event["entity"].append(entity)
    if e.note is not None:
        event["entity"][0].setdefault("description", e.note.zh)
    return event
