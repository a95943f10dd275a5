"""The recognition rules (《医疗机构检查检验结果互认管理办法》, 2022): pure functions.

For one ordered item and the patient's indexed results, decide whether a prior result
may be recognised instead of repeating the test, and explain why in zh and en. The rules
run in DESIGN.md's order; the first that fails names the decision:

  catalog -> negative list -> result maps to the item (panels: every component, none
  excluded) -> images, not reports -> withdrawn -> not final -> issuer registered ->
  dated -> QC certification on the result date -> validity at order time -> scope
  (same hospital, alliance, mark area and level matrix) -> RECOGNIZABLE

Days are calendar days in Asia/Shanghai; a result collected on day D with a validity
of N days is valid until D + N inclusive.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from decimal import Decimal
from enum import StrEnum
from zoneinfo import ZoneInfo

from broker.domain.catalog import Catalog, CatalogItem, ItemKind
from broker.domain.marks import MarkTable
from broker.domain.registry import HospitalProfile, LevelMatrix
from broker.domain.results import WITHDRAWN_STATUSES, Coding

SHANGHAI = ZoneInfo("Asia/Shanghai")
RECOGNISABLE_STATUSES = frozenset({"final", "amended", "corrected", "appended", "available"})
# A final observation inside a report that is itself not yet released is not final.
REPORT_NOT_FINAL = frozenset({"registered", "preliminary"})
LEVEL_ZH = {"3": "三级", "2": "二级", "1": "一级"}


class Decision(StrEnum):
    RECOGNIZABLE = "RECOGNIZABLE"
    NO_PRIOR_RESULT = "NO_PRIOR_RESULT"
    NOT_IN_CATALOG = "NOT_IN_CATALOG"
    EXPIRED = "EXPIRED"
    NOT_QC_CERTIFIED = "NOT_QC_CERTIFIED"
    OUT_OF_SCOPE = "OUT_OF_SCOPE"
    PRELIMINARY = "PRELIMINARY"
    WITHDRAWN = "WITHDRAWN"
    EXCLUDED = "EXCLUDED"


@dataclass(frozen=True)
class Text:
    zh: str
    en: str


@dataclass(frozen=True)
class PriorItem:
    """One indexed item of one of the patient's current results (from any hospital)."""

    result_id: str
    hospital: str
    result_kind: str  # lab | imaging | report
    resource_type: str  # of the item: Observation, DiagnosticReport, ImagingStudy
    result_status: str
    status: str
    effective: datetime | None
    summary: str
    codings: tuple[Coding, ...] = ()
    modality: str | None = None
    body_site: str | None = None
    laterality: str | None = None
    contrast: bool | None = None
    recognition_mark: str | None = None


@dataclass(frozen=True)
class Order:
    """An item about to be ordered: a code, or modality + body site (+ side, contrast)."""

    system: str | None = None
    code: str | None = None
    modality: str | None = None
    body_site: str | None = None
    laterality: str | None = None
    contrast: bool | None = None


@dataclass(frozen=True)
class Policy:
    marks: MarkTable
    levels: LevelMatrix


@dataclass(frozen=True)
class Verdict:
    """What the rules say about one prior result for the ordered item."""

    result_id: str
    hospital: str
    effective: datetime | None
    status: str
    summary: str
    decision: Decision
    reason: Text
    valid_until: date | None = None
    mark: str | None = None
    resource_type: str = ""


@dataclass(frozen=True)
class ItemDecision:
    item: CatalogItem | None
    decision: Decision
    explanation: Text
    candidate: Verdict | None = None
    others: tuple[Verdict, ...] = ()
    valid_until: date | None = None
    fee_saved: Decimal | None = None
    notes: tuple[Text, ...] = field(default=())


def local_date(moment: datetime) -> date:
    return moment.astimezone(SHANGHAI).date()


def resolve_order(order: Order, catalog: Catalog, ordering: str) -> CatalogItem | None:
    if order.modality is not None:
        return catalog.imaging_item(order.modality, order.body_site, order.contrast)
    if order.system and order.code:
        return catalog.item_for_code(ordering, order.system, order.code)
    return None


def decide(
    order: Order,
    *,
    order_time: datetime,
    ordering: HospitalProfile,
    hospitals: Mapping[str, HospitalProfile],
    catalog: Catalog,
    policy: Policy,
    prior: Sequence[PriorItem],
    emergency: bool = False,
) -> ItemDecision:
    """Decide one ordered item. `catalog` is already the ordering region's view."""
    notes = (_EMERGENCY,) if emergency else ()
    item = resolve_order(order, catalog, ordering.id)
    if item is None:
        return ItemDecision(None, Decision.NOT_IN_CATALOG, _not_in_catalog(order), notes=notes)
    if catalog.excluded(item):
        return ItemDecision(item, Decision.EXCLUDED, _excluded(item, catalog), notes=notes)
    order_day = local_date(order_time)
    verdicts = [
        _judge(item, res, order_day, ordering, hospitals, catalog, policy)
        for res in _candidates(item, order, prior, catalog)
    ]
    verdicts = [v for v in verdicts if v.effective is None or v.effective <= order_time]
    verdicts.sort(key=_newest_first)
    if not verdicts:
        return ItemDecision(item, Decision.NO_PRIOR_RESULT, _no_prior(item), notes=notes)
    best = next((v for v in verdicts if v.decision is Decision.RECOGNIZABLE), None)
    if best is None:  # the newest one that was not withdrawn says most
        best = next((v for v in verdicts if v.decision is not Decision.WITHDRAWN), verdicts[0])
    others = tuple(v for v in verdicts if v is not best)
    if best.decision is Decision.RECOGNIZABLE:
        fee = item.fee(ordering.tier)
        saved = Text(
            f"可免重复检查，节省 ¥{fee}。" if fee is not None else "",
            f"Recognising it saves ¥{fee}." if fee is not None else "",
        )
        explanation = Text(f"{best.reason.zh}{saved.zh}", f"{best.reason.en} {saved.en}".strip())
        return ItemDecision(
            item, Decision.RECOGNIZABLE, explanation, best, others, best.valid_until, fee, notes
        )
    return ItemDecision(
        item, best.decision, best.reason, best, others, best.valid_until, None, notes
    )


# At equal instants, the verdict closest to recognition first; then a fixed order, so
# the answer never depends on the order results arrived in.
_CLOSENESS = {
    d: i
    for i, d in enumerate(
        [
            Decision.RECOGNIZABLE,
            Decision.OUT_OF_SCOPE,
            Decision.EXPIRED,
            Decision.NOT_QC_CERTIFIED,
            Decision.PRELIMINARY,
            Decision.NO_PRIOR_RESULT,
            Decision.WITHDRAWN,
        ]
    )
}


def _newest_first(v: Verdict) -> tuple[int, float, int, str, str]:
    recognisable = 0 if v.decision is Decision.RECOGNIZABLE else 1
    when = -(v.effective.timestamp() if v.effective else 0.0)
    return (recognisable, when, _CLOSENESS.get(v.decision, 99), v.hospital, v.result_id)


# -- which prior results are about the ordered item ------------------------------------


@dataclass(frozen=True)
class _Candidate:
    """A result considered for the item; for a panel, the item per component."""

    head: PriorItem
    components: tuple[tuple[CatalogItem, PriorItem | None], ...] = ()


def _candidates(
    item: CatalogItem, order: Order, prior: Sequence[PriorItem], catalog: Catalog
) -> list[_Candidate]:
    if item.kind is ItemKind.IMAGING:
        matched = [p for p in prior if _images_match(item, order, p, catalog)]
        with_images = {p.result_id for p in matched if p.resource_type == "ImagingStudy"}
        # A study's own report is part of that result, not a second candidate.
        return [
            _Candidate(p)
            for p in matched
            if p.resource_type == "ImagingStudy" or p.result_id not in with_images
        ]
    by_result: dict[str, list[PriorItem]] = {}
    for p in prior:
        by_result.setdefault(p.result_id, []).append(p)
    found: list[_Candidate] = []
    for rows in by_result.values():
        mapped = [(r, _lab_item(r, catalog)) for r in rows]
        head = next((r for r, i in mapped if i is not None and i.code == item.code), None)
        if item.kind is ItemKind.PANEL:
            parts = tuple(
                (catalog.items[c], next((r for r, i in mapped if i and i.code == c), None))
                for c in item.components
                if c in catalog.items
            )
            present = [r for _, r in parts if r is not None]
            if head is None and present:
                head = present[0]
            if head is not None:
                found.append(_Candidate(head, parts))
        elif head is not None:
            found.append(_Candidate(head))
    return found


def _lab_item(p: PriorItem, catalog: Catalog) -> CatalogItem | None:
    for c in p.codings:
        item = catalog.item_for_code(p.hospital, c.system, c.code)
        if item is not None and item.kind is not ItemKind.IMAGING:
            return item
    return None


def _images_match(item: CatalogItem, order: Order, p: PriorItem, catalog: Catalog) -> bool:
    if p.modality is None:  # a report coded only by LOINC: match it to list it
        return any(
            (found := catalog.item_for_code(p.hospital, c.system, c.code)) is not None
            and found.code == item.code
            for c in p.codings
        )
    if p.modality.upper() not in item.modalities() or p.body_site != item.body_site:
        return False
    if bool(p.contrast) != item.contrast:
        return False
    return not item.laterality or (
        order.laterality is not None and p.laterality == order.laterality
    )


# -- the rules for one candidate ---------------------------------------------------------


def _judge(
    item: CatalogItem,
    cand: _Candidate,
    order_day: date,
    ordering: HospitalProfile,
    hospitals: Mapping[str, HospitalProfile],
    catalog: Catalog,
    policy: Policy,
) -> Verdict:
    head = cand.head
    for component, row in cand.components:  # a panel: every component must pass
        if catalog.excluded(component):
            return _verdict(head, Decision.EXCLUDED, _excluded(component, catalog))
        if row is None:
            return _verdict(head, Decision.NO_PRIOR_RESULT, _missing_component(item, component))
        v = _rules(component, row, order_day, ordering, hospitals, policy, panel=item)
        if v.decision is not Decision.RECOGNIZABLE:
            return _verdict(head, v.decision, v.reason, v.valid_until, v.mark)
    return _rules(item, head, order_day, ordering, hospitals, policy)


def _rules(
    item: CatalogItem,
    p: PriorItem,
    order_day: date,
    ordering: HospitalProfile,
    hospitals: Mapping[str, HospitalProfile],
    policy: Policy,
    panel: CatalogItem | None = None,
) -> Verdict:
    name = _name(item, panel)
    if item.kind is ItemKind.IMAGING and p.resource_type != "ImagingStudy":
        return _verdict(p, Decision.NO_PRIOR_RESULT, _report_only(name, p))
    if p.status in WITHDRAWN_STATUSES or p.result_status in WITHDRAWN_STATUSES:
        return _verdict(p, Decision.WITHDRAWN, _withdrawn(name, p))
    if p.status not in RECOGNISABLE_STATUSES or p.result_status in REPORT_NOT_FINAL:
        return _verdict(p, Decision.PRELIMINARY, _preliminary(name, p))
    issuer = hospitals.get(p.hospital)
    if issuer is None:  # results of a hospital later removed from the registry
        return _verdict(p, Decision.NOT_QC_CERTIFIED, _unregistered(name, p))
    if p.effective is None:
        return _verdict(p, Decision.EXPIRED, _undated(name, p))
    day = local_date(p.effective)
    until = day + timedelta(days=item.validity_days)
    cert = issuer.certification_for(item.code, item.qc_group, day)
    if cert is None:
        return _verdict(
            p, Decision.NOT_QC_CERTIFIED, _uncertified(name, p, issuer, item, day), until
        )
    if order_day > until:
        return _verdict(
            p, Decision.EXPIRED, _expired(name, p, p.effective, until, order_day), until
        )
    mark = p.recognition_mark or policy.marks.derived_mark(cert, issuer)
    scope = _scope(p, issuer, ordering, mark, policy)
    if scope is not None:
        return _verdict(p, Decision.OUT_OF_SCOPE, scope, until, mark)
    return _verdict(
        p,
        Decision.RECOGNIZABLE,
        _recognisable(name, p, issuer, cert.body.value, mark, until, item),
        until,
        mark,
    )


def _scope(
    p: PriorItem,
    issuer: HospitalProfile,
    ordering: HospitalProfile,
    mark: str | None,
    policy: Policy,
) -> Text | None:
    """None when the ordering hospital must accept the result; else why not."""
    if issuer.id == ordering.id:
        return None
    shared = issuer.alliances & ordering.alliances
    if shared:
        return None  # 医联体/医共体: full recognition inside the alliance
    if mark is None or not policy.marks.covers(mark, ordering.region):
        shown = mark or "无"
        return Text(
            f"{issuer.id} 的结果互认标识为「{shown}」，不覆盖开单医院 {ordering.id}"
            f"（行政区划 {ordering.region}），不在互认范围内。",
            f"{issuer.id}'s result carries the mark '{mark or 'none'}', which does not cover "
            f"{ordering.id} (region {ordering.region}): out of the recognition scope.",
        )
    if not policy.levels.allows(ordering.level, issuer.level):
        return Text(
            f"按互认级别规则，{LEVEL_ZH.get(ordering.level, ordering.level)}医院 {ordering.id} "
            f"不要求互认{LEVEL_ZH.get(issuer.level, issuer.level)}医院 {issuer.id} 的结果"
            "（同级互认、下级认可上级）。",
            f"Under the level rules a level-{ordering.level} hospital ({ordering.id}) is not "
            f"required to accept results of a level-{issuer.level} hospital ({issuer.id}) "
            "(same level accept each other; lower levels accept higher ones).",
        )
    return None


def _verdict(
    p: PriorItem,
    decision: Decision,
    reason: Text,
    valid_until: date | None = None,
    mark: str | None = None,
) -> Verdict:
    return Verdict(
        p.result_id,
        p.hospital,
        p.effective,
        p.status,
        p.summary,
        decision,
        reason,
        valid_until,
        mark or p.recognition_mark,
        p.resource_type,
    )


# -- explanations (zh, en): each names the rule and the dates ---------------------------


_EMERGENCY = Text(
    "急诊/急救：所有既往结果均已列出，医生可依规重新检查（理由：急诊）。",
    "Emergency: every prior result is listed; the doctor may still re-test (reason EMERGENCY).",
)


def _name(item: CatalogItem, panel: CatalogItem | None = None) -> Text:
    if panel is None:
        return Text(item.name_zh, item.name_en)
    return Text(
        f"{panel.name_zh}的组分「{item.name_zh}」", f"component '{item.name_en}' of {panel.name_en}"
    )


def _d(moment: datetime | date | None) -> str:
    if moment is None:
        return "?"
    return (local_date(moment) if isinstance(moment, datetime) else moment).isoformat()


def _not_in_catalog(order: Order) -> Text:
    what = (
        f"{order.modality} {order.body_site or ''}".strip()
        if order.modality
        else f"{order.system}|{order.code}"
    )
    return Text(
        f"「{what}」不在互认项目目录中，无法判定互认。",
        f"'{what}' is not in the recognition item catalog, so no recognition applies.",
    )


def _excluded(item: CatalogItem, catalog: Catalog) -> Text:
    if item.code in catalog.negative_list:
        return Text(
            f"{item.name_zh}列入互认负面清单（结果变化快），需重新检查。",
            f"{item.name_en} is on the negative list (fast-changing): order it again.",
        )
    return Text(
        f"项目目录规定{item.name_zh}不予互认。",
        f"The catalog marks {item.name_en} as not recognisable.",
    )


def _no_prior(item: CatalogItem) -> Text:
    return Text(
        f"各医院均无该患者的{item.name_zh}既往结果。",
        f"No hospital has a prior {item.name_en} result for this patient.",
    )


def _missing_component(panel: CatalogItem, component: CatalogItem) -> Text:
    return Text(
        f"{panel.name_zh}须全部组分均可互认，该报告缺少「{component.name_zh}」。",
        f"A panel is recognised only with all its components; this report lacks "
        f"{component.name_en}.",
    )


def _report_only(name: Text, p: PriorItem) -> Text:
    return Text(
        f"{p.hospital} 于 {_d(p.effective)} 仅有{name.zh}的报告，没有影像；检查互认的是影像，"
        "不是他人的诊断结论。",
        f"{p.hospital} has only a report for {name.en} dated {_d(p.effective)}, without the "
        "images; imaging is recognised by its images, never by another doctor's conclusion.",
    )


def _withdrawn(name: Text, p: PriorItem) -> Text:
    return Text(
        f"{p.hospital} 于 {_d(p.effective)} 的{name.zh}结果已撤回（状态 {p.status}）。",
        f"{p.hospital}'s {name.en} result of {_d(p.effective)} was withdrawn (status {p.status}).",
    )


def _preliminary(name: Text, p: PriorItem) -> Text:
    return Text(
        f"{p.hospital} 于 {_d(p.effective)} 的{name.zh}结果尚非最终报告（状态 {p.status}），"
        "初步结果不予互认。",
        f"{p.hospital}'s {name.en} result of {_d(p.effective)} is not final (status "
        f"{p.status}); preliminary results are never recognised.",
    )


def _undated(name: Text, p: PriorItem) -> Text:
    return Text(
        f"{p.hospital} 的{name.zh}结果没有采样/检查时间，无法确定互认时限。",
        f"{p.hospital}'s {name.en} result has no collection or study time, so its "
        "validity cannot be established.",
    )


def _unregistered(name: Text, p: PriorItem) -> Text:
    return Text(
        f"{p.hospital} 已不在医院登记册中，其{name.zh}结果无法确认质控资格。",
        f"{p.hospital} is no longer registered, so the QC eligibility of its "
        f"{name.en} result cannot be established.",
    )


def _uncertified(
    name: Text, p: PriorItem, issuer: HospitalProfile, item: CatalogItem, day: date
) -> Text:
    return Text(
        f"{issuer.id} 在结果日期 {day.isoformat()} 未持有{item.name_zh}（质控组 "
        f"{item.qc_group}）的室间质评/质控合格认证，结果不予互认。",
        f"{issuer.id} held no QC/EQA certification for {item.name_en} (group "
        f"{item.qc_group}) on the result date {day.isoformat()}.",
    )


def _expired(name: Text, p: PriorItem, when: datetime, until: date, order_day: date) -> Text:
    label = name
    days = (order_day - local_date(when)).days
    return Text(
        f"{p.hospital} 于 {_d(when)} 的{label.zh}结果互认有效期至 {until.isoformat()}，"
        f"开单日 {order_day.isoformat()} 已超期（相隔 {days} 天）。",
        f"{p.hospital}'s {label.en} result of {_d(when)} was valid until {until.isoformat()}; "
        f"the order on {order_day.isoformat()} is {days} days after it: expired.",
    )


def _recognisable(
    name: Text,
    p: PriorItem,
    issuer: HospitalProfile,
    body: str,
    mark: str | None,
    until: date,
    item: CatalogItem,
) -> Text:
    shown = mark or "—"
    return Text(
        f"{issuer.id}（{issuer.label}）于 {_d(p.effective)} 的{name.zh}结果（{p.status}，"
        f"标识 {shown}，{body} 认证）在 {item.validity_days} 天互认时限内（有效至 "
        f"{until.isoformat()}），可予互认。",
        f"{issuer.id} ({issuer.label}) {name.en} result of {_d(p.effective)} ({p.status}, "
        f"mark {shown}, {body} certified) is within its {item.validity_days}-day validity "
        f"(until {until.isoformat()}) and may be recognised.",
    )
