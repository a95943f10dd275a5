"""Recognition rules v2 at their edges: content, warnings, imaging identity, certification,
scope as data, patient context (pure: no database, no clock)."""

from __future__ import annotations

from dataclasses import replace
from datetime import date, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from broker.domain.catalog import AgeBand, Catalog, CatalogItem
from broker.domain.marks import MarkTable
from broker.domain.recognition import (
    SHANGHAI,
    Decision,
    ItemDecision,
    Order,
    PatientContext,
    Policy,
    PriorItem,
    content_problem,
    decide,
)
from broker.domain.registry import Certification, CertifyingBody, HospitalProfile
from broker.domain.scope import (
    AcceptRule,
    Agreement,
    HospitalClass,
    LevelRules,
    ScopeRules,
    simple_matrix,
)
from broker.domain.sites import Protocol, Side, Site, SiteTable
from broker.reference.loader import default_schemas_dir, load_catalog, load_policy
from tests.unit.test_recognition_rules import (
    CATALOG,
    HB,
    HOSPITALS,
    KNEE,
    LEFT,
    LOINC,
    ORDER_TIME,
    POLICY,
    RIGHT,
    THORAX,
    at,
    certs,
    obs,
    study,
)

BOTH = "51440002"
HEAD, BRAIN = "69536005", "12738006"
DAY = date(2026, 5, 19)
SITES = SiteTable(
    {
        HEAD: Site(HEAD, "Head", ("头颅", "颅脑"), ("HEAD", "BRAIN"), (BRAIN,)),
        THORAX: Site(THORAX, "Thorax", ("胸部",), ("CHEST",), ("43799004",)),
        KNEE: Site(KNEE, "Knee", ("膝关节",), ("KNEE",), (), True),
    },
    {
        LEFT: Side(LEFT, "Left", "左侧", "L"),
        RIGHT: Side(RIGHT, "Right", "右侧", "R"),
        BOTH: Side(BOTH, "Right and left", "双侧", "B"),
    },
    {
        "plain": Protocol("plain", "平扫", "without contrast", ("平扫", "WO")),
        "enhanced": Protocol("enhanced", "增强", "with contrast", ("增强",)),
        "angiography": Protocol("angiography", "血管成像", "angiography", ("CTA",)),
    },
)


def img(code: str, modality: str, site: str, protocol: str = "plain", **kw: object) -> CatalogItem:
    base = CATALOG.items["IMG-CT-CHEST"]
    return replace(
        base, code=code, modality=modality, body_site=site, protocol=protocol, name_en=code, **kw
    )  # type: ignore[arg-type]


V2 = replace(
    CATALOG,
    items={
        **CATALOG.items,
        "IMG-CT-HEAD": img("IMG-CT-HEAD", "CT", HEAD),
        "IMG-CTA-HEAD": img("IMG-CTA-HEAD", "CT", HEAD, "angiography"),
    },
    sites=SITES,
)


def run(
    order: Order,
    prior: list[PriorItem],
    *,
    ordering: str = "H001",
    catalog: Catalog = V2,
    policy: Policy = POLICY,
    hospitals: dict[str, HospitalProfile] = HOSPITALS,
    patient: PatientContext | None = None,
    when: datetime = ORDER_TIME,
) -> ItemDecision:
    h = hospitals[ordering]
    return decide(
        order,
        order_time=when,
        ordering=h,
        hospitals=hospitals,
        catalog=catalog.for_region(h.region),
        policy=policy,
        prior=prior,
        patient=patient,
    )


def hb(
    result: str = "r",
    hospital: str = "H002",
    day: date = DAY,
    hour: int = 8,
    **kw: object,
) -> PriorItem:
    return replace(obs(result, hospital, "718-7", at(day, hour)), **kw)  # type: ignore[arg-type]


class TestNoValue:
    @pytest.mark.parametrize(
        ("problem", "zh", "en"),
        [
            ("data-absent:not-performed", "数据缺失", "dataAbsentReason not-performed"),
            ("no-value", "没有结果值", "no value"),
            ("specimen-rejected:RH", "拒收", "rejected (RH)"),
            ("specimen-condition:HEM", "溶血", "haemolysed"),
            ("specimen-condition:CLOT", "凝块", "clotted"),
            ("report-empty", "报告中没有", "none of the report's observations"),
        ],
    )
    def test_a_result_without_usable_content_is_no_value_and_says_why(
        self, problem: str, zh: str, en: str
    ) -> None:
        d = run(HB, [hb(no_value=problem)])
        assert d.decision is Decision.NO_VALUE
        assert zh in d.explanation.zh and en in d.explanation.en
        assert d.fee_saved is None

    def test_an_older_usable_result_is_still_recognised_and_the_empty_newer_one_warned(
        self,
    ) -> None:
        prior = [hb("old", day=DAY - timedelta(days=2)), hb("new", no_value="no-value")]
        d = run(HB, prior)
        assert d.decision is Decision.RECOGNIZABLE and d.candidate is not None
        assert d.candidate.result_id == "old"
        assert [w.result_id for w in d.warnings if w.kind == "newer-result"] == ["new"]

    def test_one_empty_component_makes_the_panel_no_value(self) -> None:
        rows = [
            obs("cbc", "H002", "58410-2", at(DAY)),
            obs("cbc", "H002", "718-7", at(DAY)),
            replace(obs("cbc", "H002", "777-3", at(DAY)), no_value="specimen-condition:CLOT"),
        ]
        d = run(Order(LOINC, "58410-2"), rows, ordering="H006")
        assert d.decision is Decision.NO_VALUE and "血小板" not in d.explanation.zh
        assert "clotted" in d.explanation.en

    def test_content_problem_texts_are_bilingual(self) -> None:
        for code in ("no-value", "data-absent:error", "specimen-condition:XYZ"):
            text = content_problem(code)
            assert text.zh and text.en


class TestWarnings:
    def test_newer_results_of_any_hospital_and_status_are_named(self) -> None:
        prior = [
            hb("cand", "H002", DAY - timedelta(days=3), value="130", unit="g/L"),
            hb("prelim", "H005", DAY - timedelta(days=1), status="preliminary", value="98"),
            hb("uncert", "H005", DAY, value="95", unit="g/L", flags=("L",)),
        ]
        d = run(HB, prior)
        assert d.decision is Decision.RECOGNIZABLE and d.candidate is not None
        assert d.candidate.result_id == "cand" and d.candidate.value == "130"
        newer = [w for w in d.warnings if w.kind == "newer-result"]
        assert [w.result_id for w in newer] == ["uncert", "prelim"]
        assert newer[0].value == "95" and newer[0].unit == "g/L" and newer[0].flags == ("L",)
        assert newer[1].status == "preliminary"
        assert "H005" in newer[0].message.zh and "95 g/L" in newer[0].message.en
        # the newer result's own decision in words, never its code, in both languages
        assert "结果未终审" in newer[1].message.zh and "not final" in newer[1].message.en
        for w in newer:
            assert not any(code in w.message.zh + w.message.en for code in Decision)

    def test_withdrawn_and_older_results_are_not_warned_about(self) -> None:
        prior = [
            hb("older", day=DAY - timedelta(days=4)),
            hb("cand", day=DAY - timedelta(days=2)),
            hb("gone", day=DAY, status="entered-in-error"),
        ]
        d = run(HB, prior)
        assert d.candidate is not None and d.candidate.result_id == "cand"
        assert d.warnings == ()

    @pytest.mark.parametrize(
        ("flags", "kind"),
        [(("HH",), "candidate-critical"), (("L",), "candidate-abnormal"), (("N",), None)],
    )
    def test_the_candidates_own_flags(self, flags: tuple[str, ...], kind: str | None) -> None:
        d = run(HB, [hb(value="45", unit="g/L", flags=flags)])
        assert d.decision is Decision.RECOGNIZABLE
        assert [w.kind for w in d.warnings] == ([kind] if kind else [])
        assert d.candidate is not None and d.candidate.flags == flags

    def test_a_newer_result_does_not_change_the_decision(self) -> None:
        prior = [hb("cand", day=DAY - timedelta(days=1)), hb("new", "H005", DAY)]
        assert run(HB, prior).decision is Decision.RECOGNIZABLE


class TestImagingIdentity:
    @pytest.mark.parametrize("site", [BRAIN, "颅脑", "头颅", "HEAD", "brain"])
    def test_body_sites_match_through_the_site_table(self, site: str) -> None:
        d = run(Order(modality="CT", body_site=HEAD), [study("s", "H002", "CT", site, at(DAY))])
        assert d.decision is Decision.RECOGNIZABLE

    def test_an_order_by_another_spelling_finds_the_item(self) -> None:
        prior = [study("s", "H002", "CT", HEAD, at(DAY))]
        d = run(Order(modality="CT", body_site="颅脑"), prior)
        assert d.item is not None and d.item.code == "IMG-CT-HEAD"
        assert d.decision is Decision.RECOGNIZABLE

    def test_equal_known_side_only(self) -> None:
        order = Order(modality="MR", body_site=KNEE, laterality=LEFT)
        assert run(order, [study("s", "H002", "MR", KNEE, at(DAY), laterality=LEFT)]).decision is (
            Decision.RECOGNIZABLE
        )
        for side in (RIGHT, BOTH, None):
            d = run(order, [study("s", "H002", "MR", KNEE, at(DAY), laterality=side)])
            assert d.decision is Decision.NO_PRIOR_RESULT and d.candidate is None
            assert len(d.others) == 1 and d.others[0].near_miss
            assert "H002" in d.explanation.zh and d.others[0].reason.en in d.explanation.en

    def test_unknown_side_is_explained(self) -> None:
        order = Order(modality="MR", body_site=KNEE, laterality=LEFT)
        d = run(order, [study("s", "H002", "MR", KNEE, at(DAY), laterality=None)])
        assert "laterality is unknown" in d.explanation.en

    def test_a_bilateral_order_matches_a_bilateral_study(self) -> None:
        order = Order(modality="MR", body_site=KNEE, laterality=BOTH)
        d = run(order, [study("s", "H002", "MR", KNEE, at(DAY), laterality=BOTH)])
        assert d.decision is Decision.RECOGNIZABLE

    @given(
        order_side=st.sampled_from([LEFT, RIGHT, BOTH, None]),
        study_side=st.sampled_from([LEFT, RIGHT, BOTH, None]),
    )
    @settings(max_examples=40, deadline=None)
    def test_sided_items_never_match_an_unknown_or_other_side(
        self, order_side: str | None, study_side: str | None
    ) -> None:
        order = Order(modality="MR", body_site=KNEE, laterality=order_side)
        d = run(order, [study("s", "H002", "MR", KNEE, at(DAY), laterality=study_side)])
        recognised = d.decision is Decision.RECOGNIZABLE
        assert recognised == (order_side is not None and order_side == study_side)

    def test_protocol_mismatch_is_a_near_miss_not_a_match(self) -> None:
        prior = [study("s", "H002", "CT", HEAD, at(DAY), contrast=True)]
        d = run(Order(modality="CT", body_site=HEAD), prior)
        assert d.decision is Decision.NO_PRIOR_RESULT and d.others[0].near_miss
        assert "增强" in d.explanation.zh and "平扫" in d.explanation.zh

    def test_angiography_is_its_own_protocol(self) -> None:
        cta = replace(study("s", "H002", "CT", HEAD, at(DAY)), protocol="CTA", contrast=True)
        assert run(Order(modality="CT", body_site=HEAD), [cta]).decision is (
            Decision.NO_PRIOR_RESULT
        )
        d = run(Order(modality="CT", body_site=HEAD, protocol="angiography"), [cta])
        assert d.decision is Decision.RECOGNIZABLE and d.item is not None
        assert d.item.code == "IMG-CTA-HEAD"

    def test_a_study_of_unknown_protocol_never_matches_on_a_guess(self) -> None:
        prior = [study("s", "H002", "CT", HEAD, at(DAY), contrast=None)]
        d = run(Order(modality="CT", body_site=HEAD), prior)
        assert d.decision is Decision.NO_PRIOR_RESULT
        assert "protocol is not stated" in d.explanation.en

    def test_the_near_miss_does_not_hide_an_exact_older_match(self) -> None:
        prior = [
            study("old", "H002", "CT", HEAD, at(DAY - timedelta(days=10))),
            study("new", "H002", "CT", HEAD, at(DAY), contrast=True),
        ]
        d = run(Order(modality="CT", body_site=HEAD), prior)
        assert d.decision is Decision.RECOGNIZABLE and d.candidate is not None
        assert d.candidate.result_id == "old" and d.warnings == ()
        assert [o.result_id for o in d.others] == ["new"]

    def _report(self, status: str, result: str = "s") -> PriorItem:
        return PriorItem(
            result, "H002", "imaging", "DiagnosticReport", "available", status, at(DAY),
            "report", (), "CT", HEAD,
        )  # fmt: skip

    def test_a_study_whose_reports_are_all_withdrawn_is_withdrawn(self) -> None:
        prior = [study("s", "H002", "CT", HEAD, at(DAY)), self._report("entered-in-error")]
        d = run(Order(modality="CT", body_site=HEAD), prior)
        assert d.decision is Decision.WITHDRAWN and "report" in d.explanation.en
        both = [*prior, self._report("final")]
        assert run(Order(modality="CT", body_site=HEAD), both).decision is Decision.RECOGNIZABLE

    def test_a_study_without_a_report_is_recognised_by_its_images(self) -> None:
        d = run(Order(modality="CT", body_site=HEAD), [study("s", "H002", "CT", HEAD, at(DAY))])
        assert d.decision is Decision.RECOGNIZABLE and "no report yet" in d.explanation.en

    def test_where_the_region_requires_a_final_report_it_is_preliminary(self) -> None:
        strict = replace(V2, requires_final_report=True, regions=())
        order = Order(modality="CT", body_site=HEAD)
        prior = [study("s", "H002", "CT", HEAD, at(DAY))]
        d = run(order, prior, catalog=strict)
        assert d.decision is Decision.PRELIMINARY and "final report" in d.explanation.en
        prelim = [*prior, self._report("preliminary")]
        assert run(order, prelim, catalog=strict).decision is Decision.PRELIMINARY
        final = [*prior, self._report("final")]
        assert run(order, final, catalog=strict).decision is Decision.RECOGNIZABLE


def _certs(hospital: str, *scopes: str, body: CertifyingBody) -> tuple[Certification, ...]:
    return certs(hospital, *scopes, body=body)


class TestCertification:
    def test_a_panel_is_certified_by_every_components_item_certificate(self) -> None:
        h = replace(
            HOSPITALS["H002"],
            certifications=_certs("H002", "LAB-HGB", "LAB-PLT", body=CertifyingBody.PROVINCIAL_EQA),
        )
        rows = [obs("cbc", "H002", "718-7", at(DAY)), obs("cbc", "H002", "777-3", at(DAY))]
        d = run(Order(LOINC, "58410-2"), rows, ordering="H006", hospitals={**HOSPITALS, "H002": h})
        assert d.decision is Decision.RECOGNIZABLE and "components" in d.explanation.en

    def test_a_panel_with_one_uncertified_component_is_not(self) -> None:
        h = replace(
            HOSPITALS["H002"],
            certifications=_certs("H002", "LAB-HGB", body=CertifyingBody.PROVINCIAL_EQA),
        )
        rows = [obs("cbc", "H002", "718-7", at(DAY)), obs("cbc", "H002", "777-3", at(DAY))]
        d = run(Order(LOINC, "58410-2"), rows, ordering="H006", hospitals={**HOSPITALS, "H002": h})
        assert d.decision is Decision.NOT_QC_CERTIFIED

    def test_a_certificate_that_lapsed_before_the_result_date(self) -> None:
        lapsed = (date(2025, 1, 1), DAY - timedelta(days=1))
        h = replace(HOSPITALS["H002"], certifications=certs("H002", "HEMATOLOGY", valid=lapsed))
        d = run(HB, [hb()], hospitals={**HOSPITALS, "H002": h})
        assert d.decision is Decision.NOT_QC_CERTIFIED
        on_the_day = (date(2025, 1, 1), DAY)
        h = replace(h, certifications=certs("H002", "HEMATOLOGY", valid=on_the_day))
        assert run(HB, [hb()], hospitals={**HOSPITALS, "H002": h}).decision is (
            Decision.RECOGNIZABLE
        )

    def test_city_body_gives_a_city_mark(self) -> None:
        h = replace(
            HOSPITALS["H006"],
            certifications=_certs("H006", "HEMATOLOGY", body=CertifyingBody.CITY_EQA),
        )
        hospitals = {**HOSPITALS, "H006": h}
        d = run(HB, [hb(hospital="H006")], ordering="H008", hospitals=hospitals)
        assert d.candidate is not None and d.candidate.mark == "泸州HR"
        chengdu = replace(HOSPITALS["H008"], id="H009", region="510104")
        d = run(
            HB, [hb(hospital="H006")], ordering="H009", hospitals={**hospitals, "H009": chengdu}
        )
        assert d.decision is Decision.OUT_OF_SCOPE

    def test_a_city_certificate_caps_a_provincial_mark(self) -> None:
        h = replace(
            HOSPITALS["H006"],
            certifications=_certs("H006", "HEMATOLOGY", body=CertifyingBody.CITY_EQA),
        )
        d = run(
            HB, [hb(hospital="H006", recognition_mark="川HR")], ordering="H008",
            hospitals={**HOSPITALS, "H006": h},
        )  # fmt: skip
        assert d.candidate is not None and d.candidate.mark == "泸州HR"
        assert "川HR" in d.explanation.zh


NANJING_2JIA = HospitalProfile(
    "N2A", "南京二甲", "320105", "2", "甲", certifications=certs("N2A", "HEMATOLOGY", "CT")
)
NANJING_3 = HospitalProfile(
    "N3", "南京三级", "320106", "3", None, certifications=certs("N3", "HEMATOLOGY", "CT")
)
NANJING_2YI = HospitalProfile(
    "N2B", "南京二乙", "320104", "2", "乙", certifications=certs("N2B", "HEMATOLOGY", "CT")
)
CQ = HospitalProfile(
    "CQ1", "重庆三甲", "500103", "3", "甲", certifications=certs("CQ1", "HEMATOLOGY", "CT")
)
JIANGSU = LevelRules(
    "32",
    (
        AcceptRule(HospitalClass(frozenset({"3", "2甲"})), HospitalClass(frozenset({"3", "2甲"}))),
        AcceptRule(
            HospitalClass(frozenset({"2乙", "2-", "1"})),
            HospitalClass(frozenset({"2乙", "2-", "1"})),
        ),
        AcceptRule(
            HospitalClass(frozenset({"2乙", "2-", "1"})),
            HospitalClass(frozenset({"3", "2甲"})),
            frozenset({"imaging"}),
        ),
    ),
    name="江苏",
    source="苏卫医政〔2022〕18号",
)
CHUAN_YU = Agreement(
    "chuan-yu", "川渝", "Sichuan–Chongqing", ("50", "51"), frozenset({"川渝HR", "川HR", "渝HR"}),
    items=frozenset({"LAB-HGB"}), effective_from=date(2022, 1, 1),
)  # fmt: skip
WIDER = replace(
    POLICY, marks=MarkTable({**POLICY.marks.areas, "渝": ("50",), "川渝": ("50", "51")})
)
SCOPED = replace(
    WIDER,
    scope=ScopeRules(
        (simple_matrix(POLICY.levels.accepts), JIANGSU),
        (CHUAN_YU,),
    ),
)
MORE = {**HOSPITALS, **{h.id: h for h in (NANJING_2JIA, NANJING_3, NANJING_2YI, CQ)}}


class TestScopeAsData:
    def test_jiangsu_grade_a_and_above_recognise_each_other(self) -> None:
        d = run(HB, [hb(hospital="N2A")], ordering="N3", policy=SCOPED, hospitals=MORE)
        assert d.decision is Decision.RECOGNIZABLE
        # the default matrix (level only) would refuse a 二级 result at a 三级 hospital
        d = run(HB, [hb(hospital="N2A")], ordering="N3", hospitals=MORE)
        assert d.decision is Decision.OUT_OF_SCOPE

    def test_jiangsu_grade_b_accepts_higher_imaging_but_not_their_lab(self) -> None:
        d = run(HB, [hb(hospital="N3")], ordering="N2B", policy=SCOPED, hospitals=MORE)
        assert d.decision is Decision.OUT_OF_SCOPE and "苏卫医政" in d.explanation.zh
        order = Order(modality="CT", body_site=THORAX)
        prior = [study("s", "N3", "CT", THORAX, at(DAY))]
        d = run(order, prior, ordering="N2B", policy=SCOPED, hospitals=MORE)
        assert d.decision is Decision.RECOGNIZABLE

    def test_a_provincial_mark_never_crosses_the_border_alone(self) -> None:
        prior = [hb(hospital="CQ1", recognition_mark="渝HR")]
        d = run(HB, prior, ordering="H002", policy=WIDER, hospitals=MORE)
        assert d.decision is Decision.OUT_OF_SCOPE and "agreement" in d.explanation.en

    def test_an_agreement_carries_its_marks_and_items_across(self) -> None:
        prior = [hb(hospital="CQ1", recognition_mark="川渝HR")]
        d = run(HB, prior, ordering="H002", policy=SCOPED, hospitals=MORE)
        assert d.decision is Decision.RECOGNIZABLE and "川渝" in d.explanation.zh
        plt = [replace(obs("p", "CQ1", "777-3", at(DAY)), recognition_mark="川渝HR")]
        d = run(Order(LOINC, "777-3"), plt, ordering="H002", policy=SCOPED, hospitals=MORE)
        assert d.decision is Decision.OUT_OF_SCOPE  # not in the agreement's item subset

    def test_an_agreement_not_yet_in_force(self) -> None:
        prior = [hb(hospital="CQ1", recognition_mark="川渝HR")]
        early = datetime(2021, 6, 1, 9, tzinfo=SHANGHAI)
        old = [replace(p, effective=at(date(2021, 5, 30))) for p in prior]
        cq = replace(
            CQ,
            certifications=certs("CQ1", "HEMATOLOGY", valid=(date(2021, 1, 1), date(2021, 12, 31))),
        )
        d = run(HB, old, ordering="H002", policy=SCOPED, hospitals={**MORE, "CQ1": cq}, when=early)
        assert d.decision is Decision.OUT_OF_SCOPE

    def test_a_national_mark_crosses_any_border(self) -> None:
        prior = [hb(hospital="H001", recognition_mark="全国HR")]
        assert run(HB, prior, ordering="CQ1", hospitals=MORE).decision is Decision.RECOGNIZABLE


class TestPatientContext:
    NEONATE = (
        AgeBand("新生儿指标变化快，仅认当日结果。", "Neonatal values change fast: same day only.",
                max_days=28, validity_days=0),
        AgeBand("儿童不适用。", "Not for children.", min_days=28, max_days=365 * 14, exclude=True),
    )  # fmt: skip

    def catalog(self, **kw: object) -> Catalog:
        item = replace(V2.items["LAB-HGB"], **kw)  # type: ignore[arg-type]
        return replace(V2, items={**V2.items, "LAB-HGB": item})

    def test_neonates_recognise_only_same_day_results(self) -> None:
        c = self.catalog(age_bands=self.NEONATE)
        born = ORDER_TIME.date() - timedelta(days=5)
        same_day = hb(day=ORDER_TIME.date(), hour=7)
        d = run(HB, [same_day], catalog=c, patient=PatientContext(born))
        assert d.decision is Decision.RECOGNIZABLE
        d = run(
            HB,
            [hb(day=ORDER_TIME.date() - timedelta(days=1))],
            catalog=c,
            patient=PatientContext(born),
        )
        assert d.decision is Decision.EXPIRED and "same day" in d.explanation.en

    def test_an_excluded_age_band(self) -> None:
        c = self.catalog(age_bands=self.NEONATE)
        child = PatientContext(ORDER_TIME.date() - timedelta(days=365 * 5))
        d = run(HB, [hb()], catalog=c, patient=child)
        assert d.decision is Decision.EXCLUDED and "children" in d.explanation.en

    def test_adults_keep_the_items_window(self) -> None:
        c = self.catalog(age_bands=self.NEONATE)
        adult = PatientContext(date(1980, 1, 1))
        assert run(HB, [hb()], catalog=c, patient=adult).decision is Decision.RECOGNIZABLE

    @pytest.mark.parametrize("patient", [None, PatientContext(), PatientContext(date(2030, 1, 1))])
    def test_unknown_age_never_makes_an_age_banded_item_recognisable(
        self, patient: PatientContext | None
    ) -> None:
        c = self.catalog(age_bands=self.NEONATE)
        d = run(HB, [hb()], catalog=c, patient=patient)
        assert d.decision is Decision.EXCLUDED and "age" in d.explanation.en

    def test_pregnancy_sensitive_items(self) -> None:
        c = self.catalog(pregnancy_sensitive=True)
        assert run(HB, [hb()], catalog=c, patient=PatientContext(pregnant=True)).decision is (
            Decision.EXCLUDED
        )
        assert run(HB, [hb()], catalog=c, patient=PatientContext(pregnant=False)).decision is (
            Decision.RECOGNIZABLE
        )

    def test_a_panel_inherits_its_components_age_bands(self) -> None:
        c = self.catalog(age_bands=self.NEONATE)
        rows = [obs("cbc", "H002", "718-7", at(DAY)), obs("cbc", "H002", "777-3", at(DAY))]
        d = run(Order(LOINC, "58410-2"), rows, catalog=c, ordering="H006")
        assert d.decision is Decision.EXCLUDED


class TestShippedData:
    """The shipped policy and catalog through the same rules (what production loads)."""

    def test_policy_and_catalog_load_with_versions(self) -> None:
        schemas = default_schemas_dir()
        policy = load_policy(schemas)
        catalog = load_catalog(schemas)
        assert policy.version != "unversioned" and policy.rules.agreements
        assert catalog.for_region("510502").version_label.startswith(catalog.version)
        assert catalog.sites.canonical("颅脑") == catalog.sites.canonical("HEAD")

    def test_every_shipped_matrix_and_agreement_cites_a_source(self) -> None:
        rules = load_policy(default_schemas_dir()).rules
        assert all(m.source for m in rules.matrices if m.region)
        assert all(a.source for a in rules.agreements)


class TestProtocolFromNames:
    @pytest.mark.parametrize(
        ("summary", "decision"),
        [
            ("头颅CT平扫", Decision.RECOGNIZABLE),
            ("头颅CT增强", Decision.NO_PRIOR_RESULT),
            ("头颅CT平扫+增强", Decision.NO_PRIOR_RESULT),  # names two: no guess
            ("CT HEAD W", Decision.NO_PRIOR_RESULT),  # ASCII abbreviations are too loose
        ],
    )
    def test_a_chinese_procedure_name_states_the_protocol(
        self, summary: str, decision: Decision
    ) -> None:
        s = replace(study("s", "H002", "CT", HEAD, at(DAY), contrast=None), summary=summary)
        assert run(Order(modality="CT", body_site=HEAD), [s]).decision is decision


class TestWarningProperties:
    @given(
        st.lists(
            st.tuples(
                st.integers(min_value=0, max_value=6),  # days before the order
                st.sampled_from(["H001", "H002", "H005"]),  # H005 holds no certificate
                st.sampled_from(["final", "preliminary", "entered-in-error"]),
            ),
            min_size=1,
            max_size=6,
        )
    )
    @settings(max_examples=60, deadline=None)
    def test_warnings_name_exactly_the_newer_unwithdrawn_results(
        self, rows: list[tuple[int, str, str]]
    ) -> None:
        prior = [
            hb(f"r{i}", h, ORDER_TIME.date() - timedelta(days=days), 7, status=status)
            for i, (days, h, status) in enumerate(rows)
        ]
        d = run(HB, prior, ordering="H001")
        if d.decision is not Decision.RECOGNIZABLE:
            assert d.warnings == ()
            return
        assert d.candidate is not None and d.candidate.effective is not None
        expected = {
            p.result_id
            for p in prior
            if p.effective is not None
            and p.effective > d.candidate.effective
            and p.status != "entered-in-error"
        }
        assert {w.result_id for w in d.warnings if w.kind == "newer-result"} == expected


class TestShippedPatientContext:
    def test_neonatal_bilirubin_and_pregnancy_sensitive_thyroid_items_ship(self) -> None:
        catalog = load_catalog(default_schemas_dir())
        tbil = catalog.items["LAB-TBIL"]
        band = tbil.age_band(3)
        assert band is not None and band.validity_days == 0 and tbil.age_band(40) is None
        assert catalog.items["LAB-TSH"].pregnancy_sensitive
        assert catalog.items["LAB-FT4"].pregnancy_sensitive


class TestProtocolConflicts:
    def _study(self, summary: str, contrast: bool | None) -> PriorItem:
        return replace(study("s", "H002", "CT", HEAD, at(DAY), contrast=contrast), summary=summary)

    def test_a_named_angiography_wins_over_the_contrast_flag(self) -> None:
        cta = self._study("头颅CTA", True)
        assert run(
            Order(modality="CT", body_site=HEAD, protocol="angiography"), [cta]
        ).decision is (Decision.RECOGNIZABLE)
        assert run(Order(modality="CT", body_site=HEAD, contrast=True), [cta]).decision is not (
            Decision.RECOGNIZABLE
        )

    def test_a_name_the_contrast_flag_contradicts_is_unknown(self) -> None:
        d = run(Order(modality="CT", body_site=HEAD), [self._study("头颅CT平扫", True)])
        assert d.decision is Decision.NO_PRIOR_RESULT and "not stated" in d.explanation.en

    @pytest.mark.parametrize(
        ("text", "protocol"),
        [
            ("MR动态增强", "enhanced"),
            ("胸部CT常规平扫", "plain"),
            ("CT HEAD WITHOUT CONTRAST", None),
            ("头颅CTA", "angiography"),
            ("CTAB", None),
        ],
    )
    def test_protocol_names_in_text(self, text: str, protocol: str | None) -> None:
        shipped = load_catalog(default_schemas_dir()).sites
        assert shipped.protocol_in_text(text) == protocol


class TestCertificateReach:
    def test_the_widest_certificate_gives_the_mark(self) -> None:
        both = (
            *_certs("H006", "HEMATOLOGY", body=CertifyingBody.CITY_EQA),
            *_certs("H006", "HEMATOLOGY", body=CertifyingBody.PROVINCIAL_EQA),
        )
        h = replace(HOSPITALS["H006"], certifications=both)
        d = run(HB, [hb(hospital="H006")], ordering="H008", hospitals={**HOSPITALS, "H006": h})
        assert d.candidate is not None and d.candidate.mark == "川HR"


class TestAgreementData:
    def test_an_empty_item_list_admits_nothing(self, tmp_path: Path) -> None:
        import shutil

        import yaml

        schemas = tmp_path / "schemas"
        shutil.copytree(default_schemas_dir(), schemas)
        path = schemas / "policy" / "recognition-policy.yaml"
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
        doc["agreements"][0]["items"] = []
        path.write_text(yaml.safe_dump(doc, allow_unicode=True), encoding="utf-8")
        (agreement, *_) = load_policy(schemas).rules.agreements
        assert agreement.items == frozenset()
        assert not agreement.covers("500103", "510502", "LAB-HGB", "lab", "川渝HR", DAY)


class TestCancelledObservations:
    def test_a_newer_observation_the_lab_could_not_produce_is_not_warned_about(self) -> None:
        prior = [
            hb("cand", day=DAY - timedelta(days=2)),
            hb("x", "H005", DAY, status="cancelled", no_value="data-absent:not-performed"),
        ]
        d = run(HB, prior)
        assert d.decision is Decision.RECOGNIZABLE and d.warnings == ()
        (other,) = d.others
        assert other.decision is Decision.NO_VALUE
