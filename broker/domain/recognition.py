"""The recognition rules (《医疗机构检查检验结果互认管理办法》, 2022): pure functions.

For one ordered item and the patient's indexed results, decide whether a prior result
may be recognised instead of repeating the test, and explain why in zh and en. The rules
run in DESIGN.md's order; the first that fails names the decision:

  catalog -> negative list -> patient context (age bands, pregnancy) -> result maps to
  the item (imaging: modality, body site through the site table, protocol, side; a
  near miss is listed, never matched; panels: every component, none excluded) -> images,
  not reports -> withdrawn (a study: all its reports withdrawn) -> usable content
  (NO_VALUE) -> not final (a study: its final report, where the region requires it) ->
  issuer registered -> dated -> QC certification on the result date (a panel: its own or
  every component's) -> validity at order time -> mark capped by the certification ->
  scope (same hospital, alliance, mark area within the province or a regional agreement
  across it, level-and-grade matrix) -> RECOGNIZABLE

A recognisable answer also carries warnings: newer results for the item (any hospital,
any QC status, not withdrawn) and the candidate's own abnormal or critical flags; the
receiving doctor decides (以接诊医师判断为标准).

Days are calendar days in Asia/Shanghai; a result collected on day D with a validity
of N days is valid until D + N inclusive.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import date, datetime, timedelta
from decimal import Decimal
from enum import StrEnum
from zoneinfo import ZoneInfo

from broker.domain.catalog import Catalog, CatalogItem, ItemKind
from broker.domain.marks import MarkTable
from broker.domain.registry import Certification, HospitalProfile, LevelMatrix
from broker.domain.results import WITHDRAWN_STATUSES, Coding
from broker.domain.scope import ScopeRules, simple_matrix
from broker.domain.sensitivity import NO_SENSITIVE_RESULTS, SensitiveCategory, SensitivityTable
from broker.domain.sites import ENHANCED, PLAIN, SiteTable, study_protocol

SHANGHAI = ZoneInfo("Asia/Shanghai")
RECOGNISABLE_STATUSES = frozenset({"final", "amended", "corrected", "appended", "available"})
# A final observation inside a report that is itself not yet released is not final.
REPORT_NOT_FINAL = frozenset({"registered", "preliminary"})
FINAL_REPORT = frozenset({"final", "amended", "corrected", "appended"})
LEVEL_ZH = {"3": "三级", "2": "二级", "1": "一级"}
# HL7 v3 ObservationInterpretation (FHIR Observation.interpretation; HL7 v2 OBX-8).
CRITICAL_FLAGS = frozenset({"AA", "HH", "LL"})
ABNORMAL_FLAGS = frozenset({"A", "H", "L", "HU", "LU", "POS", "DET", "R", ">", "<"})


class Decision(StrEnum):
    RECOGNIZABLE = "RECOGNIZABLE"
    NO_PRIOR_RESULT = "NO_PRIOR_RESULT"
    NOT_IN_CATALOG = "NOT_IN_CATALOG"
    EXPIRED = "EXPIRED"
    NOT_QC_CERTIFIED = "NOT_QC_CERTIFIED"
    OUT_OF_SCOPE = "OUT_OF_SCOPE"
    PRELIMINARY = "PRELIMINARY"
    WITHDRAWN = "WITHDRAWN"
    NO_VALUE = "NO_VALUE"
    EXCLUDED = "EXCLUDED"


@dataclass(frozen=True)
class Text:
    zh: str
    en: str

    def __add__(self, other: Text) -> Text:
        return Text(f"{self.zh}{other.zh}", f"{self.en} {other.en}".strip())


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
    protocol: str | None = None  # imaging, as sent (None: from contrast, else unknown)
    value: str | None = None  # as displayed, e.g. "13.2" or "阴性"
    unit: str | None = None
    flags: tuple[str, ...] = ()  # interpretation codes (H, L, HH, LL, A, AA …)
    no_value: str | None = None  # why the item has no usable content (content_problem)
    # When the result last changed (its version stamp): a check stores it with its
    # candidate, so an outcome can tell the result changed since the doctor saw it.
    result_version: str | None = None
    # Where /fhir serves the result holding this item ("DiagnosticReport/<id>"): a lab item
    # inside a report is not served under the report's id.
    fhir_ref: str | None = None
    images: str | None = None  # imaging: the URL that opens the study's images


@dataclass(frozen=True)
class Order:
    """An item about to be ordered: a code, or modality + body site (+ side, protocol)."""

    system: str | None = None
    code: str | None = None
    modality: str | None = None
    body_site: str | None = None
    laterality: str | None = None
    contrast: bool | None = None
    protocol: str | None = None  # wins over contrast

    @property
    def wanted_protocol(self) -> str | None:
        return self.protocol or ("enhanced" if self.contrast else None)


@dataclass(frozen=True)
class PatientContext:
    """What the rules know of the patient at order time (never an identifier)."""

    birth_date: date | None = None
    pregnant: bool | None = None
    # Sensitive categories (broker.domain.sensitivity) the patient's recorded consent lets
    # other hospitals see. Set by the check use case from its Consents port, never by the
    # caller: none until consent is recorded.
    consented: frozenset[str] = frozenset()

    def age_days(self, on: date) -> int | None:
        if self.birth_date is None or self.birth_date > on:
            return None
        return (on - self.birth_date).days


@dataclass(frozen=True)
class Policy:
    marks: MarkTable
    levels: LevelMatrix
    scope: ScopeRules | None = None  # per-region matrices and agreements; None: `levels`
    version: str = "builtin"

    @property
    def rules(self) -> ScopeRules:
        return self.scope or ScopeRules((simple_matrix(self.levels.accepts),))


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
    value: str | None = None
    unit: str | None = None
    flags: tuple[str, ...] = ()
    near_miss: bool = False  # same modality and site, another side or protocol
    fhir_ref: str | None = None  # the item as /fhir serves it (PriorItem.fhir_ref)
    images: str | None = None  # imaging: the URL that opens the study's images

    @property
    def critical(self) -> bool:
        return bool(CRITICAL_FLAGS & set(self.flags))

    @property
    def abnormal(self) -> bool:
        return bool(ABNORMAL_FLAGS & set(self.flags)) or self.critical


@dataclass(frozen=True)
class Warning:
    """Something the doctor should see beside the candidate (DESIGN.md `warnings`)."""

    kind: str  # newer-result | candidate-critical | candidate-abnormal
    hospital: str
    result_id: str
    resource_type: str
    effective: datetime | None
    status: str
    value: str | None
    unit: str | None
    flags: tuple[str, ...]
    message: Text
    fhir_ref: str | None = None


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
    warnings: tuple[Warning, ...] = field(default=())


def local_date(moment: datetime) -> date:
    return moment.astimezone(SHANGHAI).date()


def resolve_order(order: Order, catalog: Catalog, ordering: str) -> CatalogItem | None:
    if order.modality is not None:
        return catalog.imaging_item(order.modality, order.body_site, order.wanted_protocol)
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
    patient: PatientContext | None = None,
    sensitivity: SensitivityTable = NO_SENSITIVE_RESULTS,
) -> ItemDecision:
    """Decide one ordered item. `catalog` is already the ordering region's view.

    Another hospital's sensitive results (`sensitivity`, unless the patient consented) are
    dropped first, so no decision, candidate, warning or explanation can depend on them;
    a sensitive item with no result of the ordering hospital's own is EXCLUDED."""
    notes = (_EMERGENCY,) if emergency else ()
    item = resolve_order(order, catalog, ordering.id)
    if item is None:
        return ItemDecision(None, Decision.NOT_IN_CATALOG, _not_in_catalog(order), notes=notes)
    if catalog.excluded(item):
        return ItemDecision(item, Decision.EXCLUDED, _excluded(item, catalog), notes=notes)
    patient = patient or PatientContext()
    order_day = local_date(order_time)
    context = _patient_context(item, catalog, patient, order_day)
    if isinstance(context, Text):
        return ItemDecision(item, Decision.EXCLUDED, context, notes=notes)
    prior = visible_prior(prior, ordering.id, catalog, sensitivity, patient.consented)
    sensitive = sensitivity.of_item(item)
    if sensitive is not None and sensitive.code in patient.consented:
        sensitive = None
    judge = _Judge(item, order, order_day, ordering, hospitals, catalog, policy, context)
    verdicts = [judge.verdict(c) for c in _candidates(item, order, prior, catalog)]
    verdicts = [v for v in verdicts if v.effective is None or v.effective <= order_time]
    verdicts.sort(key=_newest_first)
    exact = [v for v in verdicts if not v.near_miss]
    near = tuple(v for v in verdicts if v.near_miss)
    if not exact and sensitive is not None:  # the same answer whether others hold one
        return ItemDecision(
            item, Decision.EXCLUDED, _sensitive(item, sensitive), None, near, notes=notes
        )
    if not exact:
        return ItemDecision(
            item, Decision.NO_PRIOR_RESULT, _no_prior(item, near), None, near, notes=notes
        )
    best = next((v for v in exact if v.decision is Decision.RECOGNIZABLE), None)
    if best is None:  # the newest one that was not withdrawn says most
        best = next((v for v in exact if v.decision is not Decision.WITHDRAWN), exact[0])
    others = tuple(v for v in verdicts if v is not best)
    if best.decision is not Decision.RECOGNIZABLE:
        return ItemDecision(
            item, best.decision, best.reason, best, others, best.valid_until, None, notes
        )
    fee = item.fee(ordering.tier)
    saved = Text(
        f"可免重复检查，节省 ¥{fee}。" if fee is not None else "",
        f"Recognising it saves ¥{fee}." if fee is not None else "",
    )
    warnings = _warnings(best, exact)
    return ItemDecision(
        item,
        Decision.RECOGNIZABLE,
        best.reason + saved,
        best,
        others,
        best.valid_until,
        fee,
        notes,
        warnings,
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
            Decision.NO_VALUE,
            Decision.EXCLUDED,
            Decision.NO_PRIOR_RESULT,
            Decision.WITHDRAWN,
        ]
    )
}


def visible_prior(
    prior: Sequence[PriorItem],
    viewer: str,
    catalog: Catalog,
    sensitivity: SensitivityTable,
    consented: frozenset[str] = frozenset(),
) -> Sequence[PriorItem]:
    """`prior` without the results hospital `viewer` may not see (broker.domain.sensitivity):
    the issuing hospital always sees its own."""
    hidden = sensitivity.hidden_results(prior, viewer=viewer, catalog=catalog, consented=consented)
    return [p for p in prior if p.result_id not in hidden] if hidden else prior


def _newest_first(v: Verdict) -> tuple[int, float, int, str, str]:
    recognisable = 0 if v.decision is Decision.RECOGNIZABLE else 1
    when = -(v.effective.timestamp() if v.effective else 0.0)
    return (recognisable, when, _CLOSENESS.get(v.decision, 99), v.hospital, v.result_id)


def _warnings(best: Verdict, exact: Sequence[Verdict]) -> tuple[Warning, ...]:
    """Newer results for the item (newest first), then the candidate's own flags."""
    out: list[Warning] = []
    newer = [
        v
        for v in exact
        if v is not best
        and v.decision is not Decision.WITHDRAWN
        and v.status not in WITHDRAWN_STATUSES  # a cancelled, never-produced observation
        and v.effective is not None
        and best.effective is not None
        and v.effective > best.effective
    ]
    newer.sort(key=lambda v: (-(v.effective.timestamp() if v.effective else 0.0), v.hospital))
    for v in newer:
        out.append(_warning("newer-result", v, _newer_text(v, best)))
    if best.critical:
        out.append(_warning("candidate-critical", best, _flag_text(best, critical=True)))
    elif best.abnormal:
        out.append(_warning("candidate-abnormal", best, _flag_text(best, critical=False)))
    return tuple(out)


def _warning(kind: str, v: Verdict, message: Text) -> Warning:
    return Warning(
        kind,
        v.hospital,
        v.result_id,
        v.resource_type,
        v.effective,
        v.status,
        v.value,
        v.unit,
        v.flags,
        message,
        v.fhir_ref,
    )


# -- the patient at order time ---------------------------------------------------------


@dataclass(frozen=True)
class _Context:
    validity_days: int | None = None  # an age band's own window
    band_reason: Text | None = None


def _patient_context(
    item: CatalogItem, catalog: Catalog, patient: PatientContext, order_day: date
) -> _Context | Text:
    """The item's window for this patient, or why the item is excluded for them."""
    parts = [item, *(catalog.items[c] for c in item.components if c in catalog.items)]
    if patient.pregnant and any(p.pregnancy_sensitive for p in parts):
        return Text(
            f"{item.name_zh}受妊娠影响，孕期患者的既往结果不予互认，需重新检查。",
            f"{item.name_en} changes in pregnancy: prior results are not recognised for a "
            "pregnant patient; order it again.",
        )
    banded = [p for p in parts if p.age_bands]
    if not banded:
        return _Context()
    age = patient.age_days(order_day)
    if age is None:
        return Text(
            f"{item.name_zh}的互认规则随年龄而不同，未提供患者年龄（出生日期），不予互认。",
            f"{item.name_en} has age-dependent rules and the patient's age (birth date) is "
            "unknown, so it is not recognised.",
        )
    windows: list[int] = []
    reasons: list[Text] = []
    for p in banded:
        band = p.age_band(age)
        if band is None:
            continue
        if band.exclude:
            return Text(
                f"按年龄规则（患者 {_age_zh(age)}），{p.name_zh}不予互认：{band.reason_zh}",
                f"By the age rules (patient aged {_age_en(age)}), {p.name_en} is not "
                f"recognised: {band.reason_en}",
            )
        if band.validity_days is not None:
            windows.append(band.validity_days)
            reasons.append(Text(band.reason_zh, band.reason_en))
    if not windows:
        return _Context()
    return _Context(min(windows), reasons[windows.index(min(windows))])


def _age_zh(days: int) -> str:
    return f"{days} 天" if days < 366 else f"{days // 365} 岁"


def _age_en(days: int) -> str:
    return f"{days} days" if days < 366 else f"{days // 365} years"


# -- which prior results are about the ordered item ------------------------------------


@dataclass(frozen=True)
class _Candidate:
    """A result considered for the item; for a panel, the item per component."""

    head: PriorItem
    components: tuple[tuple[CatalogItem, PriorItem | None], ...] = ()
    reports: tuple[PriorItem, ...] = ()  # an imaging study's reports
    near_miss: Text | None = None


def _candidates(
    item: CatalogItem, order: Order, prior: Sequence[PriorItem], catalog: Catalog
) -> list[_Candidate]:
    if item.kind is ItemKind.IMAGING:
        return _imaging_candidates(item, order, prior, catalog)
    by_result: dict[str, list[PriorItem]] = {}
    for p in prior:
        by_result.setdefault(p.result_id, []).append(p)
    found: list[_Candidate] = []
    for rows in by_result.values():
        mapped = [(r, _lab_item(r, catalog)) for r in rows]
        # A single analyte is judged on its Observation (the value), not on a report that
        # happens to carry the same code (an HL7 OBR ordered as the analyte itself).
        mapped.sort(key=lambda m: item.kind is ItemKind.LAB and m[0].resource_type != "Observation")
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


def _imaging_candidates(
    item: CatalogItem, order: Order, prior: Sequence[PriorItem], catalog: Catalog
) -> list[_Candidate]:
    reports: dict[str, list[PriorItem]] = {}
    for p in prior:
        if p.resource_type == "DiagnosticReport":
            reports.setdefault(p.result_id, []).append(p)
    found: list[_Candidate] = []
    studies: set[str] = set()
    for p in prior:
        if p.resource_type != "ImagingStudy":
            continue
        match = _study_match(item, order, p, catalog)
        if match is not None:
            studies.add(p.result_id)
            miss = match if isinstance(match, Text) else None
            found.append(_Candidate(p, reports=tuple(reports.get(p.result_id, ())), near_miss=miss))
    # A report without its images is listed (never recognised); a study's own report is
    # part of that study, not a second candidate.
    for p in prior:
        if (
            p.resource_type == "DiagnosticReport"
            and p.result_id not in studies
            and _report_is_about(item, p, catalog)
        ):
            found.append(_Candidate(p))
    return found


def _report_is_about(item: CatalogItem, p: PriorItem, catalog: Catalog) -> bool:
    if p.modality is not None:
        return p.modality.upper() in item.modalities() and catalog.sites.canonical(
            p.body_site
        ) == catalog.sites.canonical(item.body_site)
    return any(
        (found := catalog.item_for_code(p.hospital, c.system, c.code)) is not None
        and found.code == item.code
        for c in p.codings
    )


def _study_match(
    item: CatalogItem, order: Order, p: PriorItem, catalog: Catalog
) -> bool | Text | None:
    """True: the study is of the ordered item; a Text: a near miss (why); None: unrelated."""
    sites = catalog.sites
    if p.modality is None or p.modality.upper() not in item.modalities():
        return None
    if sites.canonical(p.body_site) != sites.canonical(item.body_site):
        return None
    wanted = item.protocol or PLAIN
    done = _study_protocol(p, catalog)
    if done != wanted:
        return _protocol_miss(sites, done, wanted)
    if not item.laterality:
        return True
    if order.laterality is None:
        return Text(
            "这是分侧别的检查，开单未注明侧别，无法确认同侧。",
            "The item is sided and the order names no side, so no study can be matched.",
        )
    if p.laterality is None:
        return Text(
            "既往检查未注明侧别，分侧别的检查不能据此互认。",
            "The study's laterality is unknown; a sided item matches only a known, equal side.",
        )
    if p.laterality != order.laterality:
        done_zh, done_en = sites.side_name(p.laterality)
        want_zh, want_en = sites.side_name(order.laterality)
        return Text(
            f"既往检查为{done_zh}，开单为{want_zh}，侧别不同。",
            f"The study is of the {done_en} side; the order is for the {want_en} side.",
        )
    return True


def _study_protocol(p: PriorItem, catalog: Catalog) -> str | None:
    """The protocol a study states: its protocol extension; else its procedure code or
    name (CTA, 平扫 …) unless the contrast flag contradicts it; else the contrast flag."""
    sites = catalog.sites
    if p.protocol:
        return sites.protocol(p.protocol) or p.protocol
    named = _coded_protocol(p, catalog) or sites.protocol_in_text(p.summary)
    flagged = study_protocol(None, p.contrast)
    if named is None:
        return flagged
    contradicted = (named == PLAIN and p.contrast is True) or (
        named == ENHANCED and p.contrast is False
    )
    return None if contradicted else named


def _coded_protocol(p: PriorItem, catalog: Catalog) -> str | None:
    """A protocol stated by the study's procedure code (a catalog LOINC code), if any."""
    for c in p.codings:
        found = catalog.item_for_code(p.hospital, c.system, c.code)
        if found is not None and found.kind is ItemKind.IMAGING and found.protocol:
            return found.protocol
    return None


def _protocol_miss(sites: SiteTable, done: str | None, wanted: str) -> Text:
    want_zh, want_en = sites.protocol_name(wanted)
    if done is None:
        return Text(
            f"既往检查未注明扫描方案（平扫/增强等），不能确认与所开{want_zh}检查相同。",
            f"The study's protocol is not stated, so it cannot be matched to a {want_en} order.",
        )
    done_zh, done_en = sites.protocol_name(done)
    return Text(
        f"既往检查为{done_zh}，所开为{want_zh}，扫描方案不同。",
        f"The study was {done_en}; the order is {want_en}: a different protocol.",
    )


@dataclass(frozen=True)
class RowFilter:
    """The rows of a person's results a check can need, as storage can find them by index:
    rows coded with one of `codes` (in any code system: a superset), and every study and
    report row when `imaging`. Storage reads the results holding such a row; every result
    `results_that_matter` keeps is among them."""

    codes: frozenset[str]
    imaging: bool

    @property
    def empty(self) -> bool:
        return not self.codes and not self.imaging

    def admits(self, row: PriorItem) -> bool:
        """Whether storage's filter finds this row (the fakes and tests ask it)."""
        return any(c.code in self.codes for c in row.codings) or (
            self.imaging and row.resource_type in IMAGING_ROW_TYPES
        )


IMAGING_ROW_TYPES = ("ImagingStudy", "DiagnosticReport")


def rows_that_matter(items: Iterable[CatalogItem | None], catalog: Catalog) -> RowFilter:
    """The row filter of the resolved order `items` (see `results_that_matter`)."""
    codes: set[str] = set()
    imaging = False
    for item in items:
        if item is None or catalog.excluded(item):
            continue
        if item.kind is ItemKind.IMAGING:
            imaging = True
        else:
            for code in (item.code, *item.components):
                codes |= catalog.codes_meaning(code)
    return RowFilter(frozenset(codes), imaging)


def needs_age(items: Iterable[CatalogItem | None], catalog: Catalog) -> bool:
    """Whether any resolved order item (or a component) has age-banded rules: only then
    does the check need the patient's birth date."""
    for item in items:
        if item is None:
            continue
        parts = [item, *(catalog.items[c] for c in item.components if c in catalog.items)]
        if any(p.age_bands for p in parts):
            return True
    return False


def results_that_matter(
    items: Iterable[CatalogItem | None],
    prior: Sequence[PriorItem],
    catalog: Catalog,
    *,
    sensitivity: SensitivityTable = NO_SENSITIVE_RESULTS,
    viewer: str | None = None,
    consented: frozenset[str] = frozenset(),
) -> set[str]:
    """The results among `prior` that can be a candidate (or a near miss, or a study's
    report) for one of the resolved order `items`; `decide` gives the same decision without
    the others. Reads only codings, kinds and resource types, so storage can call it before
    it opens the sealed values and summaries of the results that matter.

    Lab and panel items: a result matters when one of its rows maps to the item or to one of
    its components (as in `_candidates`). Imaging: every study and every report matters.
    With `viewer`, the results `decide` hides from that hospital (sensitive results of
    others) never matter, so their sealed values are not even opened."""
    if viewer is not None:
        prior = visible_prior(prior, viewer, catalog, sensitivity, consented)
    codes: set[str] = set()
    imaging = False
    for item in items:
        if item is None or catalog.excluded(item):
            continue  # decided without any prior result
        if item.kind is ItemKind.IMAGING:
            imaging = True
        else:
            codes.add(item.code)
            codes.update(item.components)
    keep: set[str] = set()
    for p in prior:
        if p.result_id not in keep and _matters(p, imaging, codes, catalog):
            keep.add(p.result_id)
    return keep


def _matters(p: PriorItem, imaging: bool, codes: set[str], catalog: Catalog) -> bool:
    if imaging and p.resource_type in IMAGING_ROW_TYPES:
        return True
    found = _lab_item(p, catalog) if codes else None
    return found is not None and found.code in codes


def _lab_item(p: PriorItem, catalog: Catalog) -> CatalogItem | None:
    for c in p.codings:
        item = catalog.item_for_code(p.hospital, c.system, c.code)
        if item is not None and item.kind is not ItemKind.IMAGING:
            return item
    return None


# -- the rules for one candidate ---------------------------------------------------------


@dataclass(frozen=True)
class _Judge:
    item: CatalogItem
    order: Order
    order_day: date
    ordering: HospitalProfile
    hospitals: Mapping[str, HospitalProfile]
    catalog: Catalog
    policy: Policy
    context: _Context

    def verdict(self, cand: _Candidate) -> Verdict:
        head = cand.head
        if cand.near_miss is not None:
            reason = _near_miss(self.item, head, cand.near_miss)
            return _verdict(head, Decision.NO_PRIOR_RESULT, reason, near_miss=True)
        flags: tuple[str, ...] = ()
        for component, row in cand.components:  # a panel: every component must pass
            if self.catalog.excluded(component):
                return _verdict(head, Decision.EXCLUDED, _excluded(component, self.catalog))
            if row is None:
                reason = _missing_component(self.item, component)
                return _verdict(head, Decision.NO_PRIOR_RESULT, reason)
            v = self.rules(component, row, panel=self.item)
            if v.decision is not Decision.RECOGNIZABLE:
                return _verdict(head, v.decision, v.reason, v.valid_until, v.mark)
            flags += tuple(f for f in row.flags if f not in flags)
        v = self.rules(self.item, head, reports=cand.reports, components=cand.components)
        if cand.components:  # the panel's own row carries no value; its components' flags
            v = replace(v, value=None, unit=None, flags=flags)
        return v

    def rules(
        self,
        item: CatalogItem,
        p: PriorItem,
        *,
        panel: CatalogItem | None = None,
        reports: tuple[PriorItem, ...] = (),
        components: tuple[tuple[CatalogItem, PriorItem | None], ...] = (),
    ) -> Verdict:
        name = _name(item, panel)
        imaging = item.kind is ItemKind.IMAGING
        if imaging and p.resource_type != "ImagingStudy":
            return _verdict(p, Decision.NO_PRIOR_RESULT, _report_only(name, p))
        if p.status == "cancelled" and p.no_value is not None:
            # An observation the lab could not produce (HL7 OBX-11 X/N -> cancelled with a
            # dataAbsentReason) was never a result: no value, not a withdrawal.
            return _verdict(p, Decision.NO_VALUE, _no_value(name, p))
        if p.status in WITHDRAWN_STATUSES or p.result_status in WITHDRAWN_STATUSES:
            return _verdict(p, Decision.WITHDRAWN, _withdrawn(name, p))
        if imaging and reports and all(r.status in WITHDRAWN_STATUSES for r in reports):
            return _verdict(p, Decision.WITHDRAWN, _reports_withdrawn(name, p))
        if p.no_value is not None:
            return _verdict(p, Decision.NO_VALUE, _no_value(name, p))
        if p.status not in RECOGNISABLE_STATUSES or p.result_status in REPORT_NOT_FINAL:
            return _verdict(p, Decision.PRELIMINARY, _preliminary(name, p))
        report_note = Text("", "")
        if imaging:
            final = [r for r in reports if r.status in FINAL_REPORT]
            if self.catalog.requires_final_report and not final:
                return _verdict(p, Decision.PRELIMINARY, _no_final_report(name, p, reports))
            report_note = _report_note(reports, final)
        issuer = self.hospitals.get(p.hospital)
        if issuer is None:  # results of a hospital later removed from the registry
            return _verdict(p, Decision.NOT_QC_CERTIFIED, _unregistered(name, p))
        if p.effective is None:
            return _verdict(p, Decision.EXPIRED, _undated(name, p))
        day = local_date(p.effective)
        window, window_note = item.validity_days, Text("", "")
        banded = self.context.validity_days
        if banded is not None and banded < window:  # an age band's own, shorter window
            window = banded
            if self.context.band_reason is not None and panel is None:
                window_note = self.context.band_reason
        until = day + timedelta(days=window)
        cert, cert_note = self._certification(issuer, item, components, day)
        if cert is None:
            reason = _uncertified(name, p, issuer, item, day)
            return _verdict(p, Decision.NOT_QC_CERTIFIED, reason, until)
        if self.order_day > until:
            reason = _expired(name, p, p.effective, until, self.order_day) + window_note
            return _verdict(p, Decision.EXPIRED, reason, until)
        mark, mark_note = self._mark(p, cert, issuer, day)
        refusal, scope_note = self._scope(p, issuer, mark, item)
        if refusal is not None:
            return _verdict(p, Decision.OUT_OF_SCOPE, refusal + mark_note, until, mark)
        reason = _recognisable(name, p, issuer, cert.body.value, mark, until, window)
        reason = reason + cert_note + mark_note + scope_note + window_note + report_note
        return _verdict(p, Decision.RECOGNIZABLE, reason, until, mark)

    def _certification(
        self,
        issuer: HospitalProfile,
        item: CatalogItem,
        components: tuple[tuple[CatalogItem, PriorItem | None], ...],
        day: date,
    ) -> tuple[Certification | None, Text]:
        """The item's certificate; a panel without one is covered when every component's
        own certificate is (the weakest of them carries the mark)."""
        cert = issuer.certification_for(item.code, item.qc_group, day)
        if cert is not None or not components:
            return cert, Text("", "")
        held = [issuer.certification_for(c.code, c.qc_group, day) for c, _ in components]
        if any(c is None for c in held):
            return None, Text("", "")
        weakest = sorted((c for c in held if c is not None), key=lambda c: c.body.national)[0]
        return weakest, Text(
            "（组合项目由各组分项目的质控认证覆盖）",
            "(the panel is covered by its components' certifications)",
        )

    def _mark(
        self, p: PriorItem, cert: Certification, issuer: HospitalProfile, day: date
    ) -> tuple[str | None, Text]:
        """The mark that stands: the one sent, capped by what the certification supports."""
        marks = self.policy.marks
        derived = marks.derived_mark(cert, issuer)
        sent = p.recognition_mark
        if sent is None:
            return derived, Text("", "")
        agreed = self.policy.rules.agreement_marks(issuer.region, day)
        if marks.supported(sent, cert, issuer, agreed):
            return sent, Text("", "")
        shown = derived or "无"
        return derived, Text(
            f"结果所带标识「{sent}」超出 {issuer.id} 当日的认证范围（{body_zh(cert.body.value)}），"
            f"按认证取「{shown}」。",
            f"The mark sent, '{sent}', exceeds what {issuer.id}'s certification "
            f"({cert.body.value}) supported that day, so '{derived or 'none'}' applies.",
        )

    def _scope(
        self, p: PriorItem, issuer: HospitalProfile, mark: str | None, item: CatalogItem
    ) -> tuple[Text | None, Text]:
        """(None, how) when the ordering hospital must accept the result; else (why not, _)."""
        ordering, none = self.ordering, Text("", "")
        if issuer.id == ordering.id:
            return None, none
        if issuer.alliances & ordering.alliances:
            return None, none  # 医联体/医共体: full recognition inside the alliance
        marks, rules = self.policy.marks, self.policy.rules
        kind = item.kind.value
        if mark is None:
            return _no_mark(issuer, ordering, mark), none
        how = none
        if issuer.region[:2] != ordering.region[:2] and marks.regions(mark) != ():
            agreement = rules.agreement(
                issuer.region, ordering.region, item.code, kind, mark, self.order_day
            )
            if agreement is None:
                return _border(issuer, ordering, mark, item), none
            how = Text(
                f"依{agreement.name_zh}互认协议跨省互认。",
                f"Recognised across the provincial border under the {agreement.name_en} agreement.",
            )
        elif not marks.covers(mark, ordering.region):
            return _no_mark(issuer, ordering, mark), none
        matrix = rules.matrix_for(ordering.region, self.order_day)
        if matrix is not None and not matrix.allows(ordering, issuer, kind):
            return _levels(issuer, ordering, matrix.name, matrix.source) + how, none
        return None, how


def _verdict(
    p: PriorItem,
    decision: Decision,
    reason: Text,
    valid_until: date | None = None,
    mark: str | None = None,
    *,
    near_miss: bool = False,
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
        p.value,
        p.unit,
        p.flags,
        near_miss,
        p.fhir_ref,
        p.images,
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


def _day(moment: datetime | date | None) -> str:
    if moment is None:
        return "?"
    return (local_date(moment) if isinstance(moment, datetime) else moment).isoformat()


def _sensitive(item: CatalogItem, category: SensitiveCategory) -> Text:
    """Says nothing of whether any hospital holds a result (issue "Patient rights")."""
    return Text(
        f"{item.name_zh}属敏感项目（{category.name_zh}），未经患者同意其结果不在医院间共享，"
        "需重新检查。",
        f"{item.name_en} is a sensitive item ({category.name_en}): its results are not shared "
        "between hospitals without the patient's consent; order it.",
    )


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


def _no_prior(item: CatalogItem, near: Sequence[Verdict] = ()) -> Text:
    text = Text(
        f"各医院均无该患者的{item.name_zh}既往结果。",
        f"No hospital has a prior {item.name_en} result for this patient.",
    )
    if near:
        v = near[0]
        text = text + Text(
            f"最接近的是 {v.hospital} 于 {_day(v.effective)} 的检查，但不相符：{v.reason.zh}",
            f"The nearest is {v.hospital}'s study of {_day(v.effective)}, which does not "
            f"match: {v.reason.en}",
        )
    return text


def _near_miss(item: CatalogItem, p: PriorItem, why: Text) -> Text:
    return Text(
        f"{p.hospital} 于 {_day(p.effective)} 的{p.modality}检查部位相同，但不是所开的"
        f"{item.name_zh}：{why.zh}",
        f"{p.hospital}'s {p.modality} study of {_day(p.effective)} is of the same body site "
        f"but not the ordered {item.name_en}: {why.en}",
    )


def _reports_withdrawn(name: Text, p: PriorItem) -> Text:
    return Text(
        f"{p.hospital} 于 {_day(p.effective)} 的{name.zh}检查，其报告已全部撤回或作废，不予互认。",
        f"Every report of {p.hospital}'s {name.en} study of {_day(p.effective)} was withdrawn "
        "or entered in error, so the study is not recognised.",
    )


# Why an item carries no usable content (set by ingest, see content_problem()).
_SPECIMEN_CONDITIONS = {
    "HEM": ("溶血", "haemolysed"),
    "CLOT": ("凝块", "clotted"),
    "CON": ("污染", "contaminated"),
    "AUT": ("自溶", "autolysed"),
    "SNR": ("未收到标本", "sample not received"),
}


def content_problem(code: str) -> Text:
    """Explain an ingest content code: no-value, data-absent:X, report-empty,
    specimen-rejected:X, specimen-condition:X."""
    kind, _, detail = code.partition(":")
    if kind == "data-absent":
        return Text(
            f"数据缺失（dataAbsentReason {detail}）", f"data absent (dataAbsentReason {detail})"
        )
    if kind == "report-empty":
        return Text("报告中没有任何带结果值的项目", "none of the report's observations has a value")
    if kind == "specimen-rejected":
        return Text(f"标本被拒收（{detail}）", f"the specimen was rejected ({detail})")
    if kind == "specimen-condition":
        zh, en = _SPECIMEN_CONDITIONS.get(detail.upper(), (detail, detail))
        return Text(f"标本{zh}（{detail}）", f"the specimen was {en} ({detail})")
    return Text("没有结果值", "no value")


def _no_value(name: Text, p: PriorItem) -> Text:
    why = content_problem(p.no_value or "no-value")
    return Text(
        f"{p.hospital} 于 {_day(p.effective)} 的{name.zh}结果没有可用内容：{why.zh}，不予互认。",
        f"{p.hospital}'s {name.en} result of {_day(p.effective)} carries no usable content: "
        f"{why.en}.",
    )


def _no_final_report(name: Text, p: PriorItem, reports: Sequence[PriorItem]) -> Text:
    shown = "、".join(sorted({r.status for r in reports})) or "无"
    return Text(
        f"本地区要求影像检查出具正式报告后方可互认；{p.hospital} 于 {_day(p.effective)} 的"
        f"{name.zh}检查尚无正式报告（报告状态：{shown}）。",
        f"This region recognises a study only with its final report; {p.hospital}'s "
        f"{name.en} study of {_day(p.effective)} has none yet (reports: "
        f"{', '.join(sorted({r.status for r in reports})) or 'none'}).",
    )


def _report_note(reports: Sequence[PriorItem], final: Sequence[PriorItem]) -> Text:
    if final:
        return Text("", "")
    if not reports:
        return Text(
            "该检查尚无报告；检查互认的是影像，本地区不要求正式报告。",
            "The study has no report yet; imaging is recognised by its images and this "
            "region does not require a final report.",
        )
    return Text(
        "该检查的报告尚非正式报告；检查互认的是影像。",
        "The study's report is not final yet; imaging is recognised by its images.",
    )


def _no_mark(issuer: HospitalProfile, ordering: HospitalProfile, mark: str | None) -> Text:
    return Text(
        f"{issuer.id} 的结果互认标识为「{mark or '无'}」，不覆盖开单医院 {ordering.id}"
        f"（行政区划 {ordering.region}），不在互认范围内。",
        f"{issuer.id}'s result carries the mark '{mark or 'none'}', which does not cover "
        f"{ordering.id} (region {ordering.region}): out of the recognition scope.",
    )


def _border(
    issuer: HospitalProfile, ordering: HospitalProfile, mark: str, item: CatalogItem
) -> Text:
    return Text(
        f"{issuer.id}（行政区划 {issuer.region}）与开单医院 {ordering.id}（{ordering.region}）"
        f"不在同一省份；结果标识「{mark}」不是全国标识，也没有覆盖{item.name_zh}的"
        "区域互认协议，不能跨省互认。",
        f"{issuer.id} (region {issuer.region}) and {ordering.id} ({ordering.region}) are in "
        f"different provinces; the mark '{mark}' is not national and no regional agreement "
        f"covers {item.name_en}, so the result does not cross the border.",
    )


def _levels(
    issuer: HospitalProfile, ordering: HospitalProfile, matrix: str, source: str | None
) -> Text:
    basis_zh = f"（{matrix}，依据 {source}）" if source else f"（{matrix}）" if matrix else ""
    basis_en = f" ({matrix}; {source})" if source else f" ({matrix})" if matrix else ""
    return Text(
        f"按互认级别规则{basis_zh}，{ordering.label}医院 {ordering.id} "
        f"不要求互认{issuer.label}医院 {issuer.id} 的结果。",
        f"Under the level and grade rules{basis_en} a level-{ordering.level}"
        f"{ordering.grade or ''} hospital ({ordering.id}) is not required to accept results "
        f"of a level-{issuer.level}{issuer.grade or ''} hospital ({issuer.id}).",
    )


def _value_zh(v: Verdict) -> str:
    shown = " ".join(x for x in (v.value, v.unit) if x) or "无结果值"
    flags = f"，标记 {'/'.join(v.flags)}" if v.flags else ""
    return f"{shown}{flags}"


def _value_en(v: Verdict) -> str:
    shown = " ".join(x for x in (v.value, v.unit) if x) or "no value"
    flags = f", flagged {'/'.join(v.flags)}" if v.flags else ""
    return f"{shown}{flags}"


# FHIR R4 result statuses (DiagnosticReport, Observation, ImagingStudy) in the words of a
# Chinese report; the wording is an unverified default (no official translation is cited).
_STATUS_ZH = {
    "registered": "已登记",
    "partial": "部分结果",
    "preliminary": "初步结果",
    "final": "最终报告",
    "amended": "已修改",
    "corrected": "已更正",
    "appended": "已补充",
    "available": "影像可用",
    "cancelled": "已取消",
    "entered-in-error": "录入错误",
    "unknown": "状态不明",
}
# The certifying bodies (broker.domain.registry.CertifyingBody), as their names read.
_BODY_ZH = {
    "national-eqa": "国家卫生健康委临床检验中心室间质评",
    "provincial-eqa": "省临床检验中心室间质评",
    "provincial-imaging-qc": "省医学影像质控中心",
    "city-eqa": "市临床检验质控中心",
    "city-imaging-qc": "市医学影像质控中心",
}


# The decisions in words, for people (pages, reports, explanations); the codes stay the API's.
DECISION_WORDS: Mapping[Decision, Text] = {
    Decision.RECOGNIZABLE: Text("可互认", "recognisable"),
    Decision.NO_PRIOR_RESULT: Text("无可用既往结果", "no usable prior result"),
    Decision.NOT_IN_CATALOG: Text("不在互认目录", "not in the catalog"),
    Decision.EXPIRED: Text("已超过有效期", "past its validity"),
    Decision.NOT_QC_CERTIFIED: Text("出具机构未获质控认证", "issuer not QC-certified"),
    Decision.OUT_OF_SCOPE: Text("不在互认范围", "outside the recognition scope"),
    Decision.PRELIMINARY: Text("结果未终审", "not final"),
    Decision.WITHDRAWN: Text("结果已撤回", "withdrawn"),
    Decision.NO_VALUE: Text("结果无有效内容", "no usable value"),
    Decision.EXCLUDED: Text("不适用互认", "excluded from recognition"),
}


def status_zh(status: str) -> str:
    """A result status in Chinese; a status FHIR does not define stays as sent."""
    return _STATUS_ZH.get(status, status)


def body_zh(body: str) -> str:
    return _BODY_ZH.get(body, body)


def _newer_text(v: Verdict, best: Verdict) -> Text:
    return Text(
        f"注意：{v.hospital} 于 {_day(v.effective)} 有更新的结果（{status_zh(v.status)}，"
        f"{_value_zh(v)}；"
        f"互认判定：{DECISION_WORDS[v.decision].zh}），晚于候选结果 {_day(best.effective)}，"
        "请接诊医生判断。",
        f"Note: {v.hospital} has a newer result of {_day(v.effective)} ({v.status}, "
        f"{_value_en(v)}; {DECISION_WORDS[v.decision].en}) than the candidate of "
        f"{_day(best.effective)}; the receiving doctor decides.",
    )


def _flag_text(v: Verdict, *, critical: bool) -> Text:
    if critical:
        return Text(
            f"候选结果为危急值（{_value_zh(v)}），请接诊医生判断是否仍可互认。",
            f"The candidate is a critical value ({_value_en(v)}); the receiving doctor decides "
            "whether it can still be recognised.",
        )
    return Text(
        f"候选结果异常（{_value_zh(v)}）。",
        f"The candidate is abnormal ({_value_en(v)}).",
    )


def _missing_component(panel: CatalogItem, component: CatalogItem) -> Text:
    return Text(
        f"{panel.name_zh}须全部组分均可互认，该报告缺少「{component.name_zh}」。",
        f"A panel is recognised only with all its components; this report lacks "
        f"{component.name_en}.",
    )


def _report_only(name: Text, p: PriorItem) -> Text:
    return Text(
        f"{p.hospital} 于 {_day(p.effective)} 仅有{name.zh}的报告，没有影像；检查互认的是影像，"
        "不是他人的诊断结论。",
        f"{p.hospital} has only a report for {name.en} dated {_day(p.effective)}, without the "
        "images; imaging is recognised by its images, never by another doctor's conclusion.",
    )


def _withdrawn(name: Text, p: PriorItem) -> Text:
    return Text(
        f"{p.hospital} 于 {_day(p.effective)} 的{name.zh}结果已撤回"
        f"（状态：{status_zh(p.status)}）。",
        f"{p.hospital}'s {name.en} result of {_day(p.effective)} was withdrawn "
        f"(status {p.status}).",
    )


def _preliminary(name: Text, p: PriorItem) -> Text:
    return Text(
        f"{p.hospital} 于 {_day(p.effective)} 的{name.zh}结果尚非最终报告"
        f"（状态：{status_zh(p.status)}），"
        "初步结果不予互认。",
        f"{p.hospital}'s {name.en} result of {_day(p.effective)} is not final (status "
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
        f"{p.hospital} 于 {_day(when)} 的{label.zh}结果互认有效期至 {until.isoformat()}，"
        f"开单日 {order_day.isoformat()} 已超期（相隔 {days} 天）。",
        f"{p.hospital}'s {label.en} result of {_day(when)} was valid until {until.isoformat()}; "
        f"the order on {order_day.isoformat()} is {days} days after it: expired.",
    )


def _recognisable(
    name: Text,
    p: PriorItem,
    issuer: HospitalProfile,
    body: str,
    mark: str | None,
    until: date,
    window: int,
) -> Text:
    shown = mark or "—"
    return Text(
        f"{issuer.id}（{issuer.label}）于 {_day(p.effective)} 的{name.zh}结果"
        f"（{status_zh(p.status)}，"
        f"标识 {shown}，{body_zh(body)}认证）在 {window} 天互认时限内（有效至 "
        f"{until.isoformat()}），可予互认。",
        f"{issuer.id} ({issuer.label}) {name.en} result of {_day(p.effective)} ({p.status}, "
        f"mark {shown}, {body} certified) is within its {window}-day validity "
        f"(until {until.isoformat()}) and may be recognised.",
    )
